"""First-order optimizers with explicit, checkpointable state: gradient descent and Nesterov's
accelerated gradient (the optimizer of Tandon et al.'s gradient-coding experiments).

Convention. The caller passes the SUMMED gradient (what gradient coding decodes: the sum over all
rows, see :mod:`edgecode.learning.models`) and the number of rows n it was summed over. Every
step uses the MEAN gradient ``g = gradient / n``, so learning rates do not depend on the data
set size.

Gradient descent::

    x_{k+1} = x_k - lr * g(x_k)

Nesterov (look-ahead form). The caller always evaluates the gradient at the parameters the
optimizer last returned, the look-ahead point y_k; the optimizer keeps the main iterate x_k::

    x_{k+1} = y_k - lr * g(y_k)
    y_{k+1} = x_{k+1} + beta_k (x_{k+1} - x_k)          (returned; y_0 = x_0 = initial params)

with either a constant ``beta_k = momentum`` or, when ``momentum is None`` (the default),
Nesterov's 1983 sequence ``t_0 = 1``, ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2``,
``beta_k = (t_k - 1) / t_{k+1}`` (so beta_0 = 0 and beta_k -> 1). For an L-smooth convex mean
loss and ``lr <= 1 / L`` this gives f(x_k) - f* = O(1 / k^2) (see
:func:`edgecode.learning.models.smoothness` for L).

State and resume. ``step`` is deterministic given the optimizer's state and its arguments, and
does not modify its arguments. ``state_dict()`` returns copies of everything (str/int/float/None
scalars and float64 arrays); ``optimizer_from_state(state)`` rebuilds an optimizer that continues
bit-identically, as if it had never stopped.

Example
-------
>>> import numpy as np
>>> opt = Nesterov(lr=0.5)
>>> x = np.array([4.0])
>>> for _ in range(3):   # f(x) = x^2 / 2 on one row: summed gradient x, n = 1
...     x = opt.step(x, x, n_rows=1)
>>> resumed = optimizer_from_state(opt.state_dict())
>>> bool(np.array_equal(resumed.step(x, x, 1), opt.step(x, x, 1)))
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgecode.errors import InvalidInput
from edgecode.learning.models import FloatArray

#: Default learning rate (applied to the MEAN gradient). It is below 1 / L for every bundled data
#: set once standardised (L = smoothness(model, X) on the training rows: breast_cancer 3.37,
#: digits 3.67, iris 1.45, wine 2.41, diabetes 3.95); pass ``1 / smoothness(model, X)`` for other
#: data.
DEFAULT_LR = 0.25
#: Keys every state dict carries.
STATE_KEYS = ("kind", "lr", "steps")


@runtime_checkable
class Optimizer(Protocol):
    """An optimizer whose whole state fits in ``state_dict()``."""

    @property
    def kind(self) -> str:
        """Registry name ("gd" or "nesterov")."""
        ...

    @property
    def steps(self) -> int:
        """Steps taken so far."""
        ...

    def step(self, params: Any, gradient: Any, n_rows: int) -> FloatArray:
        """New parameters from the current ones and the SUMMED gradient over ``n_rows`` rows."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Copies of the full state; ``optimizer_from_state`` inverts it exactly."""
        ...


def _check_lr(lr: float) -> float:
    value = float(lr)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    return value


def _check_step_inputs(params: Any, gradient: Any, n_rows: int) -> tuple[FloatArray, FloatArray]:
    x = np.asarray(params, dtype=np.float64)
    g = np.asarray(gradient, dtype=np.float64)
    if x.ndim != 1:
        raise InvalidInput(f"params must be 1-D, got shape {x.shape}")
    if g.shape != x.shape:
        raise InvalidInput(f"gradient must have shape {x.shape} like params, got {g.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(g))):
        raise InvalidInput("params and gradient must be finite, got NaN or inf")
    if isinstance(n_rows, bool) or int(n_rows) != n_rows or n_rows < 1:
        raise ValueError(f"n_rows must be a positive integer, got {n_rows!r}")
    return x, g


def _check_state(state: Mapping[str, Any], kind: str, extra: tuple[str, ...]) -> None:
    missing = [key for key in (*STATE_KEYS, *extra) if key not in state]
    if missing:
        raise ValueError(f"state is missing key(s) {missing}")
    if state["kind"] != kind:
        raise ValueError(f"state['kind'] must be {kind!r}, got {state['kind']!r}")
    steps = state["steps"]
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"state['steps'] must be an integer >= 0, got {steps!r}")


class GradientDescent:
    """Plain gradient descent on the mean loss: ``x <- x - lr * gradient / n_rows``.

    >>> import numpy as np
    >>> GradientDescent(lr=0.5).step(np.array([2.0]), np.array([4.0]), n_rows=2).tolist()
    [1.0]
    """

    kind = "gd"

    def __init__(self, lr: float = DEFAULT_LR) -> None:
        self.lr = _check_lr(lr)
        self._steps = 0

    @property
    def steps(self) -> int:
        return self._steps

    def step(self, params: Any, gradient: Any, n_rows: int) -> FloatArray:
        x, g = _check_step_inputs(params, gradient, n_rows)
        self._steps += 1
        return x - (self.lr / int(n_rows)) * g

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "lr": self.lr, "steps": self._steps}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> GradientDescent:
        _check_state(state, cls.kind, ())
        optimizer = cls(lr=state["lr"])
        optimizer._steps = int(state["steps"])
        return optimizer

    def __repr__(self) -> str:
        return f"GradientDescent(lr={self.lr!r}, steps={self._steps})"


