"""What a user can get wrong, as one line each: the errors the subcommands raise and how
:func:`edgecode.cli.main` prints them.

Only the standard library at module level: ``grpc`` is looked up in ``sys.modules`` (a gRPC
error can only reach us if the command imported it), so ``edgecode --help`` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: Exit code of an error the user caused (a bad flag, key, file or address), as argparse uses.
USAGE = 2
#: Exit code of a failure that is not the user's input (a job that failed, a crashed service).
FAILURE = 1

#: gRPC status codes that mean the request (address, job, value) was wrong, not the server.
USER_CODES = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
    }
)


class UsageError(ValueError):
    """A bad flag, key, file or address; the message names it."""


class RemoteError(Exception):
    """A gRPC call failed; the message names the address and what happened."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code

    @property
    def exit_code(self) -> int:
        return USAGE if self.code in USER_CODES else FAILURE


def one_line(text: object) -> str:
    """Collapse a message to one line (gRPC details and TOML errors can span several)."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def describe_rpc_error(exc: BaseException) -> tuple[str, str]:
    """``(code name, details)`` of a ``grpc.RpcError``, without the debug string."""
    code_of = getattr(exc, "code", None)
    details_of = getattr(exc, "details", None)
    code = code_of() if callable(code_of) else None
    details = details_of() if callable(details_of) else None
    name = getattr(code, "name", "") or "UNKNOWN"
    return name, one_line(details or "") or name.lower().replace("_", " ")


@contextmanager
def remote(address: str, what: str) -> Iterator[None]:
    """Turn a ``grpc.RpcError`` raised inside into a one-line :class:`RemoteError` that names
    ``what`` was being done and at which ``address``."""
    try:
        yield
    except Exception as exc:
        grpc = sys.modules.get("grpc")
        if grpc is None or not isinstance(exc, grpc.RpcError):
            raise
        code, details = describe_rpc_error(exc)
        if code == "UNAVAILABLE":
            message = f"cannot reach {what} at {address}: {details}"
        elif code == "DEADLINE_EXCEEDED":
            message = f"{what} at {address} did not answer in time: {details}"
        else:
            message = f"{what} at {address}: {code}: {details}"
        raise RemoteError(message, code) from None


def report(exc: BaseException, prog: str = "edgecode") -> int | None:
    """Print a user-facing error on one line and return its exit code; None for anything else
    (a bug keeps its traceback)."""
    grpc = sys.modules.get("grpc")
    if isinstance(exc, RemoteError):
        code = exc.exit_code
    elif grpc is not None and isinstance(exc, grpc.RpcError):  # a call no command wrapped
        name, details = describe_rpc_error(exc)
        exc = RemoteError(f"a gRPC call failed: {name}: {details}", name)
        code = exc.exit_code
    elif isinstance(exc, ValueError | FileNotFoundError | IsADirectoryError | NotADirectoryError):
        code = USAGE
    elif isinstance(exc, PermissionError | FileExistsError):
        code = USAGE
    elif isinstance(exc, OSError):
        code = FAILURE
    else:
        return None
    print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
    return code
