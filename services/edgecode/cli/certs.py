"""``edgecode certs init|issue|show``: the CA and per-node certificates for mutual TLS.

``init`` makes a CA (``DIR/ca.crt``, ``DIR/ca.key``); ``issue ROLE NAME`` a certificate whose
identity is the SAN URI ``edgecode://ROLE/NAME`` (plus the DNS names and IP addresses the node is
dialled at) into ``DIR/NAME/`` as ``tls.crt``, ``tls.key`` and ``ca.crt`` (the layout a service's
``--tls-dir`` reads, and that of a Kubernetes TLS Secret); ``show`` prints what a certificate
says. Keys are ECDSA P-256; every file is written with mode 0600.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "make a CA and per-node certificates for mutual TLS (init, issue, show)"
ROLE_HELP = "coordinator, master, edge, worker, peer (services); user, admin (people and tools: the job API)"


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str = "certs"
) -> None:
    parser = subparsers.add_parser(
        name,
        help=HELP,
        description=(
            "Certificates for edgecode's mutual TLS. A certificate names its holder's role and "
            "node as the SAN URI edgecode://ROLE/NAME; every service authorizes calls by it."
        ),
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    init = commands.add_parser("init", help="make a CA (DIR/ca.crt and DIR/ca.key)")
    init.add_argument("--dir", default="certs", help="folder of the CA (default ./certs)")
    init.add_argument("--days", type=float, default=3650, help="validity in days (default 3650)")
    init.add_argument("--name", default="edgecode CA", help="the CA's common name")
    exists = init.add_mutually_exclusive_group()
    exists.add_argument("--force", action="store_true", help="replace an existing CA")
    exists.add_argument(
        "--exist-ok", action="store_true", help="keep an existing CA and exit 0 (init steps)"
    )
    init.set_defaults(func=_init)

    issue = commands.add_parser(
        "issue",
        help="issue a certificate to a node or person: edgecode://ROLE/NAME",
        description="Issue a certificate signed by the CA in --dir, into --out "
        "(tls.crt, tls.key, ca.crt).",
    )
    issue.add_argument("role", help=ROLE_HELP)
    issue.add_argument("name", help="the node's name (a worker's or edge's --name), or a person's")
    issue.add_argument("--dir", default="certs", help="folder of the CA (default ./certs)")
    issue.add_argument("--out", default="", help="output folder (default DIR/NAME)")
    issue.add_argument(
        "--dns",
        action="append",
        default=[],
        metavar="NAME",
        help="a DNS name others dial this node at (repeatable), e.g. worker-0 or "
        "workers-edge-0-0.workers-edge-0.edgecode.svc",
    )
    issue.add_argument(
        "--ip", action="append", default=[], metavar="ADDR", help="an IP address (repeatable)"
    )
    issue.add_argument("--days", type=float, default=365, help="validity in days (default 365)")
    issue.set_defaults(func=_issue)

    show = commands.add_parser("show", help="print what certificates say (identity, validity)")
    show.add_argument("files", nargs="+", metavar="FILE", help="PEM certificate(s)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_show)


def _init(args: argparse.Namespace) -> int:
    from edgecode.runtime.certs import CA_CERT_FILE, CA_KEY_FILE, CertificateAuthority

    folder = Path(args.dir)
    if (folder / CA_KEY_FILE).exists() or (folder / CA_CERT_FILE).exists():
        if args.exist_ok:
            print(f"keeping the CA in {folder}")
            return 0
        if not args.force:
            raise ValueError(f"{folder} already holds a CA (--force replaces it)")
    ca = CertificateAuthority.create(args.name, days=args.days)
    ca.write(folder)
    print(f"CA written to {folder / CA_CERT_FILE} and {folder / CA_KEY_FILE} (keep the key secret)")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from edgecode.runtime.certs import CertificateAuthority, Identity

    identity = Identity(args.role, args.name)
    folder = Path(args.dir)
    if not (folder / "ca.key").is_file():
        raise FileNotFoundError(f"no CA in {folder} (make one with: edgecode certs init --dir ...)")
    ca = CertificateAuthority.load(folder)
    out = Path(args.out) if args.out else folder / args.name
    issued = ca.issue(identity, dns=args.dns, ips=args.ip, days=args.days)
    issued.write(out, ca.cert_pem)
    print(f"{identity.uri}: {out}/tls.crt, tls.key, ca.crt")
    return 0


def _show(args: argparse.Namespace) -> int:
    from edgecode.runtime.certs import describe_certificate

    described = []
    for file in args.files:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"no such file {file}")
        try:
            described.append({"file": file, **describe_certificate(path.read_bytes())})
        except ValueError as exc:
            raise ValueError(f"{file}: not a PEM certificate ({exc})") from None
    if args.json:
        json.dump(described if len(described) > 1 else described[0], sys.stdout, indent=2)
        print()
        return 0
    for item in described:
        for key, value in item.items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            print(f"{key:>10}: {shown}")
        print()
    return 0
