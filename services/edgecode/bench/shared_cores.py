"""Plans on shared cores, measured and modelled side by side (planning.hosts' stretch model).

``python -m edgecode.bench.shared_cores`` runs four worker processes on this machine (two
"edges" of two) with ``--hogs`` CPU-bound processes beside them, everything under ``nice``, and
for a few hierarchical plans measures the round time and predicts it with the planner's model:

- each worker holding the fraction f computes ``f * work`` of real, single-threaded CPU work
  (pure Python), then waits ``f * Exponential(mean wait)`` (its non-CPU time: the straggling
  the shifted-exponential model describes); a worker still busy when a newer round arrives
  skips to it, as real workers do;
- a round ends when enough edges have enough answers (the plan's s_edge and s_worker);
- profiling: rounds of the ``--profile`` plan give every worker's fit (shift, rate) from its
  compute times, its CPU seconds per whole data set and its wall / CPU stretch, exactly as the
  coordinator receives them; the planner's model (``baselines.timed``) then predicts every plan
  twice: with the stretch (processor sharing with the other load inferred from it) and without
  it (the plain floor ``W / C``, which takes the cores as free);
- every plan is then measured for ``--rounds`` rounds (median round seconds), the plans in
  turn so drifting load on a shared machine hits them alike.

It prints one table per ``--hogs`` value: plan, measured median, predicted with and without
the stretch, the inferred other load L, and whether each model orders the plans as measured
(Kendall's tau over the plan pairs). The hogs, the workers and this process are all niced
(``--nice``), so other users keep their share; the CPU spent is printed.

Example (about 30 CPU seconds here, printed at the end)::

    python -m edgecode.bench.shared_cores --hogs 0 4 --rounds 25
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from edgecode.planning.baselines import timed, uniform_plan
from edgecode.planning.hosts import host_arrays
from edgecode.planning.spec import ClusterSpec, EdgePlan, EdgeSpec, Plan, WorkerPlan, WorkerSpec
from edgecode.stragglers import fit_shifted_exponential

EDGES = (("w0", "w1"), ("w2", "w3"))
#: (s_edge, s_worker) of the uniform plans compared (all four workers compute): full
#: replication, a copy per edge, a copy per worker pair, the data split four ways
UNIFORM = {
    "full (1,1)": (1, 1),
    "edge copies (1,0)": (1, 0),
    "worker copies (0,1)": (0, 1),
    "split (0,0)": (0, 0),
}
#: plans where only w0 and w2 compute (the others idle): (K, s_edge, partitions each)
HALF = {"two copies (1,-)": (1, 1, 1), "two halves (0,-)": (2, 0, 1)}
PLANS = (*UNIFORM, *HALF)


def _plans() -> dict[str, Plan]:
    base = ClusterSpec(
        tuple(
            EdgeSpec(f"edge-{i}", tuple(WorkerSpec(w, 1.0, 1.0) for w in ws))
            for i, ws in enumerate(EDGES)
        )
    )
    plans = {name: uniform_plan(base, *se) for name, se in UNIFORM.items()}
    for name, (K, s_edge, held) in HALF.items():
        edges = tuple(
            EdgePlan(
                f"edge-{i}",
                0,
                0.0,
                held,
                (WorkerPlan(ws[0], True, held), WorkerPlan(ws[1], False, 0)),
            )
            for i, ws in enumerate(EDGES)
        )
        plans[name] = Plan("hgc", K, s_edge, edges)
    return plans


def _spin(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i * i
    return total


def _calibrate(seconds: float) -> int:
    """Iterations of :func:`_spin` taking about ``seconds`` of CPU here."""
    n = 20_000
    while True:
        start = time.process_time()
        _spin(n)
        spent = time.process_time() - start
        if spent > 0.02:
            return max(1, int(n * seconds / spent))
        n *= 4


def _worker(conn: Connection, iterations: int, wait: float, seed: int, nice: int) -> None:
    os.nice(nice)
    rng = np.random.default_rng(seed)
    while True:
        message = conn.recv()
        while conn.poll():  # skip the rounds that went stale meanwhile
            message = conn.recv()
        if message is None:
            return
        round_, fraction = message
        if fraction <= 0:
            continue
        cpu0, wall0 = time.process_time(), time.perf_counter()
        _spin(int(iterations * fraction))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        time.sleep(fraction * rng.exponential(wait))
        conn.send((round_, fraction, cpu, wall, time.perf_counter() - wall0))


def _hog(nice: int) -> None:
    os.nice(nice)
    while True:
        _spin(1_000_000)


def _fractions(plan: Plan) -> tuple[dict[str, float], list[tuple[list[str], int]], int]:
    """Each worker's fraction of the data, each edge's (workers, answers needed), edges
    needed."""
    fractions = {w.name: w.partitions / plan.partitions for e in plan.edges for w in e.workers}
    edges = []
    for e in plan.edges:
        holders = [w.name for w in e.workers if w.partitions > 0]
        if holders:
            edges.append((holders, len(holders) - e.s_worker))
    return fractions, edges, len(edges) - plan.s_edge


class Cluster:
    """The worker processes and the round loop."""

    def __init__(self, iterations: int, wait: float, nice: int, seed: int) -> None:
        ctx = mp.get_context("fork")
        self.conns: dict[str, Connection] = {}
        self.procs: list[Any] = []
        for k, name in enumerate(itertools.chain(*EDGES)):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker, args=(child, iterations, wait, seed + k, nice), daemon=True
            )
            proc.start()
            self.conns[name], self.procs = parent, [*self.procs, proc]
        self.round = 0

    def run(
        self, plan: Plan, rounds: int
    ) -> tuple[list[float], dict[str, list[tuple[float, ...]]]]:
        """Round seconds and per worker (fraction, CPU, compute wall, compute + wait, response
        seconds) of each answer to the round then current."""
        fractions, edges, needed = _fractions(plan)
        times: list[float] = []
        answers: dict[str, list[tuple[float, ...]]] = {w: [] for w in self.conns}
        for _ in range(rounds):
            self.round += 1
            start = time.perf_counter()
            for name, conn in self.conns.items():
                conn.send((self.round, fractions.get(name, 0.0)))
            got: set[str] = set()
            while sum(sum(w in got for w in ws) >= need for ws, need in edges) < needed:
                ready = mp.connection.wait(list(self.conns.values()))
                for name, conn in self.conns.items():
                    if conn in ready:
                        round_, fraction, cpu, wall, total = conn.recv()
                        if round_ == self.round:  # a fresh answer: its response time too
                            response = time.perf_counter() - start
                            answers[name].append((fraction, cpu, wall, total, response))
                        if round_ == self.round:
                            got.add(name)
            times.append(time.perf_counter() - start)
        return times, answers

    def close(self) -> None:
        for conn in self.conns.values():
            conn.send(None)
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


def _spec(answers: dict[str, list[tuple[float, ...]]], cores: float, stretch: bool) -> ClusterSpec:
    """What the coordinator would know after the profiling rounds: each worker's fit, CPU
    seconds and stretch; a worker that did not compute takes its edge partner's fit and CPU
    seconds (the workers are identical) and reports no stretch."""

    def worker(name: str, partner: str) -> WorkerSpec:
        own = bool(answers.get(name))
        rows = np.array(answers[name] if own else answers[partner])
        shift, rate = fit_shifted_exponential(rows[:, 3], rows[:, 0])
        # as the coordinator does: everything but the worker's own time acts as its link delay
        link = max(0.0, float(np.median(rows[:, 4] - rows[:, 3])))
        return WorkerSpec(
            name,
            shift,
            rate,
            link_seconds=link,
            host="this",
            host_cpus=cores,
            cpu_seconds=float(np.median(rows[:, 1] / rows[:, 0])),
            compute_stretch=float(np.median(rows[:, 2] / rows[:, 1])) if stretch and own else 0.0,
        )

    return ClusterSpec(
        tuple(EdgeSpec(f"edge-{i}", (worker(a, b), worker(b, a))) for i, (a, b) in enumerate(EDGES))
    )


def _tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau of two orderings (1: the same order)."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    agree = sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs)
    return float(agree / len(pairs))


def compare(hogs: int, args: argparse.Namespace, iterations: int) -> dict[str, Any]:
    cores = float(len(os.sched_getaffinity(0)))
    ctx = mp.get_context("fork")
    hog_procs = [ctx.Process(target=_hog, args=(args.nice,), daemon=True) for _ in range(hogs)]
    for p in hog_procs:
        p.start()
    cluster = Cluster(iterations, args.wait, args.nice, args.seed)
    try:
        plans = _plans()
        cluster.run(plans[args.profile], 3)  # warm up
        _, answers = cluster.run(plans[args.profile], args.rounds)
        with_stretch, without = _spec(answers, cores, True), _spec(answers, cores, False)
        arrays = host_arrays(with_stretch)
        measured: dict[str, list[float]] = {name: [] for name in plans}
        chunk = max(2, args.rounds // 5)  # the first round of a chunk is not counted
        for _ in range(5):  # the plans in turn, 5 chunks each
            for name, plan in plans.items():
                measured[name] += cluster.run(plan, chunk)[0][1:]
    finally:
        cluster.close()
        for p in hog_procs:
            p.kill()
            p.join()
    rows: list[dict[str, Any]] = []
    for name, plan in plans.items():
        rows.append(
            {
                "plan": name,
                "measured": statistics.median(measured[name]),
                "model": timed(with_stretch, plan).expected_round_seconds,
                "plain": timed(without, plan).expected_round_seconds,
            }
        )
    m = [r["measured"] for r in rows]
    return {
        "hogs": hogs,
        "cores": cores,
        "other_load": float(arrays.load[0]) if arrays is not None else 0.0,
        "stretch": statistics.median(
            w.compute_stretch for e in with_stretch.edges for w in e.workers if w.compute_stretch
        ),
        "cpu_seconds": statistics.median(
            w.cpu_seconds for e in with_stretch.edges for w in e.workers
        ),
        "rows": rows,
        "tau_model": _tau(m, [r["model"] for r in rows]),
        "tau_plain": _tau(m, [r["plain"] for r in rows]),
        "best": {
            k: min(rows, key=lambda r: float(r[k]))["plan"] for k in ("measured", "model", "plain")
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--hogs", type=int, nargs="+", default=[0, 4], help="CPU hogs beside the workers, per run"
    )
    parser.add_argument(
        "--rounds", type=int, default=25, help="rounds of profiling and per plan (at least 2)"
    )
    parser.add_argument("--work", type=float, default=0.04, help="CPU s for the whole data set")
    parser.add_argument("--wait", type=float, default=0.15, help="mean non-CPU s, whole set")
    parser.add_argument(
        "--profile", default="two halves (0,-)", choices=PLANS, help="the plan profiled first"
    )
    parser.add_argument("--nice", type=int, default=10, help="niceness of every process")
    parser.add_argument("--seed", type=int, default=1, help="seed of the waits")
    args = parser.parse_args(argv)
    if args.rounds < 2 or any(h < 0 for h in args.hogs):
        parser.error(f"--rounds must be >= 2 and --hogs >= 0, got {args.rounds}, {args.hogs}")
    os.nice(args.nice)
    iterations = _calibrate(args.work)
    cpu0 = time.process_time()
    for hogs in args.hogs:
        result = compare(hogs, args, iterations)
        print(
            f"\nhogs {hogs}: cores {result['cores']:g}, profiled on {args.profile}: the computing "
            f"workers' stretch {result['stretch']:.2f}, "
            f"inferred other load L {result['other_load']:.2f}, CPU s per whole set "
            f"{result['cpu_seconds']:.3f}"
        )
        print(f"{'plan':<22}{'measured s':>11}{'model s':>10}{'plain s':>10}")
        for r in result["rows"]:
            print(f"{r['plan']:<22}{r['measured']:>11.4f}{r['model']:>10.4f}{r['plain']:>10.4f}")
        print(
            f"order vs measured (Kendall tau): model {result['tau_model']:+.2f}, "
            f"plain floor {result['tau_plain']:+.2f}; fastest: measured {result['best']['measured']}, "
            f"model {result['best']['model']}, plain floor {result['best']['plain']}"
        )
    children = os.times()
    print(
        f"\nCPU: this process {time.process_time() - cpu0:.1f} s, children "
        f"{children.children_user + children.children_system:.1f} s; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
