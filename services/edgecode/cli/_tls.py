"""Client-side mutual TLS for the subcommands that call a running service (``train``,
``matmul --master``, ``health --tls``): flags, then ``EDGECODE_TLS_*`` environment variables.
Plaintext only with ``--insecure`` (a warning is logged)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgecode.runtime.security import Tls

#: (flag key, help)
FLAGS = (
    ("tls_ca", "CA certificate (PEM) the service's certificate must chain to"),
    ("tls_cert", "your certificate (PEM; role user or admin: edgecode certs issue user NAME)"),
    ("tls_key", "your private key (PEM)"),
    ("tls_dir", "folder with ca.crt, tls.crt and tls.key (the files above override it)"),
)


def add_client_tls_flags(parser: argparse.ArgumentParser) -> None:
    """``--tls-ca/--tls-cert/--tls-key/--tls-dir`` (env ``EDGECODE_TLS_*``) and ``--insecure``."""
    group = parser.add_argument_group("mutual TLS (flags, then EDGECODE_TLS_* variables)")
    for key, text in FLAGS:
        group.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            default=None,
            metavar="PATH",
            help=f"{text} (env EDGECODE_{key.upper()})",
        )
    group.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="plaintext, for a service started with --insecure (env EDGECODE_INSECURE)",
    )


def client_tls(
    args: argparse.Namespace,
    environ: dict[str, str] | None = None,
    roles: frozenset[str] = frozenset({"user", "admin"}),
) -> Tls | None:
    """The TLS material of a client from its flags and environment (None with --insecure)."""
    from edgecode.runtime.security import resolve_tls

    environ = dict(os.environ) if environ is None else environ
    values = {
        key: getattr(args, key, None) or environ.get(f"EDGECODE_{key.upper()}", "")
        for key, _ in FLAGS
    }
    insecure = getattr(args, "insecure", None)
    if insecure is None:
        insecure = environ.get("EDGECODE_INSECURE", "").lower() in ("1", "true", "yes", "on")
    return resolve_tls(
        values["tls_ca"],
        values["tls_cert"],
        values["tls_key"],
        values["tls_dir"],
        bool(insecure),
        "client",
        roles,
    )
