#!/usr/bin/env python3
"""Plan quality of this tree's planner against a base version (on demand, not in CI).

    python scripts/planner_quality.py                  # base: git ref main
    python scripts/planner_quality.py --base HEAD~3    # any ref of this repository
    python scripts/planner_quality.py --base-path /tmp/old/services
    python scripts/planner_quality.py --mixed --hard --base-path /tmp/old/services

Both versions plan the same clusters, each in its own subprocess (``PYTHONPATH`` = the base's
exported ``services/``, then this tree's): :func:`edgecode.bench.planner.random_cluster` at
4, 8, 16, 32, 64 and 200 workers (several shapes and seeds), and with ``--mixed`` also
Bernoulli-straggler and fixed-K variants of the small ones (the planner's "hard" path), with
``--hard`` also the 54 clusters of ``python -m edgecode.bench.planner --compare DIR --hard``
(:func:`edgecode.bench.planner.hard_cluster`: Bernoulli, Markov and fixed-K clusters of 6-16
workers, seeds 0-2). Each
plan's counts are written out, rebuilt here and timed by THIS tree's exact evaluator
(:func:`edgecode.planning.timing.expected_round_time`, rtol 1e-10); the base's own value is
checked to agree with it. The table gives, per cluster, both expected round times, the
relative difference (new / base - 1; negative = the new plan is faster) and the CPU seconds
of each ``optimize`` call. Exit code 1 when any new plan is more than ``--tolerance``
(default 0.5 %) slower than the base plan.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: (edges, workers per edge, seeds): 4, 8, 16, 32, 64 and 200 workers.
SHAPES: tuple[tuple[int, int, tuple[int, ...]], ...] = (
    (2, 2, (0, 1, 2)),
    (1, 4, (0, 1)),
    (2, 4, (0, 1, 2)),
    (4, 2, (0, 1)),
    (4, 4, (0, 1, 2)),
    (2, 8, (0, 1)),
    (4, 8, (0, 1, 2)),
    (8, 4, (0, 1)),
    (8, 8, (0, 1, 2)),
    (16, 4, (0,)),
    (20, 10, (0, 1, 2)),
    (10, 20, (0,)),
)
#: Shapes of the ``--mixed`` clusters (each seed once plain-Bernoulli, once with K fixed).
MIXED_SHAPES: tuple[tuple[int, int, tuple[int, ...]], ...] = (
    (2, 3, (0, 1)),
    (2, 4, (0, 1)),
    (3, 4, (0, 1)),
    (4, 4, (0, 1)),
    (4, 8, (0,)),
)


#: Seeds of the ``--hard`` clusters (each kind and size of the benchmark's ``--hard`` set).
HARD_SEEDS = (0, 1, 2)


def _clusters(mixed: bool, hard: bool = False) -> list[tuple[str, Any]]:
    """(label, spec) of every cluster compared."""
    import numpy as np

    from edgecode.bench.planner import HARD_SIZES, _cluster, random_cluster

    out = []
    for edges, per_edge, seeds in SHAPES:
        for seed in seeds:
            spec = random_cluster(edges, per_edge, np.random.default_rng(1000 * seed + 7))
            out.append((f"{edges}x{per_edge} seed {seed}", spec))
    if mixed:
        for edges, per_edge, seeds in MIXED_SHAPES:
            for seed in seeds:
                rng = np.random.default_rng(5000 + 100 * seed + edges * per_edge)
                base = random_cluster(edges, per_edge, rng)
                p = float(rng.choice([0.05, 0.1, 0.2]))
                slow = float(rng.choice([3.0, 5.0, 8.0]))
                spec = replace(
                    base,
                    edges=tuple(
                        replace(
                            e,
                            workers=tuple(
                                replace(w, model="bernoulli", p_straggle=p, slow_factor=slow)
                                for w in e.workers
                            ),
                        )
                        for e in base.edges
                    ),
                )
                label = f"{edges}x{per_edge} bernoulli p={p} x{slow:g} seed {seed}"
                out.append((label, spec))
                out.append((f"{edges}x{per_edge} K=24 seed {seed}", replace(base, partitions=24)))
    if hard:
        for kind in ("bernoulli", "markov", "fixed"):
            for edges, per_edge in HARD_SIZES:
                for seed in HARD_SEEDS:
                    label = f"hard {kind} {edges}x{per_edge} seed {seed}"
                    out.append((label, _cluster(seed, edges, per_edge, kind)))
    return out


def _dump(mixed: bool, hard: bool) -> None:
    """Child: plan every cluster with the importable edgecode; JSON lines on stdout."""
    import importlib
    import time

    optimize = importlib.import_module("edgecode.planning.optimize").optimize
    for label, spec in _clusters(mixed, hard):
        began = time.process_time()
        plan = optimize(spec)
        cpu = time.process_time() - began
        record = {
            "label": label,
            "workers": spec.n_workers,
            "cpu": cpu,
            "expected": plan.expected_round_seconds,
            "K": plan.partitions,
            "s_edge": plan.s_edge,
            "s_worker": [e.s_worker for e in plan.edges],
            "c": [e.partitions for e in plan.edges],
            "loads": [[w.partitions for w in e.workers] for e in plan.edges],
            "candidate": plan.extra.get("candidate"),
        }
        print(json.dumps(record), flush=True)


def _run(services: Path, mixed: bool, hard: bool = False) -> list[dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=str(services))
    args = [sys.executable, str(Path(__file__).resolve()), "--dump"]
    args += ["--mixed"] * mixed + ["--hard"] * hard
    done = subprocess.run(args, env=env, check=True, capture_output=True, text=True, cwd="/")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _exact(spec: Any, record: dict[str, Any]) -> float:
    from edgecode.planning.plans import build_plan, check_plan
    from edgecode.planning.timing import expected_round_time

    plan = build_plan(
        spec,
        "hgc",
        record["K"],
        record["s_edge"],
        record["s_worker"],
        record["c"],
        record["loads"],
    )
    check_plan(plan, spec)
    return expected_round_time(spec, plan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="main", help="git ref of the base version (main)")
    parser.add_argument("--base-path", help="the base's services/ directory (instead of --base)")
    parser.add_argument("--mixed", action="store_true", help="also Bernoulli and fixed-K clusters")
    parser.add_argument("--hard", action="store_true", help="also the benchmark's --hard clusters")
    parser.add_argument("--tolerance", type=float, default=0.005, help="allowed slow-down (0.005)")
    parser.add_argument("--dump", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dump:
        _dump(args.mixed, args.hard)
        return 0
    sys.path.insert(0, str(ROOT / "services"))
    with tempfile.TemporaryDirectory() as scratch:
        if args.base_path:
            base_services = Path(args.base_path)
        else:
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.base, "services"],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", scratch], input=archive, check=True)
            base_services = Path(scratch) / "services"
        base = _run(base_services, args.mixed, args.hard)
        new = _run(ROOT / "services", args.mixed, args.hard)
    specs = dict(_clusters(args.mixed, args.hard))
    print(
        "| cluster | workers | base E[T] s | new E[T] s | new / base - 1 | base CPU s | new CPU s |"
    )
    print("|---|---|---|---|---|---|---|")
    worst, failed, diffs = -1.0, 0, []
    for old, cur in zip(base, new, strict=True):
        spec = specs[old["label"]]
        old_exact, new_exact = _exact(spec, old), _exact(spec, cur)
        assert abs(old_exact / old["expected"] - 1) < 1e-8, "evaluators disagree"
        diff = new_exact / old_exact - 1
        worst = max(worst, diff)
        diffs.append(diff)
        failed += diff > args.tolerance
        print(
            f"| {old['label']} | {old['workers']} | {old_exact:.6f} | {new_exact:.6f} | "
            f"{100 * diff:+.3f} % | {old['cpu']:.3f} | {cur['cpu']:.3f} |"
        )
    print(
        f"\nclusters: {len(base)}; worst new / base - 1: {100 * worst:+.3f} %; "
        f"mean {100 * sum(diffs) / len(diffs):+.4f} %; faster: {sum(d < -1e-9 for d in diffs)}; "
        f"above {100 * args.tolerance:g} %: {failed}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
