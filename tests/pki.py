"""Certificates for the security tests, made once per test session (ECDSA P-256: milliseconds).

:class:`Pki` holds a CA, a valid certificate for every role, and the bad ones each test needs:
from another CA, expired, not yet valid, and one from the right CA that names no edgecode
identity.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgecode.runtime.certs import ROLES, CertificateAuthority, Identity, Issued
from edgecode.runtime.security import Tls

LOOPBACK = {"dns": ["localhost"], "ips": ["127.0.0.1"]}


def tls_of(issued: Issued, ca: CertificateAuthority) -> Tls:
    """The material a client or server would load (checked like files are)."""
    return Tls.from_pem(ca.cert_pem, issued.cert_pem, issued.key_pem)


def raw_tls(issued: Issued, ca_pem: bytes) -> Tls:
    """Material that :meth:`Tls.from_pem` would refuse (no identity): built directly, to see
    what the server does with it."""
    return Tls(ca_pem, issued.cert_pem, issued.key_pem, Identity("user", "anonymous"))


def _without_identity(ca: CertificateAuthority) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anonymous")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(certificate, key)


@dataclass
class Pki:
    ca: CertificateAuthority = field(default_factory=lambda: CertificateAuthority.create(days=2))
    other_ca: CertificateAuthority = field(
        default_factory=lambda: CertificateAuthority.create("another CA", days=2)
    )

    def __post_init__(self) -> None:
        #: one valid certificate per role, named ROLE-0 (servers get loopback SANs)
        self.roles = {role: self.issue(role, f"{role}-0") for role in ROLES}
        now = datetime.datetime.now(datetime.UTC)
        self.bad = {
            "other CA": tls_of(
                self.other_ca.issue(Identity("master", "m"), **LOOPBACK, days=1), self.other_ca
            ),
            "expired": self.tls(
                self.ca.issue(
                    Identity("master", "old"),
                    days=1,
                    not_before=now - datetime.timedelta(days=3),
                )
            ),
            "not yet valid": self.tls(
                self.ca.issue(
                    Identity("master", "early"),
                    days=1,
                    not_before=now + datetime.timedelta(days=1),
                )
            ),
        }
        self.anonymous = raw_tls(_without_identity(self.ca), self.ca.cert_pem)

    def tls(self, issued: Issued) -> Tls:
        return tls_of(issued, self.ca)

    def issue(self, role: str, name: str) -> Tls:
        return self.tls(self.ca.issue(Identity(role, name), **LOOPBACK, days=1))

    def write(self, role: str, name: str, folder: Path) -> Path:
        """A node's folder (tls.crt, tls.key, ca.crt) for a subprocess."""
        return self.ca.issue(Identity(role, name), **LOOPBACK, days=1).write(
            folder, self.ca.cert_pem
        )
