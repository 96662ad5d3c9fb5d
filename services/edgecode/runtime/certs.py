"""Certificates for mutual TLS: a CA, and per-node certificates whose identity names the node.

A node's identity is a SAN URI ``edgecode://ROLE/NAME`` (for example
``edgecode://worker/edge-0-w1``); the authorization interceptor
(:mod:`edgecode.runtime.security`) reads it from the verified peer certificate. Server
certificates also carry the DNS names and IP addresses other nodes dial (hostname verification).
Keys are ECDSA P-256; key files are written with mode 0600. Everything is built with the
``cryptography`` library (no hand-written ASN.1).

Example
-------
>>> ca = CertificateAuthority.create("example-ca", days=1)
>>> node = ca.issue(Identity("worker", "w0"), dns=["localhost"], ips=["127.0.0.1"], days=1)
>>> identity_of_certificate(node.certificate)
Identity(role='worker', name='w0')
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The URI scheme of an identity SAN.
SCHEME = "edgecode"
#: Every role a certificate may name. ``user`` and ``admin`` are people and tools (the job API);
#: the others are services.
ROLES = ("coordinator", "master", "edge", "worker", "peer", "user", "admin")
#: Node names: what the coordinator accepts as a member name, without path or URI separators.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: File names of one node's material (the layout of a Kubernetes TLS Secret / cert-manager).
CERT_FILE, KEY_FILE, CA_FILE = "tls.crt", "tls.key", "ca.crt"
#: The CA's own files.
CA_CERT_FILE, CA_KEY_FILE = "ca.crt", "ca.key"


@dataclass(frozen=True)
class Identity:
    """Who a certificate says its holder is: a role from :data:`ROLES` and a node name."""

    role: str
    name: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(
                f"name must be 1-128 letters, digits, '.', '_' or '-' (starting with a letter or "
                f"digit), got {self.name!r}"
            )

    @property
    def uri(self) -> str:
        return f"{SCHEME}://{self.role}/{self.name}"

    @classmethod
    def from_uri(cls, uri: str) -> Identity:
        """Parse ``edgecode://ROLE/NAME`` (ValueError otherwise)."""
        prefix = f"{SCHEME}://"
        if not uri.startswith(prefix):
            raise ValueError(f"not an {SCHEME} identity URI: {uri!r}")
        role, sep, name = uri[len(prefix) :].partition("/")
        if not sep:
            raise ValueError(f"identity URI must be {prefix}ROLE/NAME, got {uri!r}")
        return cls(role, name)

    def __str__(self) -> str:
        return f"{self.role}/{self.name}"


def identity_of_certificate(certificate: x509.Certificate) -> Identity | None:
    """The one edgecode identity a certificate names (None when it names none; ValueError when
    it names several, which would make authorization ambiguous)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = [u for u in san.value.get_values_for_type(x509.UniformResourceIdentifier)]
    ours = [u for u in uris if u.startswith(f"{SCHEME}://")]
    if len(ours) > 1:
        raise ValueError(f"certificate names several identities: {ours}")
    return Identity.from_uri(ours[0]) if ours else None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _validity(days: float, not_before: datetime.datetime | None) -> tuple[datetime.datetime, ...]:
    if not days > 0:
        raise ValueError(f"days must be > 0, got {days}")
    # A little slack backwards: clocks of small devices drift.
    start = not_before if not_before is not None else _now() - datetime.timedelta(minutes=5)
    return start, start + datetime.timedelta(days=days)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` created with ``mode`` from the start (never readable by others
    in between), replacing an existing file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)  # the umask may have taken bits away; never added any
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def write(self, directory: str | Path, ca_pem: bytes) -> Path:
        """Write ``tls.crt``, ``tls.key`` and ``ca.crt`` (all 0600) into ``directory``."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        write_private(folder / CERT_FILE, self.cert_pem)
        write_private(folder / KEY_FILE, self.key_pem)
        write_private(folder / CA_FILE, ca_pem)
        return folder


class CertificateAuthority:
    """A CA that issues node certificates (ECDSA P-256, SHA-256 signatures)."""

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.certificate = certificate
        self.key = key

    @classmethod
    def create(
        cls,
        common_name: str = "edgecode CA",
        days: float = 3650,
        not_before: datetime.datetime | None = None,
    ) -> CertificateAuthority:
        """A new self-signed CA (path length 0: it signs node certificates only)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        start, end = _validity(days, not_before)
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def load(cls, directory: str | Path) -> CertificateAuthority:
        """The CA in ``directory`` (``ca.crt`` and ``ca.key``)."""
        folder = Path(directory)
        certificate = x509.load_pem_x509_certificate((folder / CA_CERT_FILE).read_bytes())
        key = serialization.load_pem_private_key((folder / CA_KEY_FILE).read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{folder / CA_KEY_FILE}: not an ECDSA key")
        return cls(certificate, key)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: str | Path) -> Path:
        """Write ``ca.crt`` and ``ca.key`` (0600) into ``directory``."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        write_private(folder / CA_CERT_FILE, self.cert_pem)
        write_private(folder / CA_KEY_FILE, _key_pem(self.key))
        return folder

    def issue(
        self,
        identity: Identity,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        days: float = 365,
        not_before: datetime.datetime | None = None,
    ) -> Issued:
        """A certificate for ``identity``, usable as both TLS server and client, valid for the
        given DNS names and IP addresses (what other nodes dial)."""
        key = ec.generate_private_key(ec.SECP256R1())
        start, end = _validity(days, not_before)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        names += [x509.DNSName(d) for d in dict.fromkeys(dns)]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in dict.fromkeys(ips)]
        public = key.public_key()
        ca_key_id = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, identity.name),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.role),
                    ]
                )
            )
            .issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return Issued(certificate, key)


def describe_certificate(pem: bytes) -> dict[str, object]:
    """What ``edgecode certs show`` prints: subject, identity, SANs, issuer, validity, key."""
    certificate = x509.load_pem_x509_certificate(pem)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        ips = [str(i) for i in san.get_values_for_type(x509.IPAddress)]
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        dns, ips, uris = [], [], []
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    identity = identity_of_certificate(certificate)
    key = certificate.public_key()
    now = _now()
    return {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "identity": identity.uri if identity else "",
        "ca": is_ca,
        "dns": dns,
        "ip": ips,
        "uri": uris,
        "not_before": certificate.not_valid_before_utc.isoformat(),
        "not_after": certificate.not_valid_after_utc.isoformat(),
        "valid_now": certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc,
        "key": (
            f"ECDSA {key.curve.name}"
            if isinstance(key, ec.EllipticCurvePublicKey)
            else type(key).__name__
        ),
        "serial": format(certificate.serial_number, "x"),
        "sha256": certificate.fingerprint(hashes.SHA256()).hex(),
    }
