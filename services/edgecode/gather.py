"""First-k-of-n completion: collect the outcomes of concurrent calls as they finish.

A straggler cut-off is a deadline or a first-k completion, never a sleep: callers pull outcomes
in completion order with :meth:`Gather.next` until they can decode, then cancel the rest.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)


class Pending(Protocol):
    """What a concurrent call must offer (grpc futures do)."""

    def add_done_callback(self, fn: Callable[[Any], None]) -> None: ...

    def cancel(self) -> bool: ...

    def result(self, timeout: float | None = None) -> Any: ...


class Gather(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._done: queue.Queue[tuple[K, Pending, float]] = queue.Queue()
        self._pending: dict[K, Pending] = {}
        self._clock = clock
        self.started = clock()

    def submit(self, key: K, call: Pending) -> None:
        self._pending[key] = call

        # Stamp completion in the callback: the time a result is taken off the queue can be
        # much later (while the caller handles earlier results).
        def done(_future: object, key: K = key, call: Pending = call) -> None:
            self._done.put((key, call, self._clock()))

        call.add_done_callback(done)

    @property
    def outstanding(self) -> list[K]:
        return list(self._pending)

    def next(self, deadline: float) -> tuple[K, Any, BaseException | None, float] | None:
        """The next finished call as ``(key, result, error, seconds since start)``; None when
        the deadline (a ``clock()`` value) passes first or nothing is outstanding."""
        if not self._pending:
            return None
        remaining = deadline - self._clock()
        if remaining <= 0:
            return None
        try:
            key, call, finished = self._done.get(timeout=remaining)
        except queue.Empty:
            return None
        self._pending.pop(key, None)
        elapsed = finished - self.started
        try:
            return key, call.result(timeout=0), None, elapsed
        except BaseException as exc:  # a failed or cancelled call is an outcome, not a crash
            return key, None, exc, elapsed

    def cancel_rest(self) -> list[K]:
        """Cancel every outstanding call; returns their keys (the stragglers)."""
        keys = list(self._pending)
        for call in self._pending.values():
            call.cancel()
        self._pending.clear()
        return keys
