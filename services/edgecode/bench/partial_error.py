"""The gradient error of ignore-stragglers and partial recovery, exactly, iid vs label-sorted data.

``edgecode bench partial`` measures time to loss on a real cluster; this module explains it. With
n = 10 identical, independent workers (both straggler models of the bench), the first n - s = 7
answers come from a uniformly random 7-subset of the workers, and both ignore (K = 10, one
partition per worker, the first 7 rescaled by 10/7) and the subset designs of the bench
(alpha = 0.9: k = 210; alpha = 0.8: k = 105; both always end at the 7th answer) use exactly those
7. So over the C(10, 7) = 120 equally likely arrival sets A the estimate ĝ(A) of the full
gradient g is enumerated exactly, on the bench's own problem (same data spec, seed, split,
initial parameters and partitioning as the master), at the initial parameters and after 30
exact gradient-descent rounds (uncoded's round-30 point, the time-to-loss target). Reported:

* bias = ||E ĝ - g|| / ||g|| (a systematic error that does not average out over rounds),
* rms = sqrt(E ||ĝ - g||^2) / ||g|| (the whole error of one round),

for ``rescale`` (K / |R| on the recovered sum, the jobs' default) and, for partial,
``inverse-probability`` (g_j / P(j recovered): unbiased for every design).

Then :func:`rounds_to_target_rows` trains 200 times per scheme with a random arrival set every
round (the same sets for every scheme) and counts the rounds to uncoded's round-30 loss: the
statistical half of time-to-loss, free of the machine's timing noise.

Run: ``PYTHONPATH=services python -m edgecode.bench.partial_error`` (about 20 s).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from edgecode.bench.papers import DATA_ORDERS, N_WORKERS, PARTIAL_DATASET, TARGET_ROUND
from edgecode.codes.partial import subset_design
from edgecode.learning.datasets import load_split, partition_bounds
from edgecode.learning.models import get_model

STRAGGLERS = 3
ALPHAS = (0.9, 0.8)


def _problem(distribution: str, seed: int) -> tuple[Any, Any, np.ndarray]:
    """(train, model, initial params) exactly as the master builds them for the bench's job."""
    rng = np.random.default_rng(seed)
    train, _ = load_split(PARTIAL_DATASET + DATA_ORDERS[distribution], rng)
    model = get_model(train.default_model)
    params = model.init_params(rng, train.n_features, train.n_classes)
    return train, model, params


def _partition_weights(k: int, holders: list[set[int]], scale: str) -> np.ndarray:
    """(120, k): partition j's weight in the estimate for every 7-subset A of arrivals (0 when
    no holder of j is in A): k / |R| (``rescale``) or 1 / P(j recovered) (inverse-probability,
    the probability over the equally likely A)."""
    arrivals = itertools.combinations(range(N_WORKERS), N_WORKERS - STRAGGLERS)
    covered = np.array([[bool(h & set(a)) for h in holders] for a in arrivals], dtype=float)
    if scale == "rescale":
        return np.asarray(covered * (k / covered.sum(axis=1, keepdims=True)))
    return np.asarray(covered / covered.mean(axis=0, keepdims=True))


def _errors(blocks: np.ndarray, holders: list[set[int]], scale: str) -> tuple[float, float, float]:
    """(bias, rms, mean recovered fraction) of the estimate over every 7-subset of arrivals;
    ``blocks`` (k, p) are the partition gradients, ``holders[j]`` the workers holding j."""
    weights = _partition_weights(blocks.shape[0], holders, scale)
    g = blocks.sum(axis=0)
    estimates = weights @ blocks
    norm = float(np.linalg.norm(g))
    bias = float(np.linalg.norm(estimates.mean(axis=0) - g)) / norm
    rms = math.sqrt(float(np.mean(np.sum((estimates - g) ** 2, axis=1)))) / norm
    return bias, rms, float(np.mean(weights > 0))


def gradient_error_rows(seed: int = 0) -> list[dict[str, Any]]:
    """One row per (data distribution, parameters, scheme, scale)."""
    rows: list[dict[str, Any]] = []
    for distribution in DATA_ORDERS:
        train, model, params = _problem(distribution, seed)
        points = {"initial": params}
        for _ in range(TARGET_ROUND + 1):  # exact GD, lr 1.0 on the mean loss (the bench's)
            params = params - model.gradient(params, train.X, train.y) / train.n_rows
        points["uncoded round 30"] = params
        schemes: list[tuple[str, int, list[set[int]]]] = [
            ("ignore", N_WORKERS, [{i} for i in range(N_WORKERS)])
        ]
        for alpha in ALPHAS:
            design = subset_design(N_WORKERS, STRAGGLERS, alpha)
            holders = [set(np.flatnonzero(row).tolist()) for row in design.membership]
            schemes.append((f"partial alpha={alpha:g} subset", design.n_partitions, holders))
        for point, at in points.items():
            for name, k, holders in schemes:
                parts = train.partition(k)
                blocks = np.array([model.gradient(at, X, y) for X, y in parts])
                for scale in ("rescale", "inverse-probability") if k > N_WORKERS else ("rescale",):
                    bias, rms, recovered = _errors(blocks, holders, scale)
                    rows.append(
                        {
                            "data": distribution,
                            "params": point,
                            "scheme": name,
                            "k": k,
                            "scale": scale,
                            "recovered": recovered,
                            "bias": bias,
                            "rms_error": rms,
                        }
                    )
    return rows


