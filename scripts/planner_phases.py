"""Where the planner's time goes, and whether two trees plan alike (measurement helper).

    PYTHONPATH=services python scripts/planner_phases.py phases            # per-phase CPU ms
    PYTHONPATH=services python scripts/planner_phases.py plans OUT.json 100 148
    python scripts/planner_phases.py compare BASE.json NEW.json
    PYTHONPATH=services python scripts/planner_phases.py rule               # the load rule alone

``phases``: the benchmark's hard clusters (``edgecode.bench.planner --compare DIR --hard``,
seed 0), each planned four times (the first warms up), the run with the least CPU reported
split into the structure search (``_search_structures``), the load refinement (``_refined``,
with the rounding of its loads at every K) and the rest (the K grid of rule loads, the uniform
plans, the exact timing of the finalists).

``plans``: plans held-out hard clusters (Bernoulli, Markov and fixed-K clusters of
:func:`edgecode.bench.planner.hard_cluster` for the generator seeds FIRST..LAST-1, the size
cycling through the benchmark's six) with the importable edgecode and writes their exact
expected round times and the CPU seconds; ``compare`` prints how many plans differ, the worst
and mean relative change.

``rule``: the load rule (:func:`edgecode.planning._rule.apply`) on the largest batch the planner
gives it for the benchmark's Markov 4 x 4 cluster (the first search round: every level's
complete neighbourhood), best of 20 runs; and :func:`edgecode.planning.exhaustive.exhaustive_optimum`
(the rule on every structure) of a plain 3 x 4 cluster, best of 3.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def phases() -> None:
    from edgecode.bench.planner import HARD_SIZES, _cluster

    module = importlib.import_module("edgecode.planning.optimize")
    spent: dict[str, float] = {}

    def timed(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.process_time()
            try:
                return func(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - began

        return wrapper

    for name in ("_search_structures", "_refined"):
        setattr(module, name, timed(name, getattr(module, name)))
    print("| kind | edges x m | total ms | search ms | refinement ms | rest ms |")
    print("|---|---|---|---|---|---|")
    for kind in ("bernoulli", "markov", "fixed"):
        for n_edges, per_edge in HARD_SIZES:
            spec = _cluster(0, n_edges, per_edge, kind)
            runs = []
            for _ in range(4):
                spent.clear()
                began = time.process_time()
                module.optimize(spec)
                runs.append((time.process_time() - began, dict(spent)))
            total, parts = min(runs[1:], key=lambda run: run[0])
            search, refine = parts["_search_structures"], parts.get("_refined", 0.0)
            print(
                f"| {kind} | {n_edges} x {per_edge} | {1e3 * total:.1f} | {1e3 * search:.1f} | "
                f"{1e3 * refine:.1f} | {1e3 * (total - search - refine):.1f} |"
            )


def plans(out: str, first: int, last: int) -> None:
    from edgecode.bench.planner import HARD_SIZES, hard_cluster
    from edgecode.planning.optimize import optimize

    values: dict[str, float | None] = {}
    cpu = 0.0
    for kind in ("bernoulli", "markov", "fixed"):
        for seed in range(first, last):
            n_edges, per_edge = HARD_SIZES[seed % len(HARD_SIZES)]
            rng = np.random.default_rng([seed, 7, n_edges, per_edge])
            spec = hard_cluster(n_edges, per_edge, kind, rng)
            began = time.process_time()
            plan = optimize(spec)
            cpu += time.process_time() - began
            values[f"{kind} {n_edges}x{per_edge} seed {seed}"] = plan.expected_round_seconds
    with open(out, "w") as handle:
        json.dump({"cpu": cpu, "expected": values}, handle, indent=0)
    print(f"{len(values)} clusters, {cpu:.2f} CPU s")


def compare(base_path: str, new_path: str) -> None:
    with open(base_path) as handle:
        base = json.load(handle)["expected"]
    with open(new_path) as handle:
        new = json.load(handle)["expected"]
    change = {key: new[key] / base[key] - 1 for key in base}
    worst = max(change, key=lambda key: change[key])
    print(
        f"{len(change)} clusters; {sum(c != 0 for c in change.values())} plans differ; worst "
        f"{100 * change[worst]:+.4f} % ({worst}); mean {100 * np.mean(list(change.values())):+.5f} "
        f"%; above 0.5 %: {sum(c > 0.005 for c in change.values())}"
    )


def rule() -> None:
    from edgecode.bench.planner import _cluster, random_cluster
    from edgecode.planning import _rule
    from edgecode.planning.exhaustive import exhaustive_optimum
    from edgecode.planning.optimize import optimize

    apply = _rule.apply
    batches: list[tuple[Any, ...]] = []

    def keep(*args: Any, **kwargs: Any) -> Any:
        batches.append((args, kwargs))
        return apply(*args, **kwargs)

    _rule.apply = keep
    try:
        optimize(_cluster(0, 4, 4, "markov"))
    finally:
        _rule.apply = apply
    args, kwargs = max(batches, key=lambda batch: batch[0][1].shape[0])
    best = np.inf
    for _ in range(20):
        memo: dict[float, Any] = {}
        began = time.process_time()
        apply(*args, **{**kwargs, "memo": memo})
        best = min(best, time.process_time() - began)
    print(f"rule on {args[1].shape[0]} structures: {1e3 * best:.2f} ms")
    spec = random_cluster(3, 4, np.random.default_rng(1))
    best = np.inf
    for _ in range(3):
        began = time.process_time()
        plan = exhaustive_optimum(spec)
        best = min(best, time.process_time() - began)
    print(
        f"exhaustive optimum, plain 3 x 4: {best:.2f} s (E[T] {plan.expected_round_seconds:.6f} s)"
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["phases"]:
        phases()
    elif argv[:1] == ["plans"] and len(argv) == 4 and all(a.isdigit() for a in argv[2:]):
        plans(argv[1], int(argv[2]), int(argv[3]))
    elif argv[:1] == ["rule"]:
        rule()
    elif argv[:1] == ["compare"] and len(argv) == 3:
        compare(argv[1], argv[2])
    elif argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
    else:
        print(
            f"planner_phases.py: expected phases | rule | plans OUT.json FIRST LAST | compare "
            f"BASE.json NEW.json, got {' '.join(argv) or 'nothing'} (--help explains)",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
