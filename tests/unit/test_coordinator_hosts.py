"""The coordinator learns which workers share a machine and what their compute costs in CPU:
registration carries the machine, heartbeats the worker's CPU seconds; the planner's spec and
plan follow, and bad values are refused with nothing changed."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from edgecode.coordinator.logic import MAX_CPU_SECONDS, MAX_STRETCH, CoordinatorLogic
from edgecode.coordinator.service import CoordinatorServicer
from edgecode.errors import InvalidInput
from edgecode.planning.hosts import host_arrays, planned_seconds
from edgecode.v1 import coordinator_pb2

NATIVE = ("worker-0", "worker-1", "worker-3", "worker-4")
EMULATED = ("worker-2", "worker-5")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def coordinator(machine: str = "box") -> CoordinatorLogic:
    """The compose arm64 cluster registered on one 2-core machine, with timings reported for
    50 rounds of a plan where every worker held half the data: native workers compute in
    ~5 ms (plus ~40 ms of RPC), emulated ones in ~0.5 s, both with exponential jitter."""
    logic = CoordinatorLogic(clock=Clock())
    for edge in ("edge-0", "edge-1"):
        logic.register(edge, "edge", f"{edge}:1", link_seconds=0.005)
    for name in NATIVE + EMULATED:
        edge = "edge-0" if name in ("worker-0", "worker-1", "worker-2") else "edge-1"
        logic.register(name, "worker", f"{name}:1", edge, 0.0, host=machine, host_cpus=2.0)
    rng = np.random.default_rng(1)
    for _ in range(50):
        logic.report(
            [(w, 0.005 * (1 + rng.exponential()), 0.5, 0.05) for w in NATIVE]
            + [(w, 0.5 * (1 + rng.exponential()), 0.5, 1.1) for w in EMULATED],
            round_seconds=0.05,
            predicted=0.0,
        )
    return logic


def partitions(plan) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {w.name: w.partitions for e in plan.edges for w in e.workers}


def test_the_spec_carries_machine_cores_and_cpu_seconds() -> None:
    logic = coordinator()
    assert logic.heartbeat("worker-2", cpu_seconds=0.8)
    assert logic.heartbeat("worker-0", cpu_seconds=0.008)
    spec, fitted = logic.cluster_spec()
    assert fitted
    workers = {w.name: w for e in spec.edges for w in e.workers}
    assert {w.host for w in workers.values()} == {"box"}
    assert {w.host_cpus for w in workers.values()} == {2.0}
    assert workers["worker-2"].cpu_seconds == 0.8 and workers["worker-0"].cpu_seconds == 0.008
    assert workers["worker-1"].cpu_seconds == 0.0  # no heartbeat with a measurement yet


def test_cpu_seconds_from_heartbeats_make_the_plan_spare_the_emulated_workers() -> None:
    logic = coordinator()
    before, _, _ = logic.plan()
    # without CPU measurements the independent-worker model loads every worker alike (the
    # replicated work then swamps the shared cores: issue 18)
    assert len(set(partitions(before).values())) == 1, partitions(before)
    for name in NATIVE:
        logic.heartbeat(name, cpu_seconds=0.008)
    for name in EMULATED:
        logic.heartbeat(name, cpu_seconds=0.8)
    after, _, _ = logic.plan()
    held = partitions(after)
    assert max(held[w] for w in EMULATED) < min(held[w] for w in NATIVE), held
    # the measurements changed the plan (it is not the cached one)
    assert after is not before
    # the same workers on separate machines: no shared cores, no floor
    apart = coordinator(machine="")
    for name in NATIVE + EMULATED:
        apart.heartbeat(name, cpu_seconds=0.8 if name in EMULATED else 0.008)
    spec, _ = apart.cluster_spec()
    assert all(w.host == "" for e in spec.edges for w in e.workers)


def test_small_cpu_changes_keep_the_cached_plan() -> None:
    logic = coordinator()
    logic.heartbeat("worker-0", cpu_seconds=0.01)
    first, _, _ = logic.plan()
    logic.heartbeat("worker-0", cpu_seconds=0.011)  # +10 %: not a change
    logic.heartbeat("worker-0", cpu_seconds=0.0)  # "not measured": keeps the last value
    assert logic.plan()[0] is first
    logic.heartbeat("worker-0", cpu_seconds=0.02)  # +100 %
    assert logic.plan()[0] is not first
    spec, _ = logic.cluster_spec()
    assert {w.name: w.cpu_seconds for e in spec.edges for w in e.workers}["worker-0"] == 0.02


@pytest.mark.parametrize(
    ("host", "cpus", "match"),
    [
        ("box", math.nan, "host_cpus"),
        ("box", -2.0, "host_cpus"),
        ("box", 1e9, "host_cpus"),
        ("x" * 300, 2.0, "host"),
    ],
)
def test_a_bad_machine_is_refused_at_registration(host: str, cpus: float, match: str) -> None:
    logic = coordinator()
    with pytest.raises(InvalidInput, match=match):
        logic.register("worker-9", "worker", "w9:1", "edge-0", host=host, host_cpus=cpus)
    assert "worker-9" not in {m.name for m in logic.members(include_dead=True)[0]}


def test_a_worker_moved_to_another_machine_is_measured_afresh() -> None:
    logic = coordinator()
    logic.heartbeat("worker-2", cpu_seconds=0.8)
    logic.register("worker-2", "worker", "w2:1", "edge-0", host="box", host_cpus=2.0)
    assert (
        logic.members()[0][[m.name for m in logic.members()[0]].index("worker-2")].cpu_seconds
        == 0.8
    )
    logic.register("worker-2", "worker", "w2:1", "edge-0", host="pi-7", host_cpus=4.0)
    moved = {m.name: m for m in logic.members()[0]}["worker-2"]
    assert (moved.host, moved.host_cpus, moved.cpu_seconds) == ("pi-7", 4.0, 0.0)


def test_the_machine_id_is_configured_or_the_boot_id_digest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from edgecode.runtime import membership

    assert membership.machine_id("pi-7") == "pi-7"
    boot = tmp_path / "boot_id"
    boot.write_text("0f00-ba11\n")
    monkeypatch.setattr(membership, "BOOT_ID", boot)
    first = membership.machine_id()
    assert first.startswith("machine-") and first == membership.machine_id()
    boot.write_text("another-kernel\n")
    assert membership.machine_id() != first  # another machine (or a reboot)
    monkeypatch.setattr(membership, "BOOT_ID", tmp_path / "missing")
    assert membership.machine_id().startswith("machine-")  # from the host name
    assert membership.machine_cpus(3.5) == 3.5 and membership.machine_cpus() >= 1


def stretches(logic: CoordinatorLogic) -> dict[str, float]:
    spec, _ = logic.cluster_spec()
    return {w.name: w.compute_stretch for e in spec.edges for w in e.workers}


def test_heartbeats_carry_the_compute_stretch_into_the_spec_and_the_plan() -> None:
    logic = coordinator()
    for name in NATIVE:
        logic.heartbeat(name, cpu_seconds=0.01, compute_stretch=3.0)
    for name in EMULATED:
        logic.heartbeat(name, cpu_seconds=0.8, compute_stretch=3.0)
    assert stretches(logic) == dict.fromkeys(NATIVE + EMULATED, 3.0)
    quiet, _, _ = logic.plan()
    logic.heartbeat("worker-0", compute_stretch=3.3)  # +10 %: not a change
    logic.heartbeat("worker-0", compute_stretch=0.0)  # "not measured": keeps the last value
    assert logic.plan()[0] is quiet and stretches(logic)["worker-0"] == 3.0
    for name in NATIVE + EMULATED:  # all six saw 12x on 2 cores: 18 other runnable threads
        logic.heartbeat(name, compute_stretch=12.0)
    busy, _, _ = logic.plan()
    assert busy is not quiet
    spec, _ = logic.cluster_spec()
    arrays = host_arrays(spec)
    assert arrays is not None and arrays.load.tolist() == [18.0]
    # the plan is timed with the stretched floor
    plain = dataclasses.replace(
        spec,
        edges=tuple(
            dataclasses.replace(
                e, workers=tuple(dataclasses.replace(w, compute_stretch=0.0) for w in e.workers)
            )
            for e in spec.edges
        ),
    )
    stretched, unstretched = planned_seconds(spec, busy, 0.0), planned_seconds(plain, busy, 0.0)
    cpu = {w.name: w.cpu_seconds for e in spec.edges for w in e.workers}
    works = [cpu[name] * held / busy.partitions for name, held in partitions(busy).items()]
    assert unstretched == pytest.approx(sum(works) / 2.0, rel=1e-12)  # the plain W / C
    # processor sharing: the 18 others take their share while the host's last worker runs
    assert stretched == pytest.approx((sum(works) + 18 * max(works)) / 2.0, rel=1e-12)
    assert busy.expected_round_seconds is not None
    assert busy.expected_round_seconds >= stretched * (1 - 1e-12)
    # a worker re-registering on the same machine keeps it; on another one it is measured afresh
    logic.register("worker-2", "worker", "w2:1", "edge-0", host="box", host_cpus=2.0)
    assert stretches(logic)["worker-2"] == 12.0
    logic.register("worker-2", "worker", "w2:1", "edge-0", host="pi-7", host_cpus=4.0)
    assert stretches(logic)["worker-2"] == 0.0


@pytest.mark.parametrize(
    ("key", "largest"),
    [
        ("cpu_seconds", MAX_CPU_SECONDS),
        ("compute_stretch", MAX_STRETCH),
        ("round_cpu_seconds", MAX_CPU_SECONDS),
    ],
)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -0.5, None])  # None: 2x largest
def test_a_bad_heartbeat_measurement_is_refused_and_changes_nothing(
    key: str, largest: float, bad: float | None
) -> None:
    clock = Clock()
    logic = CoordinatorLogic(clock=clock)
    logic.register("edge-0", "edge", "e:1")
    logic.register("worker-0", "worker", "w:1", "edge-0", host="box", host_cpus=2.0)
    logic.heartbeat("worker-0", cpu_seconds=0.01, compute_stretch=2.0, round_cpu_seconds=0.003)
    seen = logic.members()[0][1].last_seen
    clock.now += 1.0
    value = largest * 2 if bad is None else bad
    with pytest.raises(InvalidInput, match=f"^{key}"):
        logic.heartbeat("worker-0", **{"cpu_seconds": 0.5, key: value})  # type: ignore[arg-type]
    member = {m.name: m for m in logic.members()[0]}["worker-0"]
    got = (member.cpu_seconds, member.compute_stretch, member.round_cpu_seconds, member.last_seen)
    assert got == (0.01, 2.0, 0.003, seen)


class PlainContext:
    """A plaintext server's call context (no certificate identity)."""

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}


