"""``edgecode bench codes``: decode-vector time and the cost of combining received vectors,
measured side by side with a bare numpy dot in the same run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from edgecode.codes import MessageBuffer, cyclic_repetition


def _median_seconds(action: Any, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench_decode(
    sizes: Sequence[int] = (8, 16, 32, 64),
    vector_length: int = 1_000_000,
    repeats: int = 7,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """For each n (cyclic code, s = n // 4): decode-vector time cold and cached, and the time to
    combine the n - s received vectors of ``vector_length`` float64 via :class:`MessageBuffer`
    against a bare ``numpy.dot`` of the same arrays, interleaved repeat by repeat."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        s = max(1, n // 4)
        code = cyclic_repetition(n, s)
        alive_sets = [
            tuple(sorted(rng.choice(n, n - s, replace=False).tolist())) for _ in range(repeats)
        ]
        cold = []
        for alive in alive_sets:
            code._cache.clear()
            start = time.perf_counter()
            code.decode_vector(alive)
            cold.append(time.perf_counter() - start)
        cached = _median_seconds(partial(code.decode_vector, alive_sets[0]), repeats * 10)

        alive = alive_sets[0]
        buffer = MessageBuffer(n, vector_length)
        for worker in alive:
            buffer.add(worker, rng.standard_normal(vector_length))
        decode = code.decode_vector(alive)
        rows_view = buffer._rows[: len(alive)]
        weights = decode[list(buffer.senders)]
        combine_times, dot_times = [], []
        for _ in range(repeats):  # interleave so machine noise hits both alike
            start = time.perf_counter()
            buffer.combine(decode)
            combine_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            np.dot(weights, rows_view)
            dot_times.append(time.perf_counter() - start)
        combine, dot = statistics.median(combine_times), statistics.median(dot_times)
        rows.append(
            {
                "n": n,
                "s": s,
                "decode_vector_cold_ms": 1e3 * statistics.median(cold),
                "decode_vector_cached_us": 1e6 * cached,
                "combine_ms": 1e3 * combine,
                "numpy_dot_ms": 1e3 * dot,
                "combine_over_dot": combine / dot,
            }
        )
    return rows