class Nesterov:
    """Nesterov's accelerated gradient on the mean loss (formulas in the module docstring).

    ``momentum=None`` uses the t-sequence ``beta_k = (t_k - 1) / t_{k+1}``; a number in [0, 1)
    uses that constant beta. The state is (steps, t_k, x_k); ``iterate`` is the main sequence
    x_k, ``step`` returns the look-ahead point y_k at which the next gradient is computed.

    >>> import numpy as np
    >>> opt = Nesterov(lr=1.0, momentum=0.5)
    >>> y1 = opt.step(np.array([1.0]), np.array([1.0]), 1)          # x1 = 0, y1 = 0 + 0.5*(0-1)
    >>> y1.tolist(), opt.iterate.tolist()
    ([-0.5], [0.0])
    """

    kind = "nesterov"

    def __init__(self, lr: float = DEFAULT_LR, momentum: float | None = None) -> None:
        self.lr = _check_lr(lr)
        if momentum is not None:
            value = float(momentum)
            if not (0.0 <= value < 1.0):
                raise ValueError(f"momentum must be in [0, 1) or None, got {momentum!r}")
            momentum = value
        self.momentum = momentum
        self._steps = 0
        self._t = 1.0
        self._iterate: FloatArray | None = None

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def iterate(self) -> FloatArray | None:
        """The main iterate x_k (None before the first step)."""
        return None if self._iterate is None else self._iterate.copy()

    def step(self, params: Any, gradient: Any, n_rows: int) -> FloatArray:
        y, g = _check_step_inputs(params, gradient, n_rows)
        previous = y if self._iterate is None else self._iterate
        if previous.shape != y.shape:
            raise InvalidInput(
                f"params must have shape {previous.shape} like the previous steps, got {y.shape}"
            )
        x_next = y - (self.lr / int(n_rows)) * g
        if self.momentum is None:
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * self._t * self._t)) / 2.0
            beta = (self._t - 1.0) / t_next
        else:
            t_next = self._t
            beta = self.momentum
        look_ahead = x_next + beta * (x_next - previous)
        self._iterate, self._t, self._steps = x_next, t_next, self._steps + 1
        return look_ahead

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "lr": self.lr,
            "momentum": self.momentum,
            "steps": self._steps,
            "t": self._t,
            "iterate": self.iterate,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Nesterov:
        _check_state(state, cls.kind, ("momentum", "t", "iterate"))
        momentum = state["momentum"]
        optimizer = cls(lr=state["lr"], momentum=None if momentum is None else float(momentum))
        t = float(state["t"])
        if not (math.isfinite(t) and t >= 1.0):
            raise ValueError(f"state['t'] must be a finite number >= 1, got {state['t']!r}")
        iterate = state["iterate"]
        if iterate is not None:
            iterate = np.array(iterate, dtype=np.float64)
            if iterate.ndim != 1 or not np.all(np.isfinite(iterate)):
                raise ValueError("state['iterate'] must be a finite 1-D array or None")
        elif int(state["steps"]) > 0:
            raise ValueError("state['iterate'] must be an array once steps > 0, got None")
        optimizer._steps, optimizer._t, optimizer._iterate = int(state["steps"]), t, iterate
        return optimizer

    def __repr__(self) -> str:
        return f"Nesterov(lr={self.lr!r}, momentum={self.momentum!r}, steps={self._steps})"


_OPTIMIZERS: dict[str, type[GradientDescent] | type[Nesterov]] = {
    GradientDescent.kind: GradientDescent,
    Nesterov.kind: Nesterov,
}
#: Names accepted by :func:`get_optimizer`.
OPTIMIZER_NAMES: tuple[str, ...] = tuple(_OPTIMIZERS)


def get_optimizer(name: str, lr: float = DEFAULT_LR, **options: Any) -> Optimizer:
    """A fresh optimizer by name: "gd" or "nesterov" (``momentum=`` is Nesterov's only option).

    >>> get_optimizer("nesterov", lr=0.1)
    Nesterov(lr=0.1, momentum=None, steps=0)
    """
    if name not in _OPTIMIZERS:
        raise ValueError(f"name must be one of {list(OPTIMIZER_NAMES)}, got {name!r}")
    try:
        return _OPTIMIZERS[name](lr, **options)
    except TypeError:
        raise ValueError(f"options: {name!r} does not accept {sorted(options)}") from None


def optimizer_from_state(state: Mapping[str, Any]) -> Optimizer:
    """Rebuild the optimizer that produced ``state`` (from any ``state_dict()``)."""
    kind = state.get("kind")
    if kind not in _OPTIMIZERS:
        raise ValueError(f"state['kind'] must be one of {list(OPTIMIZER_NAMES)}, got {kind!r}")
    return _OPTIMIZERS[kind].from_state(state)
