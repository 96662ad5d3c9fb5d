"""The round engine: the ONE collector every role uses to fan a round out and stop waiting.

A round is a set of concurrent calls, its *sources*: an edge's calls to its workers, the master's
streams from its edges, the matrix master's calls to its workers. Each source delivers
:class:`Message` s (a unary call one, a stream any number) and then ends, with or without an
error. The collector validates every message (known sender, expected shape, finite values: a
bad message counts as a failed sender, never reaches the rule) and offers it to a *rule*
(:class:`edgecode.codes.combine.Rule`), which says when the round is complete and what it yields.
At the first "complete" the collector cancels every source still running; when the deadline
passes first (or every source ended), the rule gets one last word (:meth:`Rule.at_deadline`:
the best approximate combination, or None and the round fails with the rule's reason).

The rules live in :mod:`edgecode.rules` (exact decoding from any decodable set, all-of-n,
fastest n - s rescaled, first-k of a matrix code), :mod:`edgecode.verification` (exact decoding
checked against spare arrivals) and next to their codes (partial recovery, least squares by a
deadline).

A straggler cut-off is a deadline or a first-k completion, never a sleep (STYLE.md, 10).

Example
-------
>>> import numpy as np
>>> from edgecode.codes.flat import cyclic_repetition
>>> code = cyclic_repetition(3, 1)
>>> partials = np.eye(3)  # g_j = e_j, so the full gradient is all ones
>>> messages = code.B @ partials
>>> collector = Round(senders={"w0": 0, "w1": 1, "w2": 2}, shape=(3,), deadline_seconds=1.0)
>>> for name in ("w2", "w0"):
...     collector.add(Ready(name, Message(name, messages[int(name[1])])))
>>> from edgecode.rules import ExactRule
>>> outcome = collector.decide(ExactRule(3, code.decode_vector))
>>> np.round(outcome.decoded.value, 12).tolist(), outcome.decoded.used
([1.0, 1.0, 1.0], (2, 0))
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgecode.codes.combine import Decoded, Rule
from edgecode.errors import InvalidInput, RoundFailed
from edgecode.records import Timing

log = logging.getLogger(__name__)

#: The queue entry that ends a round's arrivals at once (:meth:`Round.interrupt`).
_INTERRUPT = "\x00interrupt"

FloatArray = np.ndarray


# ---- what goes in ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One message of a source: whose vector it is, the vector, and what it reports.

    ``sender`` names the node whose vector this is (an edge in decode mode, a worker when the
    edge forwards); ``timings`` are the timings the message carries (an edge reports how its
    workers did).
    """

    sender: str
    vector: FloatArray
    compute_seconds: float = 0.0
    timings: tuple[Timing, ...] = ()
    #: nodes the source caught lying (an edge's verifying rule), left out of the vector
    suspects: tuple[str, ...] = ()


class Pending(Protocol):
    """A started unary call whose result is a :class:`Message` (grpc futures, adapted)."""

    def add_done_callback(self, fn: Callable[[Any], None]) -> None: ...

    def cancel(self) -> bool: ...

    def result(self, timeout: float | None = None) -> Message: ...


#: deliver(source name, message or None at the end, error or None)
Deliver = Callable[[str, Message | None, BaseException | None], None]


class Source(Protocol):
    """A started call that delivers messages to a round, then ends."""

    name: str

    def start(self, deliver: Deliver) -> None:
        """Begin delivering: ``deliver(name, message, None)`` per message, then exactly one
        ``deliver(name, None, error_or_None)``."""
        ...

    def cancel(self) -> None: ...


class FutureSource:
    """A unary call: one message (its result) or its error."""

    def __init__(self, name: str, call: Pending) -> None:
        self.name = name
        self._call = call

    def start(self, deliver: Deliver) -> None:
        def done(_future: object) -> None:
            try:
                message = self._call.result(timeout=0)
            except BaseException as exc:  # a failed or cancelled call is an outcome, not a crash
                deliver(self.name, None, exc)
                return
            deliver(self.name, message, None)
            deliver(self.name, None, None)

        self._call.add_done_callback(done)

    def cancel(self) -> None:
        self._call.cancel()


