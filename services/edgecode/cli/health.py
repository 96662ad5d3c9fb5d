"""``edgecode health [HOST:PORT]``: ask a service's grpc.health.v1 service whether it is SERVING.

The container HEALTHCHECK and the compose healthchecks call it, so it imports gRPC only and
answers within its deadline: exit 0 when SERVING, 1 otherwise (NOT_SERVING, unreachable, timeout).
"""

from __future__ import annotations

import argparse
import os
import sys

from edgecode.cli import _args
from edgecode.cli._errors import report


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str = "health"
) -> None:
    parser = subparsers.add_parser(
        "health",
        help="exit 0 when a service's gRPC health check says SERVING",
        description=(
            "Call grpc.health.v1.Health/Check on a service; exit 0 when it is SERVING, 1 otherwise. "
            "Used as the container HEALTHCHECK."
        ),
    )
    parser.add_argument(
        "address",
        nargs="?",
        default=None,
        type=_args.address,
        help="HOST:PORT (default 127.0.0.1:$EDGECODE_PORT, or 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--service", default="", help="service name to check (default: the whole server)"
    )
    parser.add_argument(
        "--timeout", type=_args.deadline, default=3.0, help="deadline in seconds (default 3)"
    )
    parser.set_defaults(func=_health)


def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address = args.address or f"127.0.0.1:{os.environ.get('EDGECODE_PORT', '50051')}"
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"{address}: {exc.code().name}", file=sys.stderr)
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address}: {name}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m edgecode.cli.health``, what the image's HEALTHCHECK runs: the same check as
    ``edgecode health`` (which is as cheap now that ``edgecode`` builds only the parser of the
    subcommand being run)."""
    parser = _args.Parser(prog="edgecode")  # errors read as those of `edgecode health`
    register(parser.add_subparsers(parser_class=_args.Parser))
    args = parser.parse_args(["health", *(sys.argv[1:] if argv is None else argv)])
    try:
        return _health(args)
    except Exception as exc:
        code = report(exc)
        if code is None:
            raise
        return code


if __name__ == "__main__":
    raise SystemExit(main())
