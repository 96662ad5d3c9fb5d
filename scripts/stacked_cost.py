#!/usr/bin/env python3
"""A worker's coded gradient per round: each partition validated and computed
(``model.coded_gradient``) against the partitions stacked once (``learning.stacked``),
timed side by side in one process, alternating, for 2, 4 and 8 partitions of the bench's
size (28 rows x 30 features, logistic with L2, the shapes of ``edgecode bench train``).

    python scripts/stacked_cost.py                 # median of 5 repeats of 500 calls
    python scripts/stacked_cost.py --rows 500 --features 100

Prints per row the microseconds of one call each way, their ratio, and the largest
difference between the two results relative to the size of the summed terms.
"""

from __future__ import annotations

import argparse
import statistics
import timeit

import numpy as np

from edgecode.learning.models import get_model
from edgecode.learning.stacked import prepare_coded


def measure(count: int, rows: int, features: int, repeats: int, number: int) -> dict[str, float]:
    rng = np.random.default_rng([count, rows, features])
    model = get_model("logistic", l2=1e-3)
    parts = [
        (float(rng.normal()), rng.normal(size=(rows, features)), rng.integers(0, 2, rows))
        for _ in range(count)
    ]
    coded = prepare_coded(model, parts, features + 1)
    params = rng.normal(size=features + 1)
    share = 1 / 16
    per_part, stacked = [], []
    for _ in range(repeats):
        per_part.append(
            timeit.timeit(lambda: model.coded_gradient(params, parts, share), number=number)
        )
        stacked.append(timeit.timeit(lambda: coded.gradient(params, share), number=number))
    scale = sum(abs(c) * np.max(np.abs(model.gradient(params, X, y, share))) for c, X, y in parts)
    difference = np.abs(coded.gradient(params, share) - model.coded_gradient(params, parts, share))
    return {
        "per_part_us": 1e6 * statistics.median(per_part) / number,
        "stacked_us": 1e6 * statistics.median(stacked) / number,
        "relative_difference": float(np.max(difference) / scale),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=28, help="rows per partition (28)")
    parser.add_argument("--features", type=int, default=30, help="features (30)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats, median taken (5)")
    parser.add_argument("--number", type=int, default=500, help="calls per repeat (500)")
    args = parser.parse_args(argv)
    for flag in ("rows", "features", "repeats", "number"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    print(
        f"{'partitions':>10s} {'per part us':>12s} {'stacked us':>11s} {'ratio':>6s} {'rel. diff':>10s}"
    )
    for count in (2, 4, 8):
        row = measure(count, args.rows, args.features, args.repeats, args.number)
        print(
            f"{count:10d} {row['per_part_us']:12.1f} {row['stacked_us']:11.1f} "
            f"{row['per_part_us'] / row['stacked_us']:6.1f} {row['relative_difference']:10.1e}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
