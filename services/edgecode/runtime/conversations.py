"""One long-lived bidirectional call per peer that carries every round's request and its answer.

A unary call per node per round costs both sides ~0.8-1 ms of CPU after the idle gap between
rounds (``scripts/rpc_cost.py --gap 0.01``): the threads that hand a call over sleep between
rounds. On one open stream a request and its answer are a message each way
(``docs/notes/round-overhead.md``).

:class:`Conversation` (the caller's side) sends requests on one call and matches each answer to
its request by a sequence number the peer echoes; every request gets a :class:`Ticket`, a future
with the round engine's ``Pending`` interface (``add_done_callback``, ``cancel``, ``result``).
When the call breaks (the peer restarted or died), every ticket still open fails with the call's
error and the next request opens a new call. A cancelled ticket's request is not sent when it is
still queued, otherwise a cancel message follows it (only the last of several: a newer request
supersedes the older ones anyway).

:func:`serve_conversation` (the peer's side) reads requests on a thread of its own, answers them
one at a time in arrival order, and stops the one being answered when a newer request or a
cancel for it arrives (its ``threading.Event`` is set); a request cancelled before it started is
dropped, one superseded before it started is answered with StaleRound; at most
:data:`MAX_QUEUED` wait (a flood loses its oldest requests, unanswered). A request that fails
is answered with an error message (``on_error``), the stream goes on.

Example
-------
>>> import threading
>>> def serve(requests):  # a peer that answers (sequence, request + 1)
...     return serve_conversation(
...         requests, lambda r, stop: [(r[0], r[1] + 1)], lambda r: r[0],
...         lambda r: False, lambda r, exc: None)
>>> conversation = Conversation(serve, lambda answer: (answer[0], answer[1], None, True),
...                             lambda seq: (seq, None))
>>> conversation.send(lambda seq: (seq, 41)).result(timeout=5)
42
>>> conversation.close()
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc

from edgecode.errors import StaleRound
from edgecode.runtime.errors import status_of

log = logging.getLogger(__name__)

#: Requests a peer keeps queued behind the one it answers (each newer one supersedes them); a
#: caller that floods more loses the oldest, unanswered (its rounds' deadlines end them).
MAX_QUEUED = 16

#: parse(answer) -> (sequence, value, error, last): the error of a bad or failed answer, and
#: whether it is the request's last answer
Parse = Callable[[Any], tuple[int, Any, BaseException | None, bool]]


class StreamFailed(grpc.RpcError):  # type: ignore[misc]  # grpc is untyped
    """A request's failure on a conversation, with a gRPC status code as a call's error has."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    @classmethod
    def from_number(cls, number: int, details: str) -> StreamFailed:
        """The failure a peer answered with: its status code's number and message."""
        code = next((c for c in grpc.StatusCode if c.value[0] == number), grpc.StatusCode.UNKNOWN)
        return cls(code, details[:1000])

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def __str__(self) -> str:
        return f"{self._code.name}: {self._details}"


class Ticket:
    """One request's answer: a future (``Pending`` of :mod:`edgecode.rounds`)."""

    def __init__(self, conversation: Conversation | None, sequence: int) -> None:
        self._conversation = conversation
        self.sequence = sequence
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        #: handed to the call (a cancel then tells the peer)
        self.sent = False
        self._callbacks: list[Callable[[Ticket], None]] = []

    def settle(self, value: Any, error: BaseException | None) -> bool:
        """Give the ticket its outcome (once; later calls do nothing and return False)."""
        with self._lock:
            if self._done.is_set():
                return False
            self._value, self._error = value, error
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)
        return True

    def deliver(self, value: Any, error: BaseException | None, last: bool) -> None:
        """An answer from the peer (a ticket takes the first)."""
        self.settle(value, error)

    def done(self) -> bool:
        return self._done.is_set()

    def add_done_callback(self, fn: Callable[[Ticket], None]) -> None:
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    def cancel(self) -> bool:
        """Stop waiting (the peer is told to stop); False when the answer was already in."""
        if not self.settle(None, StreamFailed(grpc.StatusCode.CANCELLED, "call cancelled")):
            return False
        if self._conversation is not None:
            self._conversation._cancelled(self)
        return True

    def result(self, timeout: float | None = None) -> Any:
        if not self._done.wait(timeout):
            raise StreamFailed(grpc.StatusCode.DEADLINE_EXCEEDED, "no answer yet")
        if self._error is not None:
            raise self._error
        return self._value


