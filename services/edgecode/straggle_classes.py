"""Two straggler classes for a whole cluster: the ``--straggle-classes`` spec and the class filter.

The model (Johri et al.; papers.md section 2, and :mod:`edgecode.stragglers` for the per-worker
samplers): every node is *slow* or *active*; a slow node straggles in a round with probability
``p_slow``, an active one with ``p_active``; classes persist as a two-state Markov chain
(``q_as = P(active -> slow)``, ``q_sa = P(slow -> active)``). This module holds what the
services need around it and :mod:`edgecode.stragglers` re-exports it:

- :class:`StraggleClasses` / :func:`parse_straggle_classes`: the cluster-wide spec, which nodes
  start slow (named, or drawn from ``--seed``), and each node's per-worker ``--straggle`` spec;
- :class:`ClassFilter`: the coordinator's estimate of each node's class from live response
  times (a forward filter on the chain), fed by :func:`lateness`.

Pure numpy; imports nothing from edgecode at module level.

Example
-------
>>> import numpy as np
>>> classes = parse_straggle_classes("slow=2:p=0.8,active:p=0.05,q_as=0.02,q_sa=0.05")
>>> classes.slow_count, classes.p_slow, classes.p_active, classes.fixed
(2, 0.8, 0.05, False)
>>> classes.pick_slow(["a", "b", "c", "d"], np.random.default_rng(0))
('c', 'd')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:  # planning imports edgecode.stragglers, which imports this module
    from edgecode.planning.spec import WorkerSpec

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def _check_probability(name: str, value: float) -> float:
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


#: Slow-down of a straggling round when the spec names none (the worker ``slow`` model's default).
DEFAULT_SLOW_FACTOR = 5.0
#: Likelihoods are clipped to [LIKELIHOOD_FLOOR, 1 - LIKELIHOOD_FLOOR]: one surprise cannot lock
#: a posterior at exactly 0 or 1.
LIKELIHOOD_FLOOR = 1e-3
#: Smallest class-switch probability the filter assumes (fixed classes included), so it follows a
#: node whose class does change after all. Small: with it, a long-active node must be late about
#: log(1 / MIN_SWITCH) / log(p_slow / p_active) rounds in a row before it looks slow.
MIN_SWITCH = 1e-5
#: A finished worker was late when it took more than LATE_FACTOR x the round's median response.
LATE_FACTOR = 2.0

_CLASS_KEYS = ("p_slow", "p_active", "q_as", "q_sa")


@dataclass(frozen=True)
class StraggleClasses:
    """Two-class model of a whole cluster, parsed from ``--straggle-classes``.

    ``slow_count`` nodes start slow: ``slow_names`` when the spec names them, else drawn by
    :meth:`pick_slow`. A slow node straggles (``slow_factor`` times slower) with probability
    ``p_slow`` per round, an active one with ``p_active``; classes move active -> slow with
    probability ``q_as`` and slow -> active with ``q_sa`` (``fixed`` when both are 0).
    """

    slow_count: int
    slow_names: tuple[str, ...] = ()
    p_slow: float = 1.0
    p_active: float = 0.0
    q_as: float = 0.0
    q_sa: float = 0.0
    slow_factor: float = DEFAULT_SLOW_FACTOR

    def __post_init__(self) -> None:
        if int(self.slow_count) != self.slow_count or self.slow_count < 0:
            raise ValueError(f"slow count must be an integer >= 0, got {self.slow_count!r}")
        if self.slow_names and len(set(self.slow_names)) != self.slow_count:
            raise ValueError(
                f"slow names must be {self.slow_count} distinct, got {self.slow_names}"
            )
        for key in _CLASS_KEYS:
            _check_probability(key, getattr(self, key))
        if not (math.isfinite(self.slow_factor) and self.slow_factor >= 1.0):
            raise ValueError(f"factor must be >= 1, got {self.slow_factor!r}")

    @property
    def fixed(self) -> bool:
        """Whether classes never change (``q_as = q_sa = 0``)."""
        return self.q_as == 0.0 and self.q_sa == 0.0

    def pick_slow(self, names: Sequence[str], rng: np.random.Generator) -> tuple[str, ...]:
        """The initially slow nodes among ``names``: the named ones, else ``slow_count`` drawn
        uniformly with ``rng`` (build it from ``--seed``). Returned in the order of ``names``."""
        if self.slow_names:
            unknown = sorted(set(self.slow_names) - set(names))
            if unknown:
                raise ValueError(f"--straggle-classes names unknown nodes {unknown}")
            chosen = set(self.slow_names)
        else:
            if self.slow_count > len(names):
                raise ValueError(f"slow={self.slow_count} but only {len(names)} nodes")
            chosen = {names[i] for i in rng.choice(len(names), self.slow_count, replace=False)}
        return tuple(name for name in names if name in chosen)

    def straggle_spec(self, slow: bool) -> str:
        """The worker ``--straggle`` spec of one node (``markov:...``) in class ``slow``."""
        keys = {key: getattr(self, key) for key in _CLASS_KEYS}
        items = [f"{k}={v!r}" for k, v in keys.items()]
        return "markov:" + ",".join([*items, f"factor={self.slow_factor!r}", f"slow={int(slow)}"])

    def worker_spec(
        self, name: str, slow: bool, shift: float, rate: float, link_seconds: float = 0.0
    ) -> WorkerSpec:
        """A ``markov`` :class:`~edgecode.planning.spec.WorkerSpec` of one node in class ``slow``."""
        from edgecode.planning.spec import WorkerSpec  # planning imports this module

        return WorkerSpec(
            name, shift, rate, link_seconds, "markov", self.p_slow, self.p_active, self.q_as,
            self.q_sa, slow_factor=self.slow_factor, slow=slow,
        )  # fmt: skip


def parse_straggle_classes(text: str) -> StraggleClasses:
    """Parse ``--straggle-classes``, e.g. ``slow=3:p=0.8,active:p=0.05,q_as=0.02,q_sa=0.05``.

    Items (comma separated, any order): ``slow=COUNT[:p=P]`` or ``slow=NAME+NAME...[:p=P]``
    (required), ``active[:p=P]``, ``q_as=Q``, ``q_sa=Q``, ``factor=F`` (slow-down of a straggling
    round, default 5). Defaults: ``p_slow = 1``, ``p_active = 0``, fixed classes. A ValueError
    names the bad item.
    """
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        head, _, option = item.partition(":")
        key, sep, raw = head.partition("=")
        key = key.strip()
        try:
            if key == "slow" and sep:
                names = tuple(n.strip() for n in raw.split("+"))
                counted = raw.strip().isdigit()
                if not counted and (not all(names) or _is_number(raw)):
                    raise ValueError("slow= takes a whole count or node names joined by +")
                values["slow_count"] = int(raw) if counted else len(names)
                values["slow_names"] = () if counted else names
            elif key in ("q_as", "q_sa", "factor") and sep and not option:
                values["slow_factor" if key == "factor" else key] = float(raw)
            elif key != "active" or sep:
                raise ValueError("unknown key, or a key without its =value")
            if option:
                name, eq, number = option.partition("=")
                if key not in ("slow", "active") or name.strip() != "p" or not eq:
                    raise ValueError("only slow and active take :p=P")
                values["p_slow" if key == "slow" else "p_active"] = float(number)
        except ValueError as exc:
            raise ValueError(
                f"--straggle-classes: bad item {item!r} ({exc}); expected e.g. "
                "slow=3:p=0.8,active:p=0.05,q_as=0.02,q_sa=0.05"
            ) from None
    if "slow_count" not in values:
        raise ValueError(f"--straggle-classes: needs slow=COUNT or slow=NAMES, got {text!r}")
    return StraggleClasses(**values)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class ClassFilter:
    """Forward filter of every node's class (slow / active) from whether it was late.

    Hidden chain per node: ``c_r`` in {active, slow}, moving active -> slow w.p. ``q_as`` and
    slow -> active w.p. ``q_sa`` (both floored at :data:`MIN_SWITCH`). Observation: ``o_r = 1``
    (late) w.p. ``p_slow`` when slow, ``p_active`` when active (clipped by
    :data:`LIKELIHOOD_FLOOR`). The posterior ``pi_r = P(c_r = slow | o_1..o_r)`` follows::

        predict   pi- = pi (1 - q_sa) + (1 - pi) q_as          (before every round but the first)
        update    pi  = pi- L_slow / (pi- L_slow + (1 - pi-) L_active),   L_c = P(o_r | c)

    A node not observed in a round (``observed`` False) is only predicted. Shapes: ``(n,)``.

    Example
    -------
    >>> f = ClassFilter(2, p_slow=0.8, p_active=0.05, q_as=0.0, q_sa=0.0, prior_slow=0.2)
    >>> for _ in range(4):
    ...     _ = f.update(np.array([True, False]))
    >>> f.classify().tolist()
    [True, False]
    """

    def __init__(
        self,
        n: int,
        p_slow: float,
        p_active: float,
        q_as: float,
        q_sa: float,
        prior_slow: float | None = None,
    ) -> None:
        if int(n) != n or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        for key, value in (("p_slow", p_slow), ("p_active", p_active), ("q_as", q_as)):
            _check_probability(key, value)
        _check_probability("q_sa", q_sa)
        moves = q_as + q_sa
        prior = (q_as / moves if moves > 0 else 0.5) if prior_slow is None else prior_slow
        self._posterior = np.full(int(n), _check_probability("prior_slow", prior))
        self._late = np.clip([p_slow, p_active], LIKELIHOOD_FLOOR, 1 - LIKELIHOOD_FLOOR)
        self._switch = (max(q_as, MIN_SWITCH), max(q_sa, MIN_SWITCH))
        self._started = False

    @classmethod
    def from_classes(cls, classes: StraggleClasses, n: int, wait: int | None = None) -> ClassFilter:
        """A filter for ``n`` nodes of the spec's model; prior ``slow_count / n`` (fixed classes)
        or the chain's stationary slow probability.

        With ``wait = r`` (the master ends the round at the r-th answer) a node that did not
        straggle is still cut off, hence "late", when fewer than ``m - r`` of the ``m``
        expected non-stragglers were faster; the late probabilities of both classes are raised
        by ``(1 - p) (m - r) / m`` to match (nothing when r >= m).
        """
        moves = classes.q_as + classes.q_sa
        prior = classes.q_as / moves if moves > 0 else min(1.0, classes.slow_count / n)
        expected_late = n * (prior * classes.p_slow + (1 - prior) * classes.p_active)
        on_time = n - expected_late
        cut = 0.0 if wait is None or on_time <= 0 else max(0.0, on_time - wait) / on_time
        p_slow = classes.p_slow + (1 - classes.p_slow) * cut
        p_active = classes.p_active + (1 - classes.p_active) * cut
        return cls(n, p_slow, p_active, classes.q_as, classes.q_sa, prior)

    @property
    def slow_probability(self) -> FloatArray:
        """Posterior probability that each node is slow (in the last observed round)."""
        return self._posterior.copy()

    def _predicted(self) -> FloatArray:
        q_as, q_sa = self._switch
        return np.asarray(self._posterior * (1 - q_sa) + (1 - self._posterior) * q_as)

    def update(self, late: ArrayLike, observed: ArrayLike | None = None) -> FloatArray:
        """Take one round's observations (bool, shape (n,)); returns the new posterior."""
        late_a = np.asarray(late, dtype=bool)
        seen = np.ones_like(late_a) if observed is None else np.asarray(observed, dtype=bool)
        if late_a.shape != self._posterior.shape or seen.shape != late_a.shape:
            raise ValueError(f"late/observed must have shape {self._posterior.shape}")
        prior = self._predicted() if self._started else self._posterior
        self._started = True
        slow_like = np.where(late_a, self._late[0], 1 - self._late[0])
        active_like = np.where(late_a, self._late[1], 1 - self._late[1])
        posterior = prior * slow_like / (prior * slow_like + (1 - prior) * active_like)
        self._posterior = np.where(seen, posterior, prior)
        return self.slow_probability

    def straggle_probability(self) -> FloatArray:
        """Predicted probability that each node is late in the next round."""
        slow = self._predicted() if self._started else self._posterior
        return np.asarray(slow * self._late[0] + (1 - slow) * self._late[1])

    def classify(self, threshold: float = 0.5) -> BoolArray:
        """Nodes whose posterior slow probability exceeds ``threshold``."""
        return np.asarray(self._posterior > threshold)


def lateness(response_seconds: ArrayLike, late_factor: float = LATE_FACTOR) -> BoolArray:
    """Which nodes were late in one round, from what the master saw.

    ``response_seconds[w]`` is node w's response time, NaN or inf when it had not answered when
    the round ended (it was cancelled). A cancelled node was late; a finished one was late when
    it took more than ``late_factor`` x the median finished response (a straggling round is
    ``slow_factor`` times slower, so the two populations separate). Nothing finished: all late.
    """
    times = np.asarray(response_seconds, dtype=np.float64)
    if not late_factor > 0:
        raise ValueError(f"late_factor must be > 0, got {late_factor!r}")
    finished = np.isfinite(times)
    if not finished.any():
        return np.ones(times.shape, dtype=np.bool_)
    threshold = float(late_factor) * float(np.median(times[finished]))
    return np.asarray(~finished | (np.where(finished, times, 0.0) > threshold))


__all__ = [
    "DEFAULT_SLOW_FACTOR",
    "LATE_FACTOR",
    "ClassFilter",
    "StraggleClasses",
    "lateness",
    "parse_straggle_classes",
]