def test_the_servicer_passes_the_heartbeats_stretch_on() -> None:
    logic = coordinator()
    servicer = CoordinatorServicer(logic)
    request = coordinator_pb2.HeartbeatRequest(
        name="worker-3", cpu_seconds=0.01, compute_stretch=4.5
    )
    assert servicer.Heartbeat(request, PlainContext()).known  # type: ignore[arg-type]
    assert stretches(logic)["worker-3"] == 4.5


def test_the_round_cpu_reaches_the_cluster_the_spec_and_the_plan() -> None:
    """Heartbeats carry each worker's CPU per round besides its compute (through the servicer,
    as the wire has it); GetCluster shows it, the spec carries it and the plan is made with
    it; small moves change no plan."""
    logic = coordinator()
    servicer = CoordinatorServicer(logic)
    for name in NATIVE + EMULATED:
        slow = name in EMULATED
        request = coordinator_pb2.HeartbeatRequest(
            name=name,
            cpu_seconds=0.8 if slow else 0.01,
            compute_stretch=8.0,
            round_cpu_seconds=0.03 if slow else 0.002,
        )
        assert servicer.Heartbeat(request, PlainContext()).known  # type: ignore[arg-type]
    cluster = servicer.GetCluster(coordinator_pb2.GetClusterRequest(), PlainContext())  # type: ignore[arg-type]
    shown = {n.name: n.round_cpu_seconds for n in cluster.nodes if n.role == "worker"}
    assert shown == {w: 0.03 if w in EMULATED else 0.002 for w in NATIVE + EMULATED}
    spec, _ = logic.cluster_spec()
    carried = {w.name: w.round_cpu_seconds for e in spec.edges for w in e.workers}
    assert carried == shown
    plan, _, _ = logic.plan()
    assert all(partitions(plan)[w] == 0 for w in EMULATED), partitions(plan)
    logic.heartbeat("worker-2", round_cpu_seconds=0.033)  # +10 %: not a change
    logic.heartbeat("worker-2", round_cpu_seconds=0.0)  # "not measured": keeps the last value
    assert logic.plan()[0] is plan
    logic.register("worker-2", "worker", "w2:1", "edge-0", host="box", host_cpus=2.0)
    assert {m.name: m for m in logic.members()[0]}["worker-2"].round_cpu_seconds == 0.03
    logic.register("worker-2", "worker", "w2:1", "edge-0", host="pi-7", host_cpus=4.0)
    assert {m.name: m for m in logic.members()[0]}["worker-2"].round_cpu_seconds == 0.0
