"""Train a ``torch:`` model on digits in one process, with the same model and optimizer objects
the master and workers use (full-batch rounds, no cluster): a quick check of a model file.

    PYTHONPATH=services python examples/torch/train_digits.py torch:examples/torch/models.py:small_cnn --steps 100
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from edgecode.learning import check_model_reference, get_model, get_optimizer, load_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="torch:MODULE:FUNCTION or torch:PATH.py:FUNCTION")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--optimizer", default="adam", help="gd, nesterov, sgd[:...], adam[:...]")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--schedule", default=None, help="default cosine:total=STEPS")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_split("digits", np.random.default_rng(0))
    check_model_reference(args.model, train.n_features, train.n_classes)  # what a submit checks
    model = get_model(args.model)
    params = model.init_params(np.random.default_rng(0), train.n_features, train.n_classes)
    schedule = args.schedule or f"cosine:total={args.steps}"
    optimizer = get_optimizer(args.optimizer, args.lr, schedule=schedule)
    start = time.perf_counter()
    for _ in range(args.steps):
        params = optimizer.step(params, model.gradient(params, train.X, train.y), train.n_rows)
    print(
        f"{args.model}: {len(params)} parameters, {args.steps} steps of {args.optimizer} in "
        f"{time.perf_counter() - start:.1f} s; train loss "
        f"{model.loss(params, train.X, train.y) / train.n_rows:.4f}, test accuracy "
        f"{model.accuracy(params, test.X, test.y):.4f}"
    )


if __name__ == "__main__":
    main()
