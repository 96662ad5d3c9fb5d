"""Bring your own PyTorch model: a ``torch.nn.Module`` behind edgecode's model interface.

Importing this module imports torch (the optional extra ``edgecode[torch]``); nothing else in
edgecode does. :func:`edgecode.learning.get_model` loads it for ``torch:`` references.

The contract
------------
**Reference.** ``torch:MODULE:FUNCTION`` or ``torch:PATH.py:FUNCTION`` (see
:mod:`edgecode.learning.references`) names a function, or an ``nn.Module`` class, returning a
NEW ``torch.nn.Module``. It is called with the keyword arguments ``n_features`` (d) and
``n_classes`` (C) that its signature names (both if it takes ``**kwargs``). The same code must
be importable on the master and on every worker; it runs with the service's privileges.

**Input, output, loss.** The module maps a float tensor (n, d) of rows (sparse data is made
dense) to (n, C) logits when C >= 2, with the cross-entropy loss (binary data has C = 2), or to
(n,) or (n, 1) predictions when C = 1, with half the squared error. Reshape inside the module
(``nn.Unflatten(1, (1, 8, 8))`` for 8 x 8 images).

**Rows are independent.** Gradient coding adds the gradients of disjoint row blocks, so output
row i may depend only on input row i and the parameters. The module is always run in ``eval()``
mode: dropout is off, batch norm uses its running statistics (which are never updated).

**Parameters.** ``params`` is one flat vector: the parameters with ``requires_grad``, in
``named_parameters()`` order, each flattened in C order; its length is ``n_params(d, C)``.
Buffers and frozen parameters never travel: every node builds the module under the same torch
seed, so they agree. Computation runs in the dtype of ``params``: float32 params run a float32
copy of the module, any other dtype a float64 copy (``module.double()``; torch's global default
dtype is never changed). Losses are Python floats; gradients are float64 arrays (exact
widening of a float32 computation).

**Maths.** With l_i the loss of row i, lam = ``l2`` and W the parameters of two or more
dimensions (weights of linear and convolution layers; biases and norm scales are not penalised,
like the intercept of the linear models)::

    loss(params, X, y, r)     = sum_i l_i + r (lam / 2) ||W||^2
    gradient(params, X, y, r) = d loss / d params
    coded_gradient(params, [(c_1, X_1, y_1), ...], r) = sum_j c_j gradient(params, X_j, y_j, r)

``coded_gradient`` runs ONE forward and ONE backward pass over the rows of all parts stacked,
with c_j as the weight of every row of part j: the gradient is linear in the row weights, so
this is the coded message exactly, and no per-part gradient is ever formed. The L2 term is added
in closed form, ``r (sum_j c_j) lam W``.

**Initialisation.** ``init_params(rng, d, C)`` builds the module under a torch seed drawn from
``rng`` (the module's own initialisation; ``scale`` is not used) and flattens it.

**Errors.** ``edgecode.errors.BadModel`` (a ``ValueError``), naming the reference: an import
failure, a missing or non-callable function, a result that is not an ``nn.Module``, a failing
forward pass or an output of the wrong shape, parameters that change after construction, a loss
or gradient that is not finite. Bad arguments (params of the wrong length, labels outside
[0, C)) raise ``InvalidInput``.

Example
-------
>>> import numpy as np
>>> model = TorchModel("torch:examples/torch/models.py:small_mlp")  # run from the repository
>>> rng = np.random.default_rng(0)
>>> X, y = rng.standard_normal((6, 64)), rng.integers(0, 10, 6)
>>> params = model.init_params(rng, 64, 10)
>>> len(params) == model.n_params(64, 10)
True
>>> coded = model.coded_gradient(params, [(2.0, X[:4], y[:4]), (-1.0, X[4:], y[4:])])
>>> parts = 2 * model.gradient(params, X[:4], y[:4]) - model.gradient(params, X[4:], y[4:])
>>> bool(np.allclose(coded, parts, rtol=0, atol=1e-12))
True
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import NDArray
from torch import nn

from edgecode.errors import BadModel, InvalidInput
from edgecode.learning.models import (
    DEFAULT_INIT_SCALE,
    FloatArray,
    Task,
    _check_dims,
    _check_labels,
    _check_share,
    _check_targets,
    check_matrix,
    check_parts,
)
from edgecode.learning.references import load_model_function, parse_model_reference

#: The torch seed every node builds a module under, so buffers and frozen parameters agree.
BUILD_SEED = 0

Layout = tuple[tuple[str, tuple[int, ...]], ...]


def _layout(module: nn.Module) -> Layout:
    return tuple((n, tuple(p.shape)) for n, p in module.named_parameters() if p.requires_grad)


class _Built:
    """One module built for (d, C): its flat-parameter layout and a copy per dtype."""

    def __init__(self, ref: str, module: nn.Module, n_features: int, n_classes: int) -> None:
        self.ref, self.n_features, self.n_classes = ref, n_features, n_classes
        self.layout = _layout(module)
        self.sizes = [math.prod(shape) for _, shape in self.layout]
        self.n_params = sum(self.sizes)
        self.penalised = np.concatenate(
            [
                np.full(size, len(shape) >= 2)
                for size, (_, shape) in zip(self.sizes, self.layout, strict=True)
            ]
        )
        self.lock = threading.Lock()  # functional_call swaps the module's tensors for a call
        self._original = module
        self._copies: dict[torch.dtype, nn.Module] = {}

    def module(self, dtype: torch.dtype) -> nn.Module:
        if dtype not in self._copies:
            self._copies[dtype] = copy.deepcopy(self._original).to(dtype).eval()
        return self._copies[dtype]

    def forward(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The module's output at the parameters ``flat``; call under ``self.lock``."""
        module = self.module(flat.dtype)
        views = torch.split(flat, self.sizes)
        tensors = {name: v.view(shape) for (name, shape), v in zip(self.layout, views, strict=True)}
        try:
            out = torch.func.functional_call(module, tensors, (x,))
        except Exception as exc:
            raise BadModel(
                f"model {self.ref!r}: the forward pass on a batch of shape {tuple(x.shape)} "
                f"failed: {type(exc).__name__}: {exc}"
            ) from exc
        if _layout(module) != self.layout:
            raise BadModel(
                f"model {self.ref!r}: its parameters changed after construction (now "
                f"{_layout(module)}, built as {self.layout}); create every parameter in __init__"
            )
        return _check_output(self.ref, out, x.shape[0], self.n_classes)

    def row_losses(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.n_classes == 1:
            return 0.5 * (out - targets) ** 2
        return nn.functional.cross_entropy(out, targets, reduction="none")

    def inputs(
        self, parts: Sequence[tuple[float, Any, Any]], dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows of all parts stacked (n, d), their targets (n,) and row weights c_j (n,)."""
        blocks: list[NDArray[Any]] = []
        targets: list[NDArray[Any]] = []
        weights: list[NDArray[Any]] = []
        for c, X, y in parts:
            matrix = check_matrix(X)
            if matrix.shape[1] != self.n_features:
                raise InvalidInput(
                    f"X must have {self.n_features} columns for model {self.ref!r}, "
                    f"got shape {matrix.shape}"
                )
            n = int(matrix.shape[0])
            blocks.append(cast(Any, matrix).toarray() if sp.issparse(matrix) else matrix)
            if self.n_classes == 1:
                targets.append(_check_targets(y, n))
            else:
                targets.append(_check_labels(y, n, self.n_classes))
            weights.append(np.full(n, c))
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        x = torch.from_numpy(np.concatenate(blocks, dtype=np_dtype))
        t = np.concatenate(targets)
        target = torch.from_numpy(t.astype(np_dtype) if self.n_classes == 1 else t)
        return x, target, torch.from_numpy(np.concatenate(weights).astype(np_dtype))


def _check_output(ref: str, out: Any, n: int, n_classes: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise BadModel(f"model {ref!r}: the module returned {type(out).__name__}, not a tensor")
    if n_classes == 1 and tuple(out.shape) in ((n,), (n, 1)):
        return out.reshape(n)
    if n_classes >= 2 and tuple(out.shape) == (n, n_classes):
        return out
    expected = f"({n},) or ({n}, 1)" if n_classes == 1 else f"({n}, {n_classes})"
    raise BadModel(
        f"model {ref!r}: output has shape {tuple(out.shape)} for {n} rows, expected {expected} "
        f"for {n_classes} class(es)"
    )


def _factory_kwargs(
    function: Callable[..., Any], n_features: int, n_classes: int
) -> dict[str, int]:
    offered = {"n_features": n_features, "n_classes": n_classes}
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return offered
    kinds = {p.kind for p in signature.parameters.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds:
        return offered
    return {
        k: v
        for k, v in offered.items()
        if k in signature.parameters
        and signature.parameters[k].kind != inspect.Parameter.POSITIONAL_ONLY
    }


class TorchModel:
    """A ``torch.nn.Module`` factory behind the :class:`~edgecode.learning.models.Model`
    interface (the contract is the module docstring). ``roots`` confines file references."""

    fit_intercept = True

    def __init__(
        self, reference: str, *, l2: float = 0.0, roots: Sequence[str | Path] | None = None
    ) -> None:
        if not (math.isfinite(l2) and l2 >= 0.0):
            raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
        self._ref = parse_model_reference(reference)
        self._function = load_model_function(self._ref, roots)
        self._l2 = float(l2)
        self._built: dict[tuple[int, int], _Built] = {}
        self._lock = threading.Lock()
        self._last: _Built | None = None

    @property
    def name(self) -> str:
        return self._ref.text

    @property
    def l2(self) -> float:
        return self._l2

    @property
    def task(self) -> Task:
        """From the last (d, C) built: C = 1 regression, 2 binary, else multiclass."""
        classes = 3 if self._last is None else self._last.n_classes
        return "regression" if classes == 1 else "binary" if classes == 2 else "multiclass"

    def __repr__(self) -> str:
        return f"TorchModel({self._ref.text!r}, l2={self._l2!r})"

    # ------------------------------------------------------------------ building
    def build(self, n_features: int, n_classes: int, seed: int = BUILD_SEED) -> nn.Module:
        """A new module from the factory under torch seed ``seed``, in eval mode, checked on a
        two-row batch (lazy parameters are materialised there)."""
        kwargs = _factory_kwargs(self._function, n_features, n_classes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                module = self._function(**kwargs)
            except Exception as exc:
                raise BadModel(
                    f"model {self.name!r}: calling {self._ref.function}(**{kwargs}) failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if not isinstance(module, nn.Module):
                raise BadModel(
                    f"model {self.name!r}: {self._ref.function}() returned a "
                    f"{type(module).__name__}, not a torch.nn.Module"
                )
            module.eval()
            floating = [
                t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()
            ]
            dtype = floating[0].dtype if floating else torch.get_default_dtype()
            try:
                with torch.no_grad():
                    out = module(torch.zeros(2, n_features, dtype=dtype))
            except Exception as exc:
                raise BadModel(
                    f"model {self.name!r}: the forward pass on a (2, {n_features}) batch failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        _check_output(self.name, out, 2, n_classes)
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters()):
            raise BadModel(
                f"model {self.name!r}: parameters are still uninitialised after a forward"
            )
        if not _layout(module):
            raise BadModel(f"model {self.name!r}: the module has no trainable parameters")
        return module

    def _bind(self, n_features: int, n_classes: int) -> _Built:
        _check_dims(n_features, n_classes)
        key = (int(n_features), int(n_classes))
        with self._lock:
            if key not in self._built:
                self._built[key] = _Built(self.name, self.build(*key), *key)
            self._last = self._built[key]
            return self._last

    def _built_for(self, length: int, n_features: int) -> _Built:
        with self._lock:
            fits = [
                b
                for b in self._built.values()
                if (b.n_features, b.n_params) == (n_features, length)
            ]
            known = [(b.n_features, b.n_classes, b.n_params) for b in self._built.values()]
        if len(fits) != 1:
            raise InvalidInput(
                f"params of length {length} with {n_features} features fit "
                f"{'no' if not fits else 'more than one'} (n_features, n_classes, n_params) built "
                f"for model {self.name!r}: {known}; call n_params(n_features, n_classes) first"
            )
        return fits[0]

    def _flat(self, params: Any) -> tuple[NDArray[Any], torch.dtype]:
        arr = np.asarray(params)
        if arr.dtype != np.float32:
            arr = arr.astype(np.float64)
        if arr.ndim != 1:
            raise InvalidInput(f"params must be 1-D, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise InvalidInput("params must be finite, got NaN or inf")
        return arr, torch.float32 if arr.dtype == np.float32 else torch.float64

    def _penalty_gradient(self, built: _Built, params: NDArray[Any], share: float) -> FloatArray:
        return np.where(built.penalised, (share * self._l2) * params.astype(np.float64), 0.0)

    # ------------------------------------------------------------------ the Model interface
    def n_params(self, n_features: int, n_classes: int) -> int:
        return self._bind(n_features, n_classes).n_params

    def fingerprint(self, n_features: int, n_classes: int) -> str:
        """A short hash of the parameter layout, to check that two nodes built the same model."""
        built = self._bind(n_features, n_classes)
        return hashlib.sha256(repr((built.layout, n_classes)).encode()).hexdigest()[:16]

    def init_params(
        self,
        rng: np.random.Generator,
        n_features: int,
        n_classes: int,
        scale: float = DEFAULT_INIT_SCALE,
    ) -> FloatArray:
        if not (math.isfinite(scale) and scale >= 0.0):
            raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
        built = self._bind(n_features, n_classes)
        module = self.build(n_features, n_classes, seed=int(rng.integers(0, 2**63 - 1)))
        if _layout(module) != built.layout:
            raise BadModel(f"model {self.name!r}: the factory builds a different module each call")
        trainable = [p for p in module.parameters() if p.requires_grad]
        flat = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in trainable])
        return flat.numpy().copy()

    def loss(self, params: Any, X: Any, y: Any, reg_share: float = 1.0) -> float:
        share = _check_share(reg_share)
        arr, dtype = self._flat(params)
        built = self._built_for(arr.shape[0], int(check_matrix(X).shape[1]))
        x, target, _ = built.inputs([(1.0, X, y)], dtype)
        with built.lock, torch.no_grad():
            rows = built.row_losses(built.forward(torch.from_numpy(arr.copy()), x), target)
        self._check_finite(rows, "loss")
        penalty = (
            0.5 * share * self._l2 * float(np.sum(arr[built.penalised].astype(np.float64) ** 2))
        )
        return float(rows.sum()) + penalty

    def gradient(self, params: Any, X: Any, y: Any, reg_share: float = 1.0) -> FloatArray:
        return self.coded_gradient(params, [(1.0, X, y)], reg_share)

    def coded_gradient(
        self, params: Any, parts: Sequence[tuple[float, Any, Any]], reg_share: float = 1.0
    ) -> FloatArray:
        share = _check_share(reg_share)
        items = check_parts(parts)
        arr, dtype = self._flat(params)
        built = self._built_for(arr.shape[0], int(check_matrix(items[0][1]).shape[1]))
        x, target, weights = built.inputs(items, dtype)
        flat = torch.from_numpy(arr.copy()).requires_grad_(True)
        with built.lock:
            rows = built.row_losses(built.forward(flat, x), target)
            self._check_finite(rows.detach(), "loss")
            (grad,) = torch.autograd.grad((weights * rows).sum(), flat, allow_unused=True)
        g = np.zeros(arr.shape[0]) if grad is None else grad.numpy().astype(np.float64)
        self._check_finite(torch.from_numpy(g), "gradient")
        if self._l2 != 0.0 and share != 0.0:
            g += self._penalty_gradient(built, arr, share * sum(c for c, _, _ in items))
        return g

    def _check_finite(self, values: torch.Tensor, what: str) -> None:
        bad = int((~torch.isfinite(values)).sum())
        if bad:
            raise BadModel(
                f"model {self.name!r}: the {what} is not finite (NaN or inf) in {bad} of "
                f"{values.numel()} entries at these parameters (diverged? lower the learning rate)"
            )

    def _outputs(self, params: Any, X: Any) -> tuple[_Built, torch.Tensor]:
        arr, dtype = self._flat(params)
        matrix = check_matrix(X)
        built = self._built_for(arr.shape[0], int(matrix.shape[1]))
        x, _, _ = built.inputs([(1.0, matrix, np.zeros(matrix.shape[0]))], dtype)
        with built.lock, torch.no_grad():
            return built, built.forward(torch.from_numpy(arr.copy()), x)

    def predict(self, params: Any, X: Any) -> NDArray[Any]:
        """Labels (the argmax of the logits) when C >= 2, predicted values when C = 1."""
        built, out = self._outputs(params, X)
        if built.n_classes == 1:
            return out.numpy().astype(np.float64)
        return out.argmax(dim=1).numpy().astype(np.int64)

    def accuracy(self, params: Any, X: Any, y: Any) -> float:
        """Fraction of correct labels; R^2 when C = 1 (as the numpy models)."""
        built, out = self._outputs(params, X)
        n = int(out.shape[0])
        if n == 0:
            return math.nan
        if built.n_classes >= 2:
            labels = _check_labels(y, n, built.n_classes)
            return float(np.mean(out.argmax(dim=1).numpy() == labels))
        predicted, targets = out.numpy().astype(np.float64), _check_targets(y, n)
        residual = float(np.sum((predicted - targets) ** 2))
        spread = float(np.sum((targets - targets.mean()) ** 2))
        if spread == 0.0:
            return 1.0 if residual == 0.0 else 0.0
        return 1.0 - residual / spread


def check_built(
    reference: str, n_features: int, n_classes: int, roots: Sequence[str | Path] | None = None
) -> None:
    """Build ``reference`` for (d, C) and run a loss and a gradient on two zero rows; raise
    ``BadModel`` (or ``ValueError`` for bad dimensions) on any failure."""
    model = TorchModel(reference, roots=roots)
    params = model.init_params(np.random.default_rng(0), n_features, n_classes)
    X, y = np.zeros((2, n_features)), np.zeros(2)
    model.loss(params, X, y)
    model.gradient(params, X, y)
