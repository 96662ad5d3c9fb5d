"""The ideal floor and the oracle of a round, measured in one process (``edgecode bench train``).

Both use the same emulated compute as the workers (a worker holding the fraction f of the data
spends ``f * compute_seconds * factor`` seconds, its real gradient included) and the real
gradients of the same data, with threads in this process and no network:

- **floor**: n threads, one per worker, each its share 1/n, then a barrier (wait for all): what
  any wait-for-all system could reach at best on this hardware;
- **oracle**: the slowest worker dropped and its work spread over the others (shares
  1/(n-1)), then a barrier: what knowing the straggler in advance buys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edgecode.learning.datasets import load_split
from edgecode.learning.models import get_model


def _round(
    pool: ThreadPoolExecutor,
    model: object,
    blocks: Sequence[tuple[object, np.ndarray]],
    params: np.ndarray,
    seconds: Sequence[float],
) -> float:
    start = time.perf_counter()

    def work(index: int) -> np.ndarray:
        begin = time.perf_counter()
        X, y = blocks[index]
        gradient = model.gradient(params, X, y)  # type: ignore[attr-defined]
        left = seconds[index] - (time.perf_counter() - begin)
        if left > 0:
            threading.Event().wait(left)
        return np.asarray(gradient)

    total = sum(pool.map(work, range(len(blocks))))
    assert np.all(np.isfinite(total))
    return time.perf_counter() - start


def measure(
    factors: Sequence[float],
    compute_seconds: float,
    rounds: int = 40,
    dataset: str = "breast_cancer",
    seed: int = 0,
) -> dict[str, float]:
    """Mean round seconds of the floor and of the oracle for workers slowed by ``factors``, and
    the size of the parameters in bytes (``params_bytes``)."""
    rng = np.random.default_rng(seed)
    train, _ = load_split(dataset, rng)
    model = get_model(train.default_model)
    params = model.init_params(rng, train.n_features, train.n_classes)
    n = len(factors)
    keep = [i for i in range(n) if i != int(np.argmax(factors))]
    result = {"params_bytes": float(np.asarray(params).nbytes)}
    for name, workers in (("floor", list(range(n))), ("oracle", keep)):
        share = 1.0 / len(workers)
        blocks = train.partition(len(workers))
        seconds = [share * compute_seconds * factors[w] for w in workers]
        with ThreadPoolExecutor(max_workers=len(workers)) as pool:
            times = [_round(pool, model, blocks, params, seconds) for _ in range(rounds)]
        result[f"{name}_seconds"] = float(np.mean(times[len(times) // 4 :]))
    return result
