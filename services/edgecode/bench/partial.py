"""Partial recovery on the master's round path: the cost of one arrival in the rule and of the
final result, measured side by side with the bare numpy work on the same arrays in one run.

For a design on n workers and gradient length ``length``, every repeat plays one round (a random
arrival order, ``rotation`` = the repeat) and times :meth:`PartialRecoveryRule.offer` per arrival
and :meth:`PartialRecoveryRule.result`; the baseline is the least numpy work the round needs,
timed on the same arrays in the same repeat: summing the rows the rule sums (``sum(axis=0)`` of
each arrival's newly covered rows for subset designs; the chosen messages for cyclic designs).
Medians over repeats are reported in microseconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgecode.codes.partial import CyclicPartial, PartialRecoveryScheme
from edgecode.codes.partial_rule import PartialDecoder
from edgecode.codes.partial_schemes import design_label, partial_designs, worker_encoding


def _one_round(
    decoder: PartialDecoder, responses: list[np.ndarray], order: list[int], rotation: int
) -> tuple[list[float], float, float]:
    """(offer seconds per arrival, result seconds, bare numpy seconds of the same sums)."""
    length = responses[0].shape[1]
    rule = decoder.rule(length, rotation)
    offers = []
    for worker in order:
        start = time.perf_counter()
        done = rule.offer(worker, responses[worker])
        offers.append(time.perf_counter() - start)
        if done:
            break
    start = time.perf_counter()
    result = rule.result()
    finished = time.perf_counter() - start
    assert result.recovered is not None
    # the bare work: add the same rows with numpy, no bookkeeping
    start = time.perf_counter()
    if decoder.singletons:
        covered = np.zeros(decoder.n_partitions, dtype=bool)
        total = np.zeros(length)
        for worker in order[: len(offers)]:
            parts = decoder.partition_of[worker]
            new = ~covered[parts]
            covered[parts[new]] = True
            total += responses[worker][new].sum(axis=0)
    else:
        rows = [responses[w][m] for w, m in decoder.selection(rule._mask, rotation)]
        total = np.sum(rows, axis=0)
    bare = time.perf_counter() - start
    return offers, finished, bare


def bench_partial_rule(
    n: int = 10,
    s: int = 3,
    alphas: Sequence[float] = (0.9, 0.8),
    lengths: Sequence[int] = (1_000, 100_000),
    repeats: int = 21,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (alpha, design, length): median microseconds per arrival (``offer_us``),
    for the result (``result_us``), per round in total (``round_us`` = offers + result), and
    the bare numpy sums of the same rows (``bare_us``), all from the same repeats."""
    rng = np.random.default_rng(seed)
    rows = []
    for alpha in alphas:
        for scheme in partial_designs(n, s, alpha):
            decoder = PartialDecoder(scheme)
            for length in lengths:
                rows.append(_measure(decoder, scheme, length, repeats, rng, alpha))
    return rows


def _measure(
    decoder: PartialDecoder,
    scheme: PartialRecoveryScheme,
    length: int,
    repeats: int,
    rng: np.random.Generator,
    alpha: float,
) -> dict[str, Any]:
    gradients = rng.standard_normal((scheme.n_partitions, length))
    responses = [worker_encoding(scheme, w).encode(gradients) for w in range(scheme.n_workers)]
    per_arrival, results, totals, bares = [], [], [], []
    for repeat in range(repeats):
        order = rng.permutation(scheme.n_workers).tolist()
        offers, finished, bare = _one_round(decoder, responses, order, repeat)
        per_arrival.append(statistics.median(offers))
        results.append(finished)
        totals.append(sum(offers) + finished)
        bares.append(bare)
    return {
        "alpha": alpha,
        "design": design_label(scheme),
        "vectors_per_worker": scheme.communication_load,
        "length": length,
        "offer_us": 1e6 * statistics.median(per_arrival),
        "result_us": 1e6 * statistics.median(results),
        "round_us": 1e6 * statistics.median(totals),
        "bare_us": 1e6 * statistics.median(bares),
        "cyclic": isinstance(scheme, CyclicPartial),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the rule's per-arrival cost and the simulated rows of
    :func:`edgecode.sim.partial.partial_bench_rows` (``python -m edgecode.bench.partial``)."""
    import argparse

    from edgecode.sim.partial import partial_bench_rows

    parser = argparse.ArgumentParser(prog="python -m edgecode.bench.partial")
    parser.add_argument("--rounds", type=int, default=5_000, help="simulated rounds per design")
    parser.add_argument("--repeats", type=int, default=21, help="timed rounds per rule row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print("rule cost, n = 10, s = 3 (median microseconds)")
    print("alpha | design | V | length | per arrival | result | round | bare numpy sums")
    for r in bench_partial_rule(repeats=args.repeats, seed=args.seed):
        print(
            f"{r['alpha']:g} | {r['design']} | {r['vectors_per_worker']} | {r['length']} | "
            f"{r['offer_us']:.1f} | {r['result_us']:.1f} | {r['round_us']:.1f} | "
            f"{r['bare_us']:.1f}"
        )
    print(f"\nsimulated rounds, n = 10, s = 3, {args.rounds} rounds per design (seconds)")
    print(
        "model | alpha | design | auto | load/bound | V | exact E[T] | simulated (se) | "
        "full coding exact | full simulated (se) | ratio to full | mean end arrival"
    )
    rows = partial_bench_rows(np.random.default_rng(args.seed), rounds=args.rounds)
    for b in rows:
        print(
            f"{b.model} | {b.alpha:g} | {b.design} | {'*' if b.chosen else ''} | "
            f"{b.load_over_bound:.3f} | {b.communication_load} | {b.expected_seconds:.4f} | "
            f"{b.simulated_seconds:.4f} ({b.simulated_stderr:.4f}) | "
            f"{b.full_expected_seconds:.4f} | {b.full_simulated_seconds:.4f} "
            f"({b.full_simulated_stderr:.4f}) | "
            f"{b.ratio_to_full:.3f} | {b.mean_arrivals:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
