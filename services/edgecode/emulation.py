"""Straggler emulation for a worker or a peer started with ``--straggle MODEL``.

Shared by the roles that emulate slow compute (worker, peer), so it lives below them.

The emulated compute of a round is ``f * (shift + X) * M`` seconds on top of the real compute
(see :mod:`edgecode.stragglers`), where f is the worker's fraction of the data and
``shift = compute_seconds`` (the emulated seconds to process the WHOLE data set), so a worker
holding the fraction f spends about ``f * compute_seconds`` when it does not straggle, however
finely the data is partitioned.

Spec strings: ``MODEL[:key=value,...]`` with MODEL one of

- ``none``: no emulation beyond ``--compute-seconds``;
- ``exp``: shifted exponential, keys ``rate`` (of the random part for the whole data set) and
  ``shift`` (seconds for the whole data set, added to ``compute_seconds``);
- ``bernoulli``: keys ``p`` (straggle probability per round), ``factor`` (slow-down);
- ``markov``: keys ``p_slow``, ``p_active``, ``q_as``, ``q_sa``, ``factor``, ``slow`` (0/1 start);
- ``slow``: a persistent straggler, key ``factor`` (every round ``factor`` times slower).

Example: ``bernoulli:p=0.2,factor=5``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from edgecode.planning.spec import WorkerSpec
from edgecode.stragglers import WorkerRuntime, runtime_for

ALIASES = {"p": "p_straggle", "factor": "slow_factor"}
MODELS = {
    "none": "shifted_exponential",
    "exp": "shifted_exponential",
    "bernoulli": "bernoulli",
    "markov": "markov",
    "slow": "markov",
}
#: WorkerSpec fields a --straggle spec does not set (the model is its name; links are flags).
NOT_KEYS = ("name", "model", "link_seconds")
WORKER_PREFIX = "worker 'worker': "
#: Rate used when no random part is wanted (mean 1e-9 s for the whole data set).
DETERMINISTIC_RATE = 1e9


@dataclass(frozen=True)
class StraggleConfig:
    spec: WorkerSpec = field(
        default_factory=lambda: WorkerSpec(name="worker", shift=0.0, rate=DETERMINISTIC_RATE)
    )
    compute_seconds: float = 0.0

    @property
    def emulates(self) -> bool:
        return (
            self.compute_seconds > 0
            or self.spec.shift > 0
            or self.spec.slow_factor > 1
            or self.spec.rate < DETERMINISTIC_RATE
        )

    def runtime(self, n_partitions: int) -> WorkerRuntime:
        return runtime_for(replace(self.spec, shift=self.spec.shift + self.compute_seconds))


def parse_straggle(text: str, compute_seconds: float = 0.0) -> StraggleConfig:
    """Parse a ``--straggle`` spec; a ValueError names the bad part."""
    if compute_seconds < 0 or not math.isfinite(compute_seconds):
        raise ValueError(f"compute_seconds must be >= 0 seconds, got {compute_seconds}")
    name, _, rest = text.strip().partition(":")
    if name not in MODELS:
        raise ValueError(f"--straggle: model must be one of {sorted(MODELS)}, got {name!r}")
    values: dict[str, float | bool | str] = {
        "model": MODELS[name],
        "rate": DETERMINISTIC_RATE,
        "shift": 0.0,
    }
    if name == "slow":
        values.update(slow=True, p_slow=1.0, q_as=0.0, q_sa=0.0, slow_factor=5.0)
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, raw = item.partition("=")
        key = ALIASES.get(key.strip(), key.strip())
        if not sep or key not in WorkerSpec.__dataclass_fields__ or key in NOT_KEYS:
            raise ValueError(f"--straggle: bad item {item!r} (expected key=value, e.g. factor=5)")
        try:
            values[key] = bool(int(raw)) if key == "slow" else float(raw)
        except ValueError:
            raise ValueError(f"--straggle: {key} must be a number, got {raw!r}") from None
    try:
        spec = WorkerSpec(name="worker", **{"shift": 0.0, **values})  # type: ignore[arg-type]
    except ValueError as exc:  # WorkerSpec names the key; the worker's name means nothing here
        raise ValueError(f"--straggle: {str(exc).removeprefix(WORKER_PREFIX)}") from None
    return StraggleConfig(spec=spec, compute_seconds=compute_seconds)


def emulate(
    seconds: float,
    cancelled: threading.Event,
    newer: threading.Event,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Emulated compute of ``seconds`` that stops as soon as the work is cancelled or superseded
    (checked every 5 ms)."""
    deadline = clock() + seconds
    while not (cancelled.is_set() or newer.is_set()):
        remaining = deadline - clock()
        if remaining <= 0:
            return
        cancelled.wait(min(remaining, 0.005))
