"""Learning-rate schedules: the factor ``f(k)`` that scales the base rate at step k (k = 0, 1, ..).

A schedule is a pure function of the step count, so an optimizer's checkpoint only needs the
schedule's spec string and its step count. Specs::

    constant                                   f(k) = 1
    step:every=E[,gamma=G]                     f(k) = G ** floor(k / E)          (G = 0.1)
    cosine:total=T[,floor=F]                   f(k) = F + (1 - F) (1 + cos(pi min(k, T) / T)) / 2
    exponential:gamma=G                        f(k) = G ** k

Any of them takes ``warmup=W``: a linear ramp ``f(k) * min(1, (k + 1) / W)`` over the first W
steps (W = 0, the default, is no warm-up).

Example
-------
>>> s = parse_schedule("cosine:total=10,warmup=2")
>>> [round(s.factor(k), 3) for k in (0, 1, 2, 10, 20)]
[0.5, 0.976, 0.905, 0.0, 0.0]
>>> parse_schedule(s.spec) == s
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Schedule kinds and their keys (required first, then optional with defaults).
KINDS: dict[str, dict[str, float | None]] = {
    "constant": {},
    "step": {"every": None, "gamma": 0.1},
    "cosine": {"total": None, "floor": 0.0},
    "exponential": {"gamma": None},
}
_INTEGER_KEYS = ("every", "total", "warmup")


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: ``kind``, its options (sorted ``(key, value)`` pairs) and ``warmup``."""

    kind: str = "constant"
    options: tuple[tuple[str, float], ...] = ()
    warmup: int = 0

    @property
    def spec(self) -> str:
        """The spec string; ``parse_schedule(s.spec) == s``."""
        items = [f"{k}={_number(v)}" for k, v in self.options]
        if self.warmup:
            items.append(f"warmup={self.warmup}")
        return self.kind + (":" + ",".join(items) if items else "")

    def factor(self, step: int) -> float:
        """The learning-rate factor at step ``step`` (0-based count of steps already taken)."""
        o = dict(self.options)
        if self.kind == "constant":
            f = 1.0
        elif self.kind == "step":
            f = o["gamma"] ** (step // int(o["every"]))
        elif self.kind == "cosine":
            total = o["total"]
            f = o["floor"] + (1.0 - o["floor"]) * 0.5 * (
                1.0 + math.cos(math.pi * min(step, total) / total)
            )
        else:
            f = o["gamma"] ** step
        if self.warmup:
            f *= min(1.0, (step + 1) / self.warmup)
        return float(f)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def parse_schedule(spec: str | Schedule | None) -> Schedule:
    """A :class:`Schedule` from a spec string (``None`` or "" is constant); ``ValueError``
    naming the bad key otherwise."""
    if isinstance(spec, Schedule):
        return spec
    text = (spec or "constant").strip()
    kind, _, rest = text.partition(":")
    if kind not in KINDS:
        raise ValueError(f"schedule kind must be one of {list(KINDS)}, got {kind!r} in {text!r}")
    given: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, raw = item.partition("=")
        if not eq or (key not in KINDS[kind] and key != "warmup"):
            raise ValueError(
                f"schedule {text!r}: {item!r} is not KEY=VALUE with KEY one of "
                f"{[*KINDS[kind], 'warmup']}"
            )
        try:
            given[key] = float(raw)
        except ValueError:
            raise ValueError(f"schedule {text!r}: {key} must be a number, got {raw!r}") from None
    options = {k: given.get(k, default) for k, default in KINDS[kind].items()}
    missing = [k for k, v in options.items() if v is None]
    if missing:
        raise ValueError(f"schedule {text!r} needs {missing}")
    values = {k: float(v) for k, v in options.items() if v is not None}
    warmup = given.get("warmup", 0.0)
    _check_values(text, {**values, "warmup": warmup})
    return Schedule(kind, tuple(sorted(values.items())), int(warmup))


def _check_values(text: str, values: dict[str, float]) -> None:
    for key, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"schedule {text!r}: {key} must be finite, got {value}")
        if key in _INTEGER_KEYS and (value != int(value) or value < (0 if key == "warmup" else 1)):
            least = 0 if key == "warmup" else 1
            raise ValueError(f"schedule {text!r}: {key} must be an integer >= {least}, got {value}")
    if "gamma" in values and not 0.0 < values["gamma"] <= 1.0:
        raise ValueError(f"schedule {text!r}: gamma must be in (0, 1], got {values['gamma']}")
    if "floor" in values and not 0.0 <= values["floor"] <= 1.0:
        raise ValueError(f"schedule {text!r}: floor must be in [0, 1], got {values['floor']}")
