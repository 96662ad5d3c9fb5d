"""A worker's coded message with a PyTorch model: ONE weighted forward/backward pass over all its
partitions (``TorchModel.coded_gradient``) against the per-partition loop
``sum_j c_j * gradient(part j)``, and a bare torch forward/backward over the same rows (no
adapter), measured side by side in one run (interleaved repeats, medians).

Run from the repository root (needs the torch extra)::

    python -m edgecode.bench.torch_coded [--repeats 15] [--threads 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

EXAMPLES = Path("examples/torch/models.py")


def bench_coded_gradient(
    functions: Sequence[str] = ("small_mlp", "small_cnn"),
    n_partitions: int = 6,
    held: int = 3,
    repeats: int = 15,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per model: seconds for the one-pass coded message, the per-partition loop and a bare
    torch pass over the ``held`` partitions a worker holds out of ``n_partitions`` of digits;
    and the largest difference between the two messages relative to the loop's largest entry."""
    import torch

    from edgecode.learning import load_split, partition_bounds
    from edgecode.learning.torch_model import TorchModel

    train, _ = load_split("digits", np.random.default_rng(seed))
    bounds = partition_bounds(train.n_rows, n_partitions)[:held]
    rng = np.random.default_rng(seed)
    coefficients = rng.uniform(-2.0, 2.0, held)
    parts = [
        (c, train.X[a:b], train.y[a:b]) for c, (a, b) in zip(coefficients, bounds, strict=True)
    ]
    rows = []
    for function in functions:
        model = TorchModel(f"torch:{EXAMPLES}:{function}")
        params = model.init_params(rng, train.n_features, train.n_classes)
        bare = _bare_pass(model.build(train.n_features, train.n_classes), params, parts)
        share = 1 / n_partitions
        actions: dict[str, Callable[[], Any]] = {
            "one_pass": partial(model.coded_gradient, params, parts, share),
            "per_partition": partial(_loop, model, params, parts, share),
            "bare_torch": bare,
        }
        times: dict[str, list[float]] = {name: [] for name in actions}
        for _ in range(repeats):  # interleaved, so machine noise hits all alike
            for name, action in actions.items():
                start = time.perf_counter()
                action()
                times[name].append(time.perf_counter() - start)
        one, loop = actions["one_pass"](), actions["per_partition"]()
        rows.append(
            {
                "model": function,
                "rows": sum(int(X.shape[0]) for _, X, _ in parts),
                "n_params": len(params),
                "threads": torch.get_num_threads(),
                **{f"{name}_seconds": statistics.median(t) for name, t in times.items()},
                "loop_over_one_pass": statistics.median(times["per_partition"])
                / statistics.median(times["one_pass"]),
                "max_relative_difference": float(np.max(np.abs(one - loop)) / np.max(np.abs(loop))),
            }
        )
    return rows


def _loop(
    model: Any, params: np.ndarray, parts: Sequence[tuple[float, Any, Any]], share: float
) -> Any:
    """The per-partition loop the worker ran before ``coded_gradient``."""
    return sum(c * model.gradient(params, X, y, share) for c, X, y in parts)


def _bare_pass(module: Any, params: np.ndarray, parts: Sequence[tuple[float, Any, Any]]) -> Any:
    """A plain torch forward/backward over the same rows and weights: the floor for the adapter."""
    import torch

    net = module.double().eval()
    torch.nn.utils.vector_to_parameters(torch.tensor(params), list(net.parameters()))
    x = torch.tensor(np.concatenate([X for _, X, _ in parts]))
    y = torch.tensor(np.concatenate([y for _, _, y in parts]))
    w = torch.tensor(np.concatenate([np.full(len(y), c) for c, _, y in parts]))

    def run() -> None:
        net.zero_grad()
        losses = torch.nn.functional.cross_entropy(net(x), y, reduction="none")
        torch.autograd.backward([(w * losses).sum()])

    return run


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = bench_coded_gradient(repeats=args.repeats)
    print(f"{'model':<10} {'rows':>5} {'params':>6} {'one pass ms':>11} {'loop ms':>8} "
          f"{'bare ms':>8} {'loop/one':>8} {'max rel diff':>12}")  # fmt: skip
    for r in rows:
        print(
            f"{r['model']:<10} {r['rows']:>5} {r['n_params']:>6} "
            f"{1e3 * r['one_pass_seconds']:>11.2f} {1e3 * r['per_partition_seconds']:>8.2f} "
            f"{1e3 * r['bare_torch_seconds']:>8.2f} {r['loop_over_one_pass']:>8.2f} "
            f"{r['max_relative_difference']:>12.1e}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
