"""Learning core: models with summed losses/gradients, data sets and optimizers (numpy/scipy only).

``models``: binary logistic, softmax and least squares, whose losses and gradients are sums over
rows so that the partial gradients of any row partition add up to the full gradient.
``datasets``: bundled real data, LIBSVM/CSV/NPZ files, synthetic data with a known optimum, and
contiguous partitioning. ``gossip``: communication graphs, Metropolis mixing matrices and the GOCO
step. ``optimizers``: gradient descent, Nesterov, SGD with momentum and Adam,
with checkpointable state and learning-rate ``schedules``. ``references``: ``torch:`` model
references; the PyTorch adapter ``torch_model`` (and torch) is imported only when one is used.

Example
-------
>>> import numpy as np
>>> from edgecode.learning import get_model, get_optimizer, load_split
>>> rng = np.random.default_rng(0)
>>> train, test = load_split("breast_cancer", rng)
>>> model, opt = get_model(train.default_model), get_optimizer("nesterov")
>>> params = model.init_params(rng, train.n_features, train.n_classes)
>>> for _ in range(100):
...     params = opt.step(params, model.gradient(params, train.X, train.y), train.n_rows)
>>> model.accuracy(params, test.X, test.y) > 0.9
True
"""

from edgecode.learning.datasets import (
    BUNDLED,
    DATASET_NAMES,
    Dataset,
    get_dataset,
    load_bundled,
    load_file,
    load_split,
    logistic_optimum,
    partition_bounds,
    standardize,
    synthetic_least_squares,
    synthetic_logistic,
    synthetic_sparse,
)
from edgecode.learning.gossip import (
    GRAPH_KINDS,
    SCHEMES,
    GossipScheme,
    StepSchedule,
    Topology,
    build_topology,
    gossip_scheme,
)
from edgecode.learning.models import (
    MODEL_FOR_TASK,
    MODEL_NAMES,
    LeastSquares,
    LogisticRegression,
    Model,
    SoftmaxRegression,
    get_model,
    smoothness,
)
from edgecode.learning.optimizers import (
    DEFAULT_ADAM_LR,
    DEFAULT_LR,
    OPTIMIZER_NAMES,
    SGD,
    Adam,
    GradientDescent,
    Nesterov,
    Optimizer,
    get_optimizer,
    optimizer_from_state,
)
from edgecode.learning.references import TORCH_PREFIX, check_model_reference
from edgecode.learning.schedules import Schedule, parse_schedule

__all__ = [
    "BUNDLED",
    "DATASET_NAMES",
    "DEFAULT_ADAM_LR",
    "DEFAULT_LR",
    "GRAPH_KINDS",
    "MODEL_FOR_TASK",
    "MODEL_NAMES",
    "OPTIMIZER_NAMES",
    "SCHEMES",
    "SGD",
    "TORCH_PREFIX",
    "Adam",
    "Dataset",
    "GossipScheme",
    "GradientDescent",
    "LeastSquares",
    "LogisticRegression",
    "Model",
    "Nesterov",
    "Optimizer",
    "Schedule",
    "SoftmaxRegression",
    "StepSchedule",
    "Topology",
    "build_topology",
    "check_model_reference",
    "get_dataset",
    "get_model",
    "get_optimizer",
    "gossip_scheme",
    "load_bundled",
    "load_file",
    "load_split",
    "logistic_optimum",
    "optimizer_from_state",
    "parse_schedule",
    "partition_bounds",
    "smoothness",
    "standardize",
    "synthetic_least_squares",
    "synthetic_logistic",
    "synthetic_sparse",
]