class Feed(Ticket):
    """A request answered by several messages, then a last one (or an error): iterate it for
    the values as they come; the iteration ends after the last, or raises the error."""

    def __init__(self, conversation: Conversation | None, sequence: int) -> None:
        super().__init__(conversation, sequence)
        self._values: queue.SimpleQueue[tuple[Any, BaseException | None, bool]] = (
            queue.SimpleQueue()
        )

    def deliver(self, value: Any, error: BaseException | None, last: bool) -> None:
        if error is not None:
            self.settle(None, error)  # puts the error for the iteration
        elif last:
            if self.settle(None, None):
                self._values.put((value, None, True))
        elif not self.done():
            self._values.put((value, None, False))

    def settle(self, value: Any, error: BaseException | None) -> bool:
        settled = super().settle(value, error)
        if settled and error is not None:  # a cancel or a broken call ends the iteration
            self._values.put((None, error, True))
        return settled

    def __iter__(self) -> Iterator[Any]:
        while True:
            value, error, last = self._values.get()
            if error is not None:
                raise error
            if value is not None:
                yield value
            if last:
                return


class _Outbox:
    """The requests of one call, as the call's request iterator reads them: a cancelled
    ticket's request still queued is skipped, and a cancel message is skipped when anything
    follows it (a newer request supersedes the cancelled one anyway)."""

    def __init__(self) -> None:
        self._items: collections.deque[tuple[Ticket | None, Any]] = collections.deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, ticket: Ticket | None, message: Any) -> None:
        with self._ready:
            self._items.append((ticket, message))
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()

    def __iter__(self) -> Iterator[Any]:
        while True:
            with self._ready:
                while not self._items and not self._closed:
                    self._ready.wait()
                if not self._items:
                    return
                ticket, message = self._items.popleft()
                if ticket is None and self._items:
                    continue  # a cancel with something after it
            if ticket is not None:
                ticket.sent = True  # before the check: a cancel from now on tells the peer
                if ticket.done():
                    continue  # cancelled before it was sent
            yield message


class Conversation:
    """Requests and answers on one long-lived call (see the module's text).

    ``open_call(requests)`` starts the call (e.g. a channel's ``stream_stream`` method) and
    returns its answers; ``parse(answer)`` gives ``(sequence, value, error)``: a malformed value
    is that request's error, an answer without a readable sequence ends the call;
    ``cancel_message(sequence)`` is the message that stops a request at the peer."""

    def __init__(
        self,
        open_call: Callable[[Iterator[Any]], Iterator[Any]],
        parse: Parse,
        cancel_message: Callable[[int], Any],
    ) -> None:
        self._open_call = open_call
        self._parse = parse
        self._cancel_message = cancel_message
        self._lock = threading.Lock()
        self._pending: dict[int, Ticket] = {}
        self._outbox: _Outbox | None = None
        self._call: Any = None
        self._sequence = 0
        self._closed = False

    def send(self, message: Callable[[int], Any], feed: bool = False) -> Ticket:
        """Send ``message(sequence)`` (the request carrying its sequence number); its ticket
        (``feed``: a :class:`Feed`, for a request answered by several messages)."""
        with self._lock:
            self._sequence += 1
            ticket = (Feed if feed else Ticket)(self, self._sequence)
            if self._closed:
                ticket.settle(None, StreamFailed(grpc.StatusCode.CANCELLED, "closed"))
                return ticket
            if self._outbox is None:
                self._open()
            assert self._outbox is not None
            self._pending[ticket.sequence] = ticket
            self._outbox.put(ticket, message(ticket.sequence))
        return ticket

    def _open(self) -> None:
        outbox = _Outbox()
        call = self._open_call(iter(outbox))
        self._outbox, self._call = outbox, call
        threading.Thread(
            target=self._read, args=(call, outbox), name="conversation", daemon=True
        ).start()

    def _read(self, call: Any, outbox: _Outbox) -> None:
        error: BaseException = StreamFailed(grpc.StatusCode.UNAVAILABLE, "the stream ended")
        try:
            for answer in call:
                sequence, value, failure, last = self._parse(answer)
                with self._lock:
                    if (
                        last
                        or failure is not None
                        or not isinstance(self._pending.get(sequence), Feed)
                    ):
                        ticket = self._pending.pop(sequence, None)
                    else:
                        ticket = self._pending.get(sequence)
                if ticket is not None:  # else: cancelled, or superseded and forgotten
                    ticket.deliver(value, failure, last)
        except grpc.RpcError as exc:
            error = exc
        except Exception as exc:  # an unreadable answer: the call cannot be trusted further
            error = exc
            _cancel(call)
        with self._lock:
            if self._outbox is outbox:
                self._outbox = self._call = None
            orphans, self._pending = self._pending, {}
        outbox.close()
        for ticket in orphans.values():
            ticket.settle(None, error)

    def _cancelled(self, ticket: Ticket) -> None:
        with self._lock:
            if self._pending.pop(ticket.sequence, None) is None or self._outbox is None:
                return
            if ticket.sent:
                self._outbox.put(None, self._cancel_message(ticket.sequence))

    def close(self) -> None:
        """End the call; every open ticket fails with CANCELLED. Idempotent."""
        with self._lock:
            self._closed = True
            outbox, call = self._outbox, self._call
        if outbox is not None:
            outbox.close()
        if call is not None:
            _cancel(call)


