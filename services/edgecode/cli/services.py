"""``edgecode coordinator|master|aggregator|worker``: start one service alone."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any

from edgecode.cli._config import add_config_flags, resolve

HELP = {
    "host": "address to bind the gRPC server to",
    "port": "gRPC port (0 = any free port)",
    "metrics_host": "address to bind the Prometheus /metrics endpoint to",
    "metrics_port": "metrics port (0 = any free port)",
    "advertise_host": "host name other nodes use to reach this one (default: --host)",
    "ready_file": "write the bound addresses as JSON here once serving",
    "grace_seconds": "seconds in-flight calls get on SIGTERM",
    "name": "this node's unique name",
    "edge": "name of this worker's edge aggregator",
    "coordinator": "coordinator address HOST:PORT",
    "link_seconds": "emulated link delay to the parent per round (netem is not available)",
    "streams": "carry every round on one long-lived stream per child node (false: a call per "
    "child per round, slower)",
    "straggle": "straggler emulation, e.g. none, slow:factor=5, bernoulli:p=0.2,factor=5, exp:rate=20",
    "compute_seconds": "emulated seconds to process the WHOLE data set (a worker spends its fraction of it)",
    "seed": "seed of the straggler emulation",
    "machine": "the machine this worker runs on; workers on one machine share its cores in the "
    "planner (default: a digest of the kernel's boot id, the same in every container of it)",
    "machine_cpus": "that machine's cores (0 = what the OS reports)",
    "checkpoint_dir": "folder for atomic job checkpoints (resume after a restart)",
    "spec": "cluster spec TOML (initial runtime models before measurements)",
    "heartbeat_seconds": "heartbeat interval the nodes are told to use",
    "dead_after_seconds": "a node silent this long is dead",
    "tls_ca": "CA certificate (PEM) every peer's certificate must chain to (mutual TLS)",
    "tls_cert": "this node's certificate (PEM); its SAN URI edgecode://ROLE/NAME is its identity",
    "tls_key": "this node's private key (PEM)",
    "tls_dir": "folder with ca.crt, tls.crt, tls.key (edgecode certs issue; a Kubernetes TLS "
    "Secret); tls_ca/tls_cert/tls_key override its files",
    "insecure": "plaintext gRPC with no authentication (logs a warning); never the default",
    "health_host": "address of the plaintext health-only port",
    "health_port": "plaintext port serving only grpc.health.v1, for probes that cannot do TLS "
    "(-1 = none, 0 = any free port)",
    "data_dirs": "folders (separated by ':') whose files jobs may name: data sets, matrices, "
    "torch model files; empty = none",
}

#: role -> (its module under edgecode, config class name, summary)
ROLES: dict[str, tuple[str, str, str]] = {
    "coordinator": (
        "coordinator.run",
        "CoordinatorConfig",
        "membership, live timings, the planner",
    ),
    "master": (
        "master.run",
        "MasterConfig",
        "training jobs: placement, rounds, decoding, checkpoints",
    ),
    "aggregator": (
        "aggregator.run",
        "AggregatorConfig",
        "edge aggregator: fan-out, first decodable set",
    ),
    "worker": ("worker.run", "WorkerConfig", "holds partitions, computes coded gradients"),
}


def role_module(role: str) -> Any:
    """The role's run module (imported on use: ``edgecode --help`` stays fast)."""
    return importlib.import_module(f"edgecode.{ROLES[role][0]}")


def config_class(role: str) -> type:
    """The role's frozen config dataclass."""
    cls: type = getattr(role_module(role), ROLES[role][1])
    return cls


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str | None = None
) -> None:
    """Add the parser of role ``name`` (every role when None)."""
    for role, (_module, _class_name, summary) in ROLES.items():
        if name is not None and role != name:
            continue
        cls = config_class(role)
        parser = subparsers.add_parser(
            role,
            help=f"start {'an' if role[0] in 'aeiou' else 'a'} {role}: {summary}",
            description=f"Start one {role} ({summary}). Stops on SIGTERM: health NOT_SERVING, then a "
            "graceful server stop.",
        )
        add_config_flags(parser, cls, HELP)
        parser.set_defaults(func=lambda args, role=role, cls=cls: start(role, cls, args))


def start(role: str, cls: type, args: argparse.Namespace) -> int:
    """Build the role's config, check the files it names, then run the role."""
    config: Any
    config, sources = resolve(cls, args, role)
    check_files(config, sources)
    for host, port in (("host", "port"), ("metrics_host", "metrics_port")):
        check_listen(config, host, port, sources)
    result: int = role_module(role).run(config)
    # The server stopped gracefully (in-flight calls done, health NOT_SERVING, files flushed):
    # leave without the interpreter's teardown, which can spend tens of seconds collecting
    # gRPC's C-core objects when many services stop at once (SIGTERM must stop a node fast).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(result)


def check_files(config: Any, sources: dict[str, str]) -> None:
    """The files a config names, checked on this machine before anything is bound: a spec
    that loads, a ready file and a checkpoint folder that can be written."""
    from edgecode.cli import _args
    from edgecode.cli._errors import UsageError
    from edgecode.cli._spec import load_cluster_spec

    if getattr(config, "spec", ""):
        try:
            load_cluster_spec(config.spec)
        except (UsageError, FileNotFoundError) as exc:
            raise UsageError(f"{sources['spec']}: {exc}") from None
    for name, check in (("ready_file", _args.output_file), ("checkpoint_dir", _args.output_dir)):
        if getattr(config, name, ""):
            try:
                check(getattr(config, name))
            except argparse.ArgumentTypeError as exc:
                raise UsageError(f"{sources[name]}: {exc}") from None


def check_listen(config: Any, host_key: str, port_key: str, sources: dict[str, str]) -> None:
    """``host:port`` can be listened on (a name that resolves, a port not in use), so that a
    typo is one line naming the flag, not a bind failure deep in the server."""
    import socket

    from edgecode.cli._errors import UsageError

    host, port = getattr(config, host_key), getattr(config, port_key)
    host_source = sources.get(host_key, "--" + host_key.replace("_", "-"))
    port_source = sources.get(port_key, "--" + port_key.replace("_", "-"))
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"{host_source}: cannot listen on {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            source = port_source if port else host_source
            raise UsageError(
                f"{source}: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
