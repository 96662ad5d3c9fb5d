"""Mutual TLS and authorization: who may call which RPC.

Every service serves mutual TLS: a caller must present a certificate signed by the cluster's CA
(else the handshake fails), and the certificate's identity ``edgecode://ROLE/NAME`` (a SAN URI,
see :mod:`edgecode.runtime.certs`) decides what it may call. :data:`RPC_ROLES` is the one table
from RPC to the roles allowed to call it; :class:`Authorizer` is the one server interceptor that
enforces it: UNAUTHENTICATED when the certificate names no edgecode identity, PERMISSION_DENIED
when its role may not call the RPC (or the RPC is not in the table: a new RPC is refused until it
is listed). Rules finer than a role (a node registers and heartbeats only under its own name) are
checked by the service with :func:`caller`.

Plaintext (``--insecure``) is possible but never the default; it logs a warning, and then every
RPC is open to anyone who reaches the port.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgecode.runtime.certs import CA_FILE, CERT_FILE, KEY_FILE, Identity, identity_of_certificate

log = logging.getLogger(__name__)

#: Any authenticated identity (the health service, reflection).
ANYONE = frozenset(("coordinator", "master", "edge", "worker", "peer", "user", "admin"))
PEOPLE = frozenset(("user", "admin"))
NODES = frozenset(("worker", "edge", "peer"))

#: RPC (full method name) -> roles allowed to call it. The finer rules noted on the right are
#: enforced by the service itself from :func:`caller`.
RPC_ROLES: Mapping[str, frozenset[str]] = {
    # Coordinator: nodes register and heartbeat for themselves only; the master reports the
    # timings it measured (a node only its own); the master plans from the membership.
    "/edgecode.v1.Coordinator/Register": NODES,  # only under the certificate's own name and role
    "/edgecode.v1.Coordinator/Heartbeat": NODES,  # only the certificate's own name
    "/edgecode.v1.Coordinator/ReportTimings": NODES | {"master"},  # a node: its own timings only
    "/edgecode.v1.Coordinator/GetCluster": frozenset({"master", "admin"}),
    "/edgecode.v1.Coordinator/GetPlan": frozenset({"master", "admin"}),
    # Gossip jobs (the Peer service): people start and watch them at the coordinator.
    "/edgecode.v1.Coordinator/StartGossipJob": PEOPLE,
    "/edgecode.v1.Coordinator/GetGossipJob": PEOPLE,
    "/edgecode.v1.Coordinator/StopGossipJob": PEOPLE,
    # Master: the job API, for people.
    "/edgecode.v1.Master/SubmitJob": PEOPLE,
    "/edgecode.v1.Master/GetJob": PEOPLE,
    "/edgecode.v1.Master/WatchJob": PEOPLE,
    "/edgecode.v1.Master/CancelJob": PEOPLE,
    "/edgecode.v1.Master/SubmitMatmul": PEOPLE,
    "/edgecode.v1.Master/Matmul": PEOPLE,
    "/edgecode.v1.Master/DropMatmul": PEOPLE,
    "/edgecode.v1.Master/GetMatmul": PEOPLE,
    # Edge aggregator: driven by the master.
    "/edgecode.v1.Aggregator/ConfigureJob": frozenset({"master"}),
    "/edgecode.v1.Aggregator/RunRound": frozenset({"master"}),
    "/edgecode.v1.Aggregator/RunRounds": frozenset({"master"}),
    "/edgecode.v1.Aggregator/DropJob": frozenset({"master"}),
    # Worker: placed and driven by the master; gradients also asked by edges; partitions read by
    # other workers during a shuffle.
    "/edgecode.v1.Worker/PlaceData": frozenset({"master"}),
    "/edgecode.v1.Worker/ComputeGradient": frozenset({"master", "edge"}),
    "/edgecode.v1.Worker/ComputeGradients": frozenset({"edge"}),
    "/edgecode.v1.Worker/DropJob": frozenset({"master", "edge"}),
    "/edgecode.v1.Worker/FetchPlacement": frozenset({"master"}),
    "/edgecode.v1.Worker/ReadPartitions": frozenset({"worker"}),
    "/edgecode.v1.Worker/PlaceBlock": frozenset({"master"}),
    "/edgecode.v1.Worker/Multiply": frozenset({"master"}),
    # Peer (GOCO gossip): jobs placed, started, watched and stopped by the coordinator (an admin
    # may read a peer's reports too); Gossip between peers.
    "/edgecode.v1.Peer/PlaceJob": frozenset({"coordinator"}),
    "/edgecode.v1.Peer/StartJob": frozenset({"coordinator"}),
    "/edgecode.v1.Peer/GetReports": frozenset({"coordinator", "admin"}),
    "/edgecode.v1.Peer/StopJob": frozenset({"coordinator"}),
    "/edgecode.v1.Peer/Gossip": frozenset({"peer"}),
    # Standard services: anyone with a certificate of the cluster (probes without TLS use the
    # separate plaintext health port).
    "/grpc.health.v1.Health/Check": ANYONE,
    "/grpc.health.v1.Health/Watch": ANYONE,
    "/grpc.health.v1.Health/List": ANYONE,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": ANYONE,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": ANYONE,
}


def allowed_roles(method: str, table: Mapping[str, frozenset[str]] = RPC_ROLES) -> frozenset[str]:
    """The roles that may call ``method`` (none for a method the table does not list)."""
    return table.get(method, frozenset())


# ---- the caller's identity ---------------------------------------------------------------------


def identity_from_auth_context(auth: Mapping[str, Any]) -> Identity | None:
    """The edgecode identity in a verified peer's auth context (None without one, or when the
    certificate names several)."""
    uris = [u.decode("utf-8", "replace") for u in auth.get("peer_uri", ())]
    ours = [u for u in uris if u.startswith("edgecode://")]
    if len(ours) != 1:
        return None
    try:
        return Identity.from_uri(ours[0])
    except ValueError:
        return None


def caller(context: grpc.ServicerContext) -> Identity | None:
    """The identity of the peer of this call (None on a plaintext server, or without one)."""
    return identity_from_auth_context(context.auth_context())


# ---- the interceptor ---------------------------------------------------------------------------


def _guard(behaviour: Callable[..., Any], check: Callable[[Any], None]) -> Callable[..., Any]:
    # Extra arguments pass through: a non-blocking handler (the health service's Watch) is
    # called with the server's send-response callback as a third argument.
    @functools.wraps(behaviour)
    def guarded(request: Any, context: grpc.ServicerContext, *args: Any, **kwargs: Any) -> Any:
        check(context)
        return behaviour(request, context, *args, **kwargs)

    return guarded


class Authorizer(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call whose caller's role may not call the method (see :data:`RPC_ROLES`).

    gRPC interceptors do not see the peer's certificate, so the method handler is wrapped: the
    wrapped behaviour checks ``context.auth_context()`` before the servicer runs. Wrapped handlers
    are cached per method, so a call costs one dictionary lookup and the check."""

    def __init__(self, table: Mapping[str, frozenset[str]] = RPC_ROLES) -> None:
        self._table = table
        self._cache: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def check(self, method: str, context: grpc.ServicerContext) -> Identity:
        """The caller's identity, or abort with UNAUTHENTICATED / PERMISSION_DENIED."""
        identity = caller(context)
        if identity is None:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "a client certificate naming an edgecode identity (edgecode://ROLE/NAME) is "
                "required",
            )
            raise AssertionError("unreachable")  # context.abort raises
        if identity.role not in allowed_roles(method, self._table):
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{identity} may not call {method}",
            )
        return identity

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]

        def check(context: grpc.ServicerContext) -> None:
            self.check(method, context)

        kind = next(
            name
            for name in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
            if getattr(handler, name) is not None
        )
        wrapped = handler._replace(**{kind: _guard(getattr(handler, kind), check)})
        with self._lock:
            self._cache[method] = (handler, wrapped)
        return wrapped