class StreamSource:
    """A server stream of messages, drained on ``executor``; ``cancel`` ends the call.

    With ``expected`` (the sender's protocol fixes how many messages a call carries, e.g. an
    edge that decodes sends one), the source ends after that many: the end is delivered at
    once, not when the call's status arrives, and ``cancel`` leaves the call to finish on its
    own (cancelling a call that has said everything costs both sides a reset for nothing).
    What the call sends after them is read and dropped."""

    def __init__(
        self,
        name: str,
        messages: Iterable[Message],
        cancel: Callable[[], object],
        executor: Executor,
        expected: int | None = None,
    ) -> None:
        if expected is not None and expected < 1:
            raise InvalidInput(f"expected must be None or >= 1 messages, got {expected}")
        self.name = name
        self._messages = messages
        self._cancel = cancel
        self._executor = executor
        self._expected = expected
        self._complete = threading.Event()

    def start(self, deliver: Deliver) -> None:
        def drain() -> None:
            error: BaseException | None = None
            count = 0
            try:
                for message in self._messages:
                    if self._complete.is_set():
                        continue  # past what the protocol allows: dropped
                    deliver(self.name, message, None)
                    count += 1
                    if count == self._expected:
                        self._complete.set()
                        deliver(self.name, None, None)
            except BaseException as exc:  # a failed or cancelled stream ends its contribution
                error = exc
            if not self._complete.is_set():
                deliver(self.name, None, error)

        self._executor.submit(drain)

    def cancel(self) -> None:
        if not self._complete.is_set():
            self._cancel()


class Ready:
    """A source that already has its messages (tests, and results computed in-process)."""

    def __init__(self, name: str, *messages: Message, error: BaseException | None = None) -> None:
        self.name = name
        self._messages = messages
        self._error = error

    def start(self, deliver: Deliver) -> None:
        for message in self._messages:
            deliver(self.name, message, None)
        deliver(self.name, None, self._error)

    def cancel(self) -> None:
        pass


# ---- what comes out ----------------------------------------------------------------------------


class RoundObserver(Protocol):
    """What a round tells the metrics (each role's metrics implement it; default: nothing)."""

    def response(self, node: str, seconds: float) -> None:
        """A source answered (or was cut off) after ``seconds``."""
        ...

    def received(self, nbytes: int) -> None: ...

    def decoded(self, seconds: float) -> None:
        """Seconds spent in the rule (decoding) this round."""
        ...


class NoObserver:
    """The default observer: records nothing."""

    def response(self, node: str, seconds: float) -> None:
        pass

    def received(self, nbytes: int) -> None:
        pass

    def decoded(self, seconds: float) -> None:
        pass


NO_OBSERVER = NoObserver()


@dataclass(frozen=True)
class Outcome:
    """A finished round: what the rule yielded, how every node did, who was not waited for."""

    decoded: Decoded
    #: one per source: seconds to its first usable message (or to its end / the cut-off)
    sources: tuple[Timing, ...]
    #: the timings the messages carried (an edge's workers), last report per node
    reported: tuple[Timing, ...]
    #: sources cancelled or failed: the stragglers of this layer
    stragglers: tuple[str, ...]
    seconds: float
    #: nodes caught lying this round: by this layer's rule, or reported by the sources
    suspects: tuple[str, ...] = ()

    @property
    def timings(self) -> tuple[Timing, ...]:
        """The workers' timings: reported by the edges when there are any, else the sources'."""
        return self.reported or self.sources


# ---- the collector -----------------------------------------------------------------------------


