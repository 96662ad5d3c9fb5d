"""Batched timing reports (master/reports.py): nothing measured is lost, the coordinator hears
from the master a few times a second instead of every round, and a plan sees every round."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from edgecode.master.ports import Topology
from edgecode.master.reports import BatchedReports
from edgecode.planning.spec import Plan
from edgecode.records import Timing


class Inline:
    """An executor that runs a task at once (the batching logic without threads)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args))
        return future


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Coordinator:
    def __init__(self, block: threading.Event | None = None, fail: int = 0) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.block = block
        self.fail = fail

    def topology(self) -> Topology:
        return Topology((), ())

    def plan(
        self,
        partitions: int,
        exclude: Sequence[str] = (),
        max_partitions: int = 0,
        current: Plan | None = None,
    ) -> tuple[Plan, float]:
        self.calls.append(("plan", partitions))
        return Plan(scheme="hgc", s_edge=0, partitions=partitions, edges=()), 0.5

    def report(self, timings: Sequence[Timing], round_seconds: float, predicted: float) -> None:
        if self.block is not None:
            self.block.wait(5)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("coordinator away")
        self.calls.append(("report", (tuple(t.node for t in timings), round_seconds, predicted)))


def timings(round_: int) -> tuple[Timing, ...]:
    return tuple(Timing(f"r{round_}w{w}", 0.01, True, 0.01, 0.5, "e0") for w in range(2))


def sent(coordinator: Coordinator) -> list[str]:
    return [n for kind, what in coordinator.calls if kind == "report" for n in what[0]]


def test_rounds_within_the_interval_go_in_one_batch_and_nothing_is_lost() -> None:
    clock, coordinator = Clock(), Coordinator()
    reports = BatchedReports(coordinator, Inline(), clock, interval=0.25)  # type: ignore[arg-type]
    for r in range(10):
        reports.report(timings(r), 0.03 + r, 0.02)
        clock.now += 0.1
    batches = [what for kind, what in coordinator.calls if kind == "report"]
    # Round 0 goes at once; then one batch every 0.25 s of rounds 0.1 s apart (3 rounds each).
    assert [len(nodes) // 2 for nodes, _, _ in batches] == [1, 3, 3, 3]
    assert batches[-1][1:] == (0.03 + 9, 0.02)  # the newest round's time and prediction
    reports.report(timings(10), 0.5, 0.02)  # 0.1 s after the last batch: kept
    assert len([c for c in coordinator.calls if c[0] == "report"]) == 4
    reports.flush()
    assert sent(coordinator) == [n for r in range(11) for n in (f"r{r}w0", f"r{r}w1")]
    reports.flush()  # nothing kept: no empty report
    assert len([c for c in coordinator.calls if c[0] == "report"]) == 5


def test_a_plan_first_sends_every_round_kept() -> None:
    clock, coordinator = Clock(), Coordinator()
    reports = BatchedReports(coordinator, Inline(), clock, interval=10.0)  # type: ignore[arg-type]
    for r in range(3):
        reports.report(timings(r), 0.03, 0.0)
    assert sent(coordinator) == ["r0w0", "r0w1"]
    plan, predicted = reports.plan(16)
    assert (plan.partitions, predicted) == (16, 0.5)
    assert [kind for kind, _ in coordinator.calls] == ["report", "report", "plan"]
    assert sent(coordinator) == [n for r in range(3) for n in (f"r{r}w0", f"r{r}w1")]


def test_a_report_in_flight_delays_the_next_batch_without_losing_it() -> None:
    block = threading.Event()
    clock, coordinator = Clock(), Coordinator(block=block)
    with ThreadPoolExecutor(2) as pool:
        reports = BatchedReports(coordinator, pool, clock, interval=0.0)
        reports.report(timings(0), 0.03, 0.0)  # in flight until released
        for r in range(1, 5):  # rounds go on: nothing waits for the coordinator
            reports.report(timings(r), 0.03, 0.0)
        assert coordinator.calls == []
        block.set()
        reports.flush()
    assert sent(coordinator) == [n for r in range(5) for n in (f"r{r}w0", f"r{r}w1")]


def test_a_failed_report_stops_nothing_and_the_kept_timings_are_bounded() -> None:
    clock, coordinator = Clock(), Coordinator(fail=1)
    reports = BatchedReports(coordinator, Inline(), clock, interval=1.0, limit=4)  # type: ignore[arg-type]
    reports.report(timings(0), 0.03, 0.0)  # fails: dropped, logged
    for r in range(1, 4):
        reports.report(timings(r), 0.03, 0.0)
    reports.flush()
    assert sent(coordinator) == ["r2w0", "r2w1", "r3w0", "r3w1"]  # the newest 4 timings
