"""Two small PyTorch models for scikit-learn's bundled ``digits`` images (8 x 8, 10 classes).

Use them as ``--model torch:examples/torch/models.py:small_mlp`` (a file path, relative to the
working directory) or ``torch:examples.torch.models:small_cnn`` when the repository root is on
``PYTHONPATH``. edgecode calls each with ``n_features`` (64 for digits) and ``n_classes`` (10);
the contract is in :mod:`edgecode.learning.torch_model`. Both are row-independent (no batch
statistics, no dropout), as gradient coding requires.
"""

from __future__ import annotations

import math

from torch import nn


def small_mlp(n_features: int, n_classes: int, hidden: int = 32) -> nn.Module:
    """d -> hidden -> C with a tanh in between: (d + 1) hidden + (hidden + 1) C parameters
    (2,410 for digits)."""
    return nn.Sequential(
        nn.Linear(n_features, hidden),
        nn.Tanh(),
        nn.Linear(hidden, n_classes),
    )


def small_cnn(n_features: int, n_classes: int, channels: int = 8) -> nn.Module:
    """Two 3 x 3 convolutions with 2 x 2 max-pooling on square images of side sqrt(d), then a
    linear layer: 8 x 8 -> 4 x 4 -> 2 x 2 (1,898 parameters for digits)."""
    side = math.isqrt(n_features)
    if side * side != n_features or side % 4:
        raise ValueError(
            f"small_cnn needs square images whose side is a multiple of 4, got {n_features} features"
        )
    return nn.Sequential(
        nn.Unflatten(1, (1, side, side)),
        nn.Conv2d(1, channels, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * (side // 4) ** 2, n_classes),
    )
