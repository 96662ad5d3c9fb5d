"""``edgecode health [HOST:PORT]``: ask a service's grpc.health.v1 service whether it is SERVING.

The container HEALTHCHECK and the compose healthchecks call it, so it imports gRPC only and
answers within its deadline: exit 0 when SERVING, 1 otherwise (NOT_SERVING, unreachable, timeout).

Services serve mutual TLS; a probe either asks the plaintext health-only port (``health_port``:
the default address is ``127.0.0.1:$EDGECODE_HEALTH_PORT`` when that is set) or presents a
certificate of the cluster (``--tls-dir`` or ``--tls-ca/--tls-cert/--tls-key``, else the
``EDGECODE_TLS_*`` variables when the address is not the health-only port).
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
        help="HOST:PORT (default 127.0.0.1:$EDGECODE_HEALTH_PORT, else 127.0.0.1:$EDGECODE_PORT, "
        "else 127.0.0.1:50051)",
    )
    for key in ("tls_dir", "tls_ca", "tls_cert", "tls_key"):
        parser.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            default="",
            metavar="PATH",
            help="mutual TLS: any certificate of the cluster (tls_dir: ca.crt, tls.crt, tls.key)",
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

    address = args.address or _default_address(os.environ)
    keys = ("tls_ca", "tls_cert", "tls_key", "tls_dir")
    ca, cert, key, folder = (getattr(args, k, "") for k in keys)
    if not (ca or cert or key or folder) and address != _health_port_address(os.environ):
        # A service's own port is mutual TLS: the EDGECODE_TLS_* of the environment apply.
        ca, cert, key, folder = (os.environ.get(f"EDGECODE_{k.upper()}", "") for k in keys)
    if ca or cert or key or folder:
        from edgecode.runtime.security import ANYONE, resolve_tls
        from edgecode.runtime.server import make_channel

        tls = resolve_tls(ca, cert, key, folder, False, "health", ANYONE)
        channel = make_channel(address, tls)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
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


def _health_port_address(environ: os._Environ[str] | dict[str, str]) -> str | None:
    """The plaintext health-only port of this host's service, when one is configured."""
    health_port = environ.get("EDGECODE_HEALTH_PORT", "")
    if health_port and not health_port.startswith("-"):
        return f"127.0.0.1:{health_port}"
    return None


def _default_address(environ: os._Environ[str] | dict[str, str]) -> str:
    return _health_port_address(environ) or f"127.0.0.1:{environ.get('EDGECODE_PORT', '50051')}"


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