def _cancel(call: Any) -> None:
    """Cancel a grpc call (an iterator without ``cancel``, as in the example, just ends)."""
    cancel = getattr(call, "cancel", None)
    if cancel is not None:
        cancel()


class Stop(threading.Event):
    """The event that stops a request at the peer; callbacks run once when it is set (e.g. to
    interrupt a round's collector at once)."""

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: list[Callable[[], object]] = []
        self._guard = threading.Lock()

    def add_callback(self, fn: Callable[[], object]) -> None:
        with self._guard:
            if not self.is_set():
                self._callbacks.append(fn)
                return
        fn()

    def set(self) -> None:
        with self._guard:
            if self.is_set():
                return
            super().set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn()


def serve_conversation(
    requests: Iterator[Any],
    handle: Callable[[Any, Stop], Iterable[Any]],
    sequence_of: Callable[[Any], int],
    is_cancel: Callable[[Any], bool],
    on_error: Callable[[Any, BaseException], Any],
) -> Iterator[Any]:
    """Answer a conversation's requests (the peer's side; see the module's text): ``handle(
    request, stop)`` gives a request's answers, sent as they come (``stop`` is set when a newer
    request or a cancel for it arrives); ``on_error(request, exc)`` is the answer of one that
    raised (None: no answer)."""
    ready = threading.Condition()
    inbox: collections.deque[Any] = collections.deque()
    stops: dict[int, Stop] = {}
    cancelled: set[int] = set()  # by the caller, who forgot them: never answered
    ended = False

    def read() -> None:
        nonlocal ended
        try:
            for request in requests:
                sequence = sequence_of(request)
                with ready:
                    if is_cancel(request):
                        stop = stops.get(sequence)
                        if stop is not None:
                            cancelled.add(sequence)
                            stop.set()
                        continue
                    for stop in stops.values():  # a newer request supersedes every older one
                        stop.set()
                    while len(inbox) >= MAX_QUEUED:  # a caller flooding requests: the oldest
                        stops.pop(sequence_of(inbox.popleft()), None)  # go unanswered
                    stops[sequence] = Stop()
                    inbox.append(request)
                    ready.notify()
        except Exception:  # the caller went away: everything still open stops
            pass
        finally:
            with ready:
                ended = True
                for stop in stops.values():
                    stop.set()
                ready.notify()

    threading.Thread(target=read, name="conversation-reader", daemon=True).start()
    while True:
        with ready:
            while not inbox and not ended:
                ready.wait()
            if not inbox:
                return
            request = inbox.popleft()
            sequence = sequence_of(request)
            stop = stops.get(sequence) or Stop()
        try:
            if stop.is_set() and sequence in cancelled:
                continue
            try:
                if stop.is_set():
                    raise StaleRound("superseded by a newer request before it started")
                yield from handle(request, stop)
            except Exception as exc:  # one request's failure is its answer, the stream goes on
                if status_of(exc) is None:
                    log.exception("unexpected error answering a stream request")
                with ready:
                    forgotten = sequence in cancelled  # the caller cancelled it: no answer
                answer = None if forgotten else on_error(request, exc)
                if answer is not None:
                    yield answer
        finally:
            with ready:
                stops.pop(sequence, None)
                cancelled.discard(sequence)