class Round:
    """One round's arrivals: sources deliver, the owner pulls until its rule is satisfied.

    ``senders`` maps a message's sender name to the rule's sender index (messages from other
    names are refused); ``shape`` is the shape every vector must have (None entries match any
    length). The deadline runs from construction.
    """

    def __init__(
        self,
        senders: Mapping[str, int],
        shape: Sequence[int | None],
        deadline_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        observer: RoundObserver = NO_OBSERVER,
    ) -> None:
        if not (deadline_seconds > 0 and np.isfinite(deadline_seconds)):
            raise InvalidInput(f"deadline_seconds must be > 0, got {deadline_seconds}")
        self._senders = dict(senders)
        self._shape = tuple(shape)
        self._clock = clock
        self._observer = observer
        self.started = clock()
        self.deadline = self.started + deadline_seconds
        self._queue: queue.Queue[tuple[str, Message | None, BaseException | None, float]] = (
            queue.Queue()
        )
        self._open: dict[str, Source] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._first: dict[str, Timing] = {}
        self._reported: dict[str, Timing] = {}
        self._errors: dict[str, str] = {}
        self._stragglers: tuple[str, ...] = ()
        self._suspects: set[str] = set()
        #: sources cut off by close() before they delivered anything (named by failure())
        self._silent: tuple[str, ...] = ()

    # -- feeding ------------------------------------------------------------------------------
    def add(self, source: Source) -> None:
        """Start ``source`` delivering into this round."""
        with self._lock:
            if source.name in self._open or source.name in self._first:
                raise InvalidInput(f"source {source.name!r} added twice to one round")
            self._open[source.name] = source
        source.start(self._deliver)

    def _deliver(self, name: str, message: Message | None, error: BaseException | None) -> None:
        # Stamp in the callback: the owner may take it off the queue much later.
        self._queue.put((name, message, error, self._clock()))

    # -- pulling ------------------------------------------------------------------------------
    def arrivals(self) -> Iterator[tuple[int, Message, float]]:
        """Validated messages as ``(sender index, message, seconds since the fan-out)`` in
        arrival order, until the
        deadline passes or every source ended. Bad messages are logged and skipped (their
        sender counts as failed)."""
        while self._open:
            remaining = self.deadline - self._clock()
            if remaining <= 0:
                return
            try:
                name, message, error, stamp = self._queue.get(timeout=remaining)
            except queue.Empty:
                return
            if name is _INTERRUPT:
                return
            seconds = stamp - self.started
            if message is None:
                self._end(name, error, seconds)
                continue
            index, problem = self._check(message)
            self._note(name, message, seconds, problem)
            if problem is None and index is not None:
                yield index, message, seconds

    def interrupt(self) -> None:
        """End :meth:`arrivals` now (the caller of the round went away); safe from any thread."""
        self._queue.put((_INTERRUPT, None, None, self._clock()))

    def _check(self, message: Message) -> tuple[int | None, str | None]:
        index = self._senders.get(message.sender)
        vector = message.vector
        if index is None:
            return None, f"unknown sender {message.sender!r}"
        if vector.ndim != len(self._shape) or any(
            want is not None and got != want
            for got, want in zip(vector.shape, self._shape, strict=False)
        ):
            return index, f"sent shape {list(vector.shape)}, expected {list(self._shape)}"
        if not np.all(np.isfinite(vector)):
            return index, "sent non-finite values"
        return index, None

    def _note(self, name: str, message: Message, seconds: float, problem: str | None) -> None:
        self._observer.response(name, seconds)
        self._observer.received(int(message.vector.nbytes))
        for timing in message.timings:
            self._reported[timing.node] = timing
        self._suspects.update(message.suspects)
        if problem is not None:
            log.debug("round: %s from %s: %s", message.sender, name, problem)
            self._errors[message.sender] = problem
            self._first.setdefault(name, Timing(name, seconds, False, error=problem))
            return
        self._first.setdefault(
            name, Timing(name, seconds, True, compute_seconds=float(message.compute_seconds))
        )

    def _end(self, name: str, error: BaseException | None, seconds: float) -> None:
        with self._lock:
            self._open.pop(name, None)
        if error is not None:
            text = describe(error)
            self._errors[name] = text
            if name not in self._first:
                self._observer.response(name, seconds)
                self._first[name] = Timing(name, seconds, False, error=text)

    # -- deciding -----------------------------------------------------------------------------
    def decide(self, rule: Rule, slack: float = 0.0) -> Outcome:
        """Offer every arrival to ``rule`` until it is complete (then cancel the rest) or the
        deadline passes; raises :class:`RoundFailed` when the rule has no result.

        ``slack`` > 0: once the rule reports a provisional result (``rule.provisional()``, a
        verifying rule waiting for a spare arrival), the round waits at most ``slack`` more
        seconds before the rule's :meth:`~Rule.at_deadline` decides."""
        decoded: Decoded | None = None
        spent = 0.0
        provisional = getattr(rule, "provisional", None)
        try:
            for index, message, _seconds in self.arrivals():
                start = self._clock()
                complete = rule.offer(index, message.vector)
                spent += self._clock() - start
                if not complete and slack > 0 and provisional is not None and provisional():
                    self.deadline = min(self.deadline, self._clock() + slack)
                if complete:
                    start = self._clock()
                    decoded = rule.result()
                    spent += self._clock() - start
                    break
            if decoded is None:
                decoded = rule.at_deadline()
        finally:
            stragglers = self.close()
        self._observer.decoded(spent)
        if decoded is None:
            raise RoundFailed(self.failure(rule.failure()))
        names = {index: name for name, index in self._senders.items()}
        liars = {names[i] for i in decoded.suspects if i in names} | self._suspects
        return Outcome(
            decoded=decoded,
            sources=tuple(self._first.values()),
            reported=tuple(self._reported.values()),
            stragglers=stragglers,
            seconds=self._clock() - self.started,
            suspects=tuple(sorted(liars)),
        )

    def failure(self, reason: str) -> str:
        """``reason`` with who failed and why, in words."""
        waited = self._clock() - self.started
        failed = sorted(f"{name} ({why})" for name, why in self._errors.items())
        silent = sorted(set(self._open) | set(self._silent))
        return (
            f"{reason}; waited {waited:.3g} s"
            + (f"; failed: {', '.join(failed)}" if failed else "")
            + (f"; no answer from: {', '.join(silent)}" if silent else "")
        )

    def close(self) -> tuple[str, ...]:
        """Cancel every source still running; returns the names of the sources not waited for
        (cancelled or failed). Idempotent."""
        with self._lock:
            if self._closed:
                return tuple(self._stragglers)
            self._closed = True
            outstanding = dict(self._open)
            self._open.clear()
        elapsed = self._clock() - self.started
        self._silent = tuple(sorted(name for name in outstanding if name not in self._first))
        for name, source in outstanding.items():
            source.cancel()
            if name not in self._first:  # a cut-off straggler took at least this long
                self._observer.response(name, elapsed)
                self._first[name] = Timing(name, elapsed, False, error="not waited for")
        # A source that already delivered a usable message is not a straggler, even when its
        # end-of-call marker is still on its way.
        self._stragglers = tuple(sorted(t.node for t in self._first.values() if not t.arrived))
        return self._stragglers

    @property
    def failed(self) -> dict[str, str]:
        """Senders or sources that failed so far, with the reason in words."""
        return dict(self._errors)


#: gRPC status names a node's failure is told in words by (the details of the others are
#: edgecode's own messages and are passed on).
_IN_WORDS = {
    "UNAVAILABLE": "unreachable",
    "DEADLINE_EXCEEDED": "did not answer before its deadline",
    "CANCELLED": "call cancelled",
    "UNIMPLEMENTED": "does not offer this call (another version?)",
    "UNAUTHENTICATED": "refused our credentials",
    "UNKNOWN": "failed",
    "INTERNAL": "failed",
}


def describe(error: BaseException) -> str:
    """An error in words: a failed call as what happened to the node (``unreachable``, ``did
    not answer before its deadline``, or the node's own message), anything else as its
    message."""
    details = getattr(error, "details", None)
    code = getattr(error, "code", None)
    if callable(details) and callable(code):
        try:
            name = code().name
            said = details() or ""
        except Exception:  # a cancelled future's error may not carry a status
            return str(error) or type(error).__name__
        words = _IN_WORDS.get(name)
        if words is None:
            return said or name.lower().replace("_", " ")
        return words
    return str(error) or type(error).__name__
