"""First-order optimizers with explicit, checkpointable state: gradient descent, Nesterov's
accelerated gradient (the optimizer of Tandon et al.'s gradient-coding experiments), SGD with
(Nesterov) momentum and weight decay, and Adam with decoupled weight decay, each with an optional
learning-rate schedule (:mod:`edgecode.learning.schedules`).

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

SGD with momentum mu and weight decay wd (PyTorch's ``torch.optim.SGD``, no dampening)::

    g_k = gradient / n + wd x_k,    b_k = g_0 (k = 0) else mu b_{k-1} + g_k
    x_{k+1} = x_k - lr_k d_k,       d_k = g_k + mu b_k (nesterov) else b_k

Adam (Kingma & Ba) with DECOUPLED weight decay (Loshchilov & Hutter's AdamW, PyTorch's
``torch.optim.AdamW``; ``weight_decay=0`` is plain Adam), t = k + 1::

    x' = x_k (1 - lr_k wd),   m_t = b1 m_{t-1} + (1 - b1) g,   v_t = b2 v_{t-1} + (1 - b2) g^2
    x_{k+1} = x' - (lr_k / (1 - b1^t)) m_t / (sqrt(v_t) / sqrt(1 - b2^t) + eps)

with g = gradient / n. Every optimizer takes ``schedule=`` (a spec such as
``"cosine:total=200,warmup=5"``): step k uses ``lr_k = lr * schedule.factor(k)``.

State and resume. ``step`` is deterministic given the optimizer's state and its arguments, and
does not modify its arguments. ``state_dict()`` returns copies of everything (str/int/float/None
scalars and float64 arrays); ``optimizer_from_state(state)`` rebuilds an optimizer that continues
bit-identically, as if it had never stopped. Arrays may come back as lists (a JSON checkpoint):
they are converted, and a JSON round trip of the floats is exact.

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
from edgecode.learning.schedules import Schedule, parse_schedule

#: Default learning rate (applied to the MEAN gradient). It is below 1 / L for every bundled data
#: set once standardised (L = smoothness(model, X) on the training rows: breast_cancer 3.37,
#: digits 3.67, iris 1.45, wine 2.41, diabetes 3.95); pass ``1 / smoothness(model, X)`` for other
#: data.
DEFAULT_LR = 0.25
#: Default learning rate of Adam (its steps have size about lr whatever the gradient's scale).
DEFAULT_ADAM_LR = 1e-3
#: Keys every state dict carries ("schedule" too; a state without it has a constant rate).
STATE_KEYS = ("kind", "lr", "steps")


@runtime_checkable
class Optimizer(Protocol):
    """An optimizer whose whole state fits in ``state_dict()``."""

    @property
    def kind(self) -> str:
        """Registry name ("gd", "nesterov", "sgd" or "adam")."""
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


def _state_array(state: Mapping[str, Any], key: str) -> FloatArray | None:
    """``state[key]`` as a finite 1-D float64 array (None only before the first step)."""
    value = state[key]
    if value is None:
        if int(state["steps"]) > 0:
            raise ValueError(f"state[{key!r}] must be an array once steps > 0, got None")
        return None
    array = np.array(value, dtype=np.float64)
    if array.ndim != 1 or not np.all(np.isfinite(array)):
        raise ValueError(f"state[{key!r}] must be a finite 1-D array or None")
    return array


def _check_fraction(name: str, value: float, *, upper_open: bool = True) -> float:
    number = float(value)
    if not (0.0 <= number < 1.0 if upper_open else 0.0 <= number <= 1.0):
        raise ValueError(f"{name} must be in [0, 1{')' if upper_open else ']'}, got {value!r}")
    return number


def _repr_schedule(schedule: Schedule) -> str:
    return (
        ""
        if schedule.kind == "constant" and not schedule.warmup
        else f", schedule={schedule.spec!r}"
    )


class GradientDescent:
    """Plain gradient descent on the mean loss: ``x <- x - lr * gradient / n_rows``.

    >>> import numpy as np
    >>> GradientDescent(lr=0.5).step(np.array([2.0]), np.array([4.0]), n_rows=2).tolist()
    [1.0]
    """

    kind = "gd"

    def __init__(self, lr: float = DEFAULT_LR, schedule: str | Schedule | None = None) -> None:
        self.lr = _check_lr(lr)
        self.schedule = parse_schedule(schedule)
        self._steps = 0

    @property
    def steps(self) -> int:
        return self._steps

    def step(self, params: Any, gradient: Any, n_rows: int) -> FloatArray:
        x, g = _check_step_inputs(params, gradient, n_rows)
        lr = self.lr * self.schedule.factor(self._steps)
        self._steps += 1
        return x - (lr / int(n_rows)) * g

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "lr": self.lr,
            "steps": self._steps,
            "schedule": self.schedule.spec,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> GradientDescent:
        _check_state(state, cls.kind, ())
        optimizer = cls(lr=state["lr"], schedule=state.get("schedule"))
        optimizer._steps = int(state["steps"])
        return optimizer

    def __repr__(self) -> str:
        return (
            f"GradientDescent(lr={self.lr!r}, steps={self._steps}{_repr_schedule(self.schedule)})"
        )


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

    def __init__(
        self,
        lr: float = DEFAULT_LR,
        momentum: float | None = None,
        schedule: str | Schedule | None = None,
    ) -> None:
        self.lr = _check_lr(lr)
        self.schedule = parse_schedule(schedule)
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
        x_next = y - (self.lr * self.schedule.factor(self._steps) / int(n_rows)) * g
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
            "schedule": self.schedule.spec,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Nesterov:
        _check_state(state, cls.kind, ("momentum", "t", "iterate"))
        momentum = state["momentum"]
        optimizer = cls(
            lr=state["lr"],
            momentum=None if momentum is None else float(momentum),
            schedule=state.get("schedule"),
        )
        t = float(state["t"])
        if not (math.isfinite(t) and t >= 1.0):
            raise ValueError(f"state['t'] must be a finite number >= 1, got {state['t']!r}")
        iterate = _state_array(state, "iterate")
        optimizer._steps, optimizer._t, optimizer._iterate = int(state["steps"]), t, iterate
        return optimizer

    def __repr__(self) -> str:
        return (
            f"Nesterov(lr={self.lr!r}, momentum={self.momentum!r}, steps={self._steps}"
            f"{_repr_schedule(self.schedule)})"
        )


class SGD:
    """Stochastic-gradient-descent update with momentum, Nesterov momentum and (coupled) weight
    decay, as ``torch.optim.SGD`` (formulas in the module docstring). The state is the momentum
    buffer b_k.

    >>> import numpy as np
    >>> opt = SGD(lr=0.1, momentum=0.9)
    >>> x = opt.step(np.array([1.0]), np.array([1.0]), 1)     # b = 1, x = 1 - 0.1
    >>> opt.step(x, np.array([1.0]), 1).round(6).tolist()     # b = 0.9 + 1, x = 0.9 - 0.19
    [0.71]
    """

    kind = "sgd"

    def __init__(
        self,
        lr: float = DEFAULT_LR,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        schedule: str | Schedule | None = None,
    ) -> None:
        self.lr = _check_lr(lr)
        self.momentum = _check_fraction("momentum", momentum)
        if nesterov not in (True, False):
            raise ValueError(f"nesterov must be true or false, got {nesterov!r}")
        if nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.nesterov = bool(nesterov)
        self.weight_decay = _check_decay(weight_decay)
        self.schedule = parse_schedule(schedule)
        self._steps = 0
        self._buffer: FloatArray | None = None

    @property
    def steps(self) -> int:
        return self._steps

    def step(self, params: Any, gradient: Any, n_rows: int) -> FloatArray:
        x, g = _check_step_inputs(params, gradient, n_rows)
        _check_like(self._buffer, x)
        g = g / int(n_rows)
        if self.weight_decay:
            g = g + self.weight_decay * x
        direction = g
        if self.momentum:
            buffer = g if self._buffer is None else self.momentum * self._buffer + g
            direction = g + self.momentum * buffer if self.nesterov else buffer
            self._buffer = buffer.copy()
        lr = self.lr * self.schedule.factor(self._steps)
        self._steps += 1
        return x - lr * direction

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "lr": self.lr,
            "steps": self._steps,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "schedule": self.schedule.spec,
            "buffer": None if self._buffer is None else self._buffer.copy(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SGD:
        _check_state(state, cls.kind, ("momentum", "nesterov", "weight_decay", "buffer"))
        optimizer = cls(
            state["lr"],
            state["momentum"],
            state["nesterov"],
            state["weight_decay"],
            state.get("schedule"),
        )
        buffer = _state_array(state, "buffer") if optimizer.momentum else None
        optimizer._steps, optimizer._buffer = int(state["steps"]), buffer
        return optimizer

    def __repr__(self) -> str:
        return (
            f"SGD(lr={self.lr!r}, momentum={self.momentum!r}, nesterov={self.nesterov!r}, "
            f"weight_decay={self.weight_decay!r}, steps={self._steps}"
            f"{_repr_schedule(self.schedule)})"
        )


class Adam:
    """Adam with decoupled weight decay (AdamW), as ``torch.optim.AdamW`` with ``amsgrad=False``
    (formulas in the module docstring). The state is the moment estimates m and v.

    >>> import numpy as np
    >>> opt = Adam(lr=0.1)
    >>> opt.step(np.array([1.0, 1.0]), np.array([4.0, -0.5]), 1).round(6).tolist()
    [0.9, 1.1]
    """

    kind = "adam"

    def __init__(
        self,
        lr: float = DEFAULT_ADAM_LR,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        schedule: str | Schedule | None = None,
    ) -> None:
        self.lr = _check_lr(lr)
        self.beta1 = _check_fraction("beta1", beta1)
        self.beta2 = _check_fraction("beta2", beta2)
        eps = float(eps)
        if not (math.isfinite(eps) and eps > 0.0):
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
        self.eps = eps
        self.weight_decay = _check_decay(weight_decay)
        self.schedule = parse_schedule(schedule)
        self._steps = 0
        self._m: FloatArray | None = None
        self._v: FloatArray | None = None

    @property
    def steps(self) -> int:
        return self._steps

    def step(self, params: Any, gradient: Any, n_rows: int) -> FloatArray:
        x, g = _check_step_inputs(params, gradient, n_rows)
        _check_like(self._m, x)
        g = g / int(n_rows)
        lr = self.lr * self.schedule.factor(self._steps)
        t = self._steps + 1
        if self.weight_decay:
            x = x * (1.0 - lr * self.weight_decay)
        m = (
            (1.0 - self.beta1) * g
            if self._m is None
            else self.beta1 * self._m + (1.0 - self.beta1) * g
        )
        v = (
            (1.0 - self.beta2) * g * g
            if self._v is None
            else self.beta2 * self._v + (1.0 - self.beta2) * g * g
        )
        step_size = lr / (1.0 - self.beta1**t)
        denominator = np.sqrt(v) / math.sqrt(1.0 - self.beta2**t) + self.eps
        self._m, self._v, self._steps = m, v, t
        return x - step_size * (m / denominator)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "lr": self.lr,
            "steps": self._steps,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "schedule": self.schedule.spec,
            "m": None if self._m is None else self._m.copy(),
            "v": None if self._v is None else self._v.copy(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Adam:
        _check_state(state, cls.kind, ("beta1", "beta2", "eps", "weight_decay", "m", "v"))
        optimizer = cls(
            state["lr"],
            state["beta1"],
            state["beta2"],
            state["eps"],
            state["weight_decay"],
            state.get("schedule"),
        )
        m, v = _state_array(state, "m"), _state_array(state, "v")
        if (m is None) != (v is None) or (m is not None and v is not None and m.shape != v.shape):
            raise ValueError("state['m'] and state['v'] must be arrays of one shape, or both None")
        if v is not None and np.any(v < 0):
            raise ValueError("state['v'] must be >= 0 (a second-moment estimate)")
        optimizer._steps, optimizer._m, optimizer._v = int(state["steps"]), m, v
        return optimizer

    def __repr__(self) -> str:
        return (
            f"Adam(lr={self.lr!r}, beta1={self.beta1!r}, beta2={self.beta2!r}, eps={self.eps!r}, "
            f"weight_decay={self.weight_decay!r}, steps={self._steps}"
            f"{_repr_schedule(self.schedule)})"
        )


def _check_decay(weight_decay: float) -> float:
    value = float(weight_decay)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    return value


def _check_like(state: FloatArray | None, x: FloatArray) -> None:
    if state is not None and state.shape != x.shape:
        raise InvalidInput(
            f"params must have shape {state.shape} like the previous steps, got {x.shape}"
        )


_OPTIMIZERS: dict[str, type[GradientDescent] | type[Nesterov] | type[SGD] | type[Adam]] = {
    GradientDescent.kind: GradientDescent,
    Nesterov.kind: Nesterov,
    SGD.kind: SGD,
    Adam.kind: Adam,
}
#: Names accepted by :func:`get_optimizer`.
OPTIMIZER_NAMES: tuple[str, ...] = tuple(_OPTIMIZERS)


def get_optimizer(name: str, lr: float | None = None, **options: Any) -> Optimizer:
    """A fresh optimizer from a name or a spec ``NAME[:KEY=VALUE,...]``.

    Names: "gd", "nesterov" (``momentum``), "sgd" (``momentum``, ``nesterov``,
    ``weight_decay``), "adam" (``beta1``, ``beta2``, ``eps``, ``weight_decay``); every one takes
    ``schedule`` (a spec of :mod:`edgecode.learning.schedules`, as a keyword only, since it has
    its own colons and commas). Values in the spec are numbers, ``true``/``false`` or ``none``.
    ``lr=None`` is the kind's default (:data:`DEFAULT_LR`, or :data:`DEFAULT_ADAM_LR` for Adam).
    A bad name, key or value raises ``ValueError`` naming it: call this at job submission.

    >>> get_optimizer("nesterov", lr=0.1)
    Nesterov(lr=0.1, momentum=None, steps=0)
    >>> get_optimizer("sgd:momentum=0.9,nesterov=true", lr=0.05, schedule="step:every=100")
    SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.0, steps=0, schedule='step:every=100,gamma=0.1')
    """
    kind, _, rest = str(name).partition(":")
    if kind not in _OPTIMIZERS:
        raise ValueError(f"name must be one of {list(OPTIMIZER_NAMES)}, got {kind!r}")
    parsed = _parse_options(name, rest)
    clash = sorted(parsed.keys() & options.keys())
    if clash:
        raise ValueError(f"options: {clash} given both in {name!r} and as keywords")
    if lr is not None:
        options["lr"] = lr
    try:
        return _OPTIMIZERS[kind](**parsed, **options)
    except TypeError:
        raise ValueError(
            f"options: {kind!r} does not accept {sorted({**parsed, **options})}"
        ) from None


def _parse_options(spec: str, text: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    words = {"true": True, "false": False, "none": None}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, raw = item.partition("=")
        if not eq or not key.isidentifier():
            raise ValueError(f"optimizer {spec!r}: {item!r} is not KEY=VALUE")
        if raw.lower() in words:
            options[key] = words[raw.lower()]
            continue
        try:
            options[key] = float(raw)
        except ValueError:
            raise ValueError(f"optimizer {spec!r}: {key} must be a number, got {raw!r}") from None
    return options


def optimizer_from_state(state: Mapping[str, Any]) -> Optimizer:
    """Rebuild the optimizer that produced ``state`` (from any ``state_dict()``, also after a
    JSON round trip that turned its arrays into lists)."""
    kind = state.get("kind")
    if kind not in _OPTIMIZERS:
        raise ValueError(f"state['kind'] must be one of {list(OPTIMIZER_NAMES)}, got {kind!r}")
    return _OPTIMIZERS[kind].from_state(state)