# ---- credentials -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    """One node's TLS material, loaded once: its certificate and key, the CA its peers'
    certificates must chain to, and the identity its certificate names."""

    ca_pem: bytes = field(repr=False)
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)  # never in a log line
    identity: Identity

    @classmethod
    def from_pem(cls, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, source: str = "") -> Tls:
        """Check the material (PEM, key matches certificate, an edgecode identity) and keep it;
        ValueError naming ``source`` otherwise."""
        where = f"{source}: " if source else ""
        try:
            certificate = x509.load_pem_x509_certificate(cert_pem)
            x509.load_pem_x509_certificates(ca_pem)
            key = serialization.load_pem_private_key(key_pem, None)
        except ValueError as exc:
            raise ValueError(f"{where}not valid PEM: {exc}") from None
        ours = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        theirs = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if ours != theirs:
            raise ValueError(f"{where}the private key does not belong to the certificate")
        identity = identity_of_certificate(certificate)
        if identity is None:
            raise ValueError(
                f"{where}the certificate names no edgecode identity (a SAN URI "
                "edgecode://ROLE/NAME; make one with `edgecode certs issue`)"
            )
        return cls(ca_pem, cert_pem, key_pem, identity)

    @classmethod
    def from_files(cls, ca_file: str, cert_file: str, key_file: str) -> Tls:
        """Load PEM files (FileNotFoundError / ValueError naming the file)."""
        contents = {}
        for name, path in (("tls_ca", ca_file), ("tls_cert", cert_file), ("tls_key", key_file)):
            file = Path(path)
            if not file.is_file():
                raise FileNotFoundError(f"{name}: no such file {path}")
            contents[name] = file.read_bytes()
        return cls.from_pem(
            contents["tls_ca"], contents["tls_cert"], contents["tls_key"], source=cert_file
        )

    @classmethod
    def from_dir(cls, directory: str | Path) -> Tls:
        """``ca.crt``, ``tls.crt`` and ``tls.key`` of a folder (``edgecode certs issue``'s
        layout, and that of a Kubernetes TLS Secret made by cert-manager)."""
        folder = Path(directory)
        return cls.from_files(
            str(folder / CA_FILE), str(folder / CERT_FILE), str(folder / KEY_FILE)
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server side: present our certificate, require and verify the client's."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.ca_pem,
            require_client_auth=True,
        )

    @functools.cached_property
    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client side (made once): verify the server against the CA, present our certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )


PLAINTEXT_WARNING = (
    "%s: plaintext gRPC (--insecure): no encryption and no authentication; anyone who reaches "
    "the port can call every RPC"
)


def resolve_tls(
    ca: str,
    cert: str,
    key: str,
    directory: str,
    insecure: bool,
    who: str,
    expected_roles: frozenset[str] | None = None,
) -> Tls | None:
    """The TLS material a service or client runs with, from its settings: the three files
    (each overriding ``directory``'s file of the same kind), or None with ``insecure`` (which
    logs a warning). Without either it is an error naming the keys: plaintext is never chosen
    silently. ``expected_roles`` (when given) are the roles the certificate may name."""
    files = {"tls_ca": ca, "tls_cert": cert, "tls_key": key}
    if insecure:
        given = sorted(k for k, v in {**files, "tls_dir": directory}.items() if v)
        if given:
            raise ValueError(f"insecure is set together with {given}: choose one")
        log.warning(PLAINTEXT_WARNING, who)
        return None
    if directory:
        folder = Path(directory)
        defaults = {"tls_ca": CA_FILE, "tls_cert": CERT_FILE, "tls_key": KEY_FILE}
        files = {k: v or str(folder / defaults[k]) for k, v in files.items()}
    missing = sorted(k for k, v in files.items() if not v)
    if missing:
        raise ValueError(
            f"{who}: mutual TLS needs {missing} (or tls_dir, a folder with ca.crt, tls.crt and "
            "tls.key; `edgecode certs` makes them); plaintext only with --insecure"
        )
    tls = Tls.from_files(files["tls_ca"], files["tls_cert"], files["tls_key"])
    if expected_roles is not None and tls.identity.role not in expected_roles:
        raise ValueError(
            f"{who}: tls_cert names {tls.identity}, but this needs a certificate of role "
            f"{' or '.join(sorted(expected_roles))}"
        )
    return tls
