"""The one place that maps edgecode's exception tree to gRPC status codes.

Servicer methods are wrapped with :func:`translate_errors` (unary responses) or
:func:`translate_stream_errors` (streamed responses). A core exception becomes ``context.abort``
with its status and message; an unexpected exception is logged and becomes INTERNAL with a safe
message, and the service stays up.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from edgecode import errors

log = logging.getLogger(__name__)

STATUS: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.StaleRound, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.UnknownJob, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.NotAllowed, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.NotDecodable, grpc.StatusCode.UNAVAILABLE),
    (errors.RoundFailed, grpc.StatusCode.UNAVAILABLE),
    (errors.Infeasible, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
)

F = TypeVar("F", bound=Callable[..., Any])


def status_of(exc: BaseException) -> grpc.StatusCode | None:
    for kind, code in STATUS:
        if isinstance(exc, kind):
            return code
    return None


def _abort(context: grpc.ServicerContext, exc: Exception, method: str) -> None:
    code = status_of(exc)
    if code is None:
        log.exception("unexpected error in %s", method)
        context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}")
    else:
        context.abort(code, str(exc))


def translate_errors(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:  # servicers raise; only this boundary calls context.abort
            _abort(context, exc, method.__name__)

    return wrapper  # type: ignore[return-value]


def translate_stream_errors(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except Exception as exc:
            _abort(context, exc, method.__name__)

    return wrapper  # type: ignore[return-value]