def _row_weights(k: int, n_rows: int, holders: list[set[int]], scale: str) -> np.ndarray:
    """(120, n_rows): each row's weight in the estimate, for every 7-subset of arrivals."""
    sizes = [stop - start for start, stop in partition_bounds(n_rows, k)]
    return np.repeat(_partition_weights(k, holders, scale), sizes, axis=1)


def _logistic_estimate(X1: np.ndarray, y: np.ndarray, params: np.ndarray, w: np.ndarray) -> Any:
    """sum_rows w_row (sigma(x1_row . params) - y_row) x1_row: the logistic gradient of the
    rows weighted by ``w`` (x1 = [x, 1]; checked against the model's gradient below)."""
    return X1.T @ (w * (1.0 / (1.0 + np.exp(-(X1 @ params))) - y))


def rounds_to_target_rows(
    seed: int = 0, runs: int = 200, rounds: int = 60, rng_seed: int = 1
) -> list[dict[str, Any]]:
    """Rounds each scheme needs to reach uncoded's round-30 loss, over ``runs`` simulated
    trainings (a uniformly random 7-subset of arrivals every round, the bench's problem and
    step, the same arrival sets for every scheme). A scheme's wall time is then about
    setup + rounds x its mean round time measured by ``edgecode bench partial``."""
    rng = np.random.default_rng(rng_seed)
    draws = rng.integers(0, math.comb(N_WORKERS, STRAGGLERS), size=(runs, rounds))
    rows: list[dict[str, Any]] = []
    for distribution in DATA_ORDERS:
        train, model, start = _problem(distribution, seed)
        X1 = np.hstack([train.X, np.ones((train.n_rows, 1))])
        y = train.y.astype(float)
        ones = np.ones(train.n_rows)
        exact = _logistic_estimate(X1, y, start, ones)
        assert np.allclose(exact, model.gradient(start, train.X, train.y), rtol=1e-12, atol=0)
        params = start.copy()
        for _ in range(TARGET_ROUND + 1):
            params = params - _logistic_estimate(X1, y, params, ones) / train.n_rows
        target = model.loss(params, train.X, train.y) / train.n_rows
        for name, scale, weights in _row_weight_schemes(train.n_rows):
            needed, final = [], []
            for run in range(runs):
                params, hit = start.copy(), math.inf
                for t in range(rounds):
                    step = _logistic_estimate(X1, y, params, weights[draws[run, t]])
                    params = params - step / train.n_rows
                    loss = model.loss(params, train.X, train.y) / train.n_rows
                    hit = t + 1 if loss <= target and hit == math.inf else hit
                needed.append(hit)
                final.append(loss)
            counts = np.array(needed)
            rows.append(
                {
                    "data": distribution,
                    "scheme": name,
                    "scale": scale,
                    "target_loss": target,
                    "reached": float(np.mean(np.isfinite(counts))),
                    "rounds_median": float(np.median(counts)),
                    "rounds_q25": float(np.quantile(counts, 0.25)),
                    "rounds_q75": float(np.quantile(counts, 0.75)),
                    "final_loss_mean": float(np.mean(final)),
                }
            )
    return rows


def _row_weight_schemes(n_rows: int) -> list[tuple[str, str, np.ndarray]]:
    """(scheme, scale, per-arrival-set row weights) for ignore and the partial designs."""
    schemes = [("ignore", "rescale", _row_weights(N_WORKERS, n_rows, _singles(), "rescale"))]
    for alpha in ALPHAS:
        design = subset_design(N_WORKERS, STRAGGLERS, alpha)
        holders = [set(np.flatnonzero(row).tolist()) for row in design.membership]
        for scale in ("rescale", "inverse-probability"):
            weights = _row_weights(design.n_partitions, n_rows, holders, scale)
            schemes.append((f"partial alpha={alpha:g}", scale, weights))
    return schemes


def _singles() -> list[set[int]]:
    return [{i} for i in range(N_WORKERS)]


def main() -> None:
    for row in gradient_error_rows():
        print(
            f"{row['data']:7} {row['params']:17} {row['scheme']:26} k={row['k']:<4} "
            f"{row['scale']:20} recovered {row['recovered']:.3f}  bias {row['bias']:.4f}  "
            f"rms {row['rms_error']:.4f}"
        )
    print("rounds to uncoded's round-30 loss over 200 simulated runs (inf = never in 60 rounds)")
    for row in rounds_to_target_rows():
        print(
            f"{row['data']:7} {row['scheme']:18} {row['scale']:20} reached {row['reached']:.2f}  "
            f"median {row['rounds_median']:g} (q25 {row['rounds_q25']:g}, q75 "
            f"{row['rounds_q75']:g})  final loss {row['final_loss_mean']:.5f}  "
            f"target {row['target_loss']:.10f}"
        )


if __name__ == "__main__":
    main()
