"""Certificates (edgecode.runtime.certs, `edgecode certs`), the TLS settings a service starts
with (runtime.security.resolve_tls) and the data-directory confinement (edgecode.datapaths)."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from edgecode.cli import main
from edgecode.datapaths import DataDirs
from edgecode.errors import InvalidInput, NotAllowed
from edgecode.records import JobConfig
from edgecode.runtime.certs import (
    CertificateAuthority,
    Identity,
    describe_certificate,
    identity_of_certificate,
)
from edgecode.runtime.security import Tls, identity_from_auth_context, resolve_tls


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("test CA", days=1)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_issued_certificate_names_role_and_node_and_is_p256(ca: CertificateAuthority) -> None:
    issued = ca.issue(Identity("worker", "edge-0-w1"), dns=["w1.local"], ips=["127.0.0.1"], days=2)
    cert = issued.certificate
    assert identity_of_certificate(cert) == Identity("worker", "edge-0-w1")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "edgecode://worker/edge-0-w1"
    ]
    assert san.get_values_for_type(x509.DNSName) == ["w1.local"]
    assert isinstance(issued.key, ec.EllipticCurvePrivateKey)
    assert issued.key.curve.name == "secp256r1"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=2)
    assert cert.issuer == ca.certificate.subject
    cert.verify_directly_issued_by(ca.certificate)
    shown = describe_certificate(issued.cert_pem)
    assert shown["identity"] == "edgecode://worker/edge-0-w1" and shown["valid_now"] is True


@pytest.mark.parametrize(
    ("role", "name"),
    [("wizard", "w0"), ("worker", ""), ("worker", "a/b"), ("worker", "-x"), ("user", "x" * 129)],
)
def test_bad_identities_are_refused(role: str, name: str) -> None:
    with pytest.raises(ValueError):
        Identity(role, name)


def test_identity_from_the_auth_context() -> None:
    uri = [b"edgecode://edge/edge-1"]
    assert identity_from_auth_context({"peer_uri": uri}) == Identity("edge", "edge-1")
    assert identity_from_auth_context({}) is None
    assert identity_from_auth_context({"peer_uri": [b"spiffe://x/y"]}) is None
    assert identity_from_auth_context({"peer_uri": [b"edgecode://god/x"]}) is None
    two = [b"edgecode://user/a", b"edgecode://admin/b"]
    assert identity_from_auth_context({"peer_uri": two}) is None  # ambiguous: none


def test_files_are_written_0600(ca: CertificateAuthority, tmp_path: Path) -> None:
    os.umask(0o022)
    ca.write(tmp_path / "ca")
    folder = ca.issue(Identity("master", "m"), days=1).write(tmp_path / "m", ca.cert_pem)
    written = [*(tmp_path / "ca").iterdir(), *folder.iterdir()]
    assert len(written) == 5
    assert all(_mode(p) == 0o600 for p in written), [(p.name, oct(_mode(p))) for p in written]
    assert _mode(folder) == 0o700


def test_resolve_tls_needs_files_or_an_explicit_insecure(
    ca: CertificateAuthority, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = ca.issue(Identity("worker", "w0"), days=1).write(tmp_path / "w0", ca.cert_pem)
    with pytest.raises(ValueError, match=r"needs \['tls_ca', 'tls_cert', 'tls_key'\]"):
        resolve_tls("", "", "", "", False, "worker")
    with pytest.raises(ValueError, match=r"needs \['tls_key'\]"):
        resolve_tls(str(folder / "ca.crt"), str(folder / "tls.crt"), "", "", False, "worker")
    with pytest.raises(ValueError, match="insecure is set together with"):
        resolve_tls("", "", "", str(folder), True, "worker")
    with caplog.at_level("WARNING"):
        assert resolve_tls("", "", "", "", True, "worker") is None
    assert "plaintext" in caplog.text
    tls = resolve_tls("", "", "", str(folder), False, "worker", frozenset({"worker"}))
    assert tls is not None and tls.identity == Identity("worker", "w0")
    with pytest.raises(ValueError, match="needs a certificate of role master"):
        resolve_tls("", "", "", str(folder), False, "master", frozenset({"master"}))
    with pytest.raises(FileNotFoundError, match="tls_ca"):
        resolve_tls(str(tmp_path / "none"), "", "", str(folder), False, "worker")


def test_a_key_of_another_certificate_is_refused(ca: CertificateAuthority) -> None:
    one, two = (ca.issue(Identity("worker", n), days=1) for n in ("a", "b"))
    with pytest.raises(ValueError, match="does not belong"):
        Tls.from_pem(ca.cert_pem, one.cert_pem, two.key_pem)


def test_certs_command_init_issue_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir = tmp_path / "ca"
    assert main(["certs", "init", "--dir", str(ca_dir), "--days", "10"]) == 0
    assert main(["certs", "init", "--dir", str(ca_dir)]) == 2  # no silent overwrite
    assert main(["certs", "init", "--dir", str(ca_dir), "--exist-ok"]) == 0
    out = tmp_path / "n"
    args = ["certs", "issue", "edge", "edge-3", "--dir", str(ca_dir), "--out", str(out)]
    assert main([*args, "--dns", "edge-3", "--ip", "10.0.0.3", "--days", "3"]) == 0
    tls = Tls.from_dir(out)
    assert tls.identity == Identity("edge", "edge-3")
    assert all(_mode(p) == 0o600 for p in out.iterdir())
    capsys.readouterr()
    assert main(["certs", "show", str(out / "tls.crt")]) == 0
    shown = capsys.readouterr().out
    assert "edgecode://edge/edge-3" in shown and "10.0.0.3" in shown
    assert main(["certs", "issue", "wizard", "x", "--dir", str(ca_dir)]) == 2


# ---- data directories --------------------------------------------------------------------------


def test_data_dirs_confine_without_telling_about_the_file(tmp_path: Path) -> None:
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    (outside / "secret.csv").write_text("1,2\n")
    (data / "link.csv").symlink_to(outside / "secret.csv")
    dirs = DataDirs([data])
    assert dirs.confine(data / "x.csv", "dataset") == data.resolve() / "x.csv"
    messages = set()
    for path in (
        outside / "secret.csv",
        outside / "missing.csv",
        outside,
        data / ".." / "outside" / "secret.csv",
        data / "link.csv",
        "~/x.csv",
        "relative.csv",  # relative to the working directory, which is not a data directory
    ):
        with pytest.raises(NotAllowed) as info:
            dirs.confine(path, "dataset")
        messages.add(str(info.value))
    assert messages == {"dataset: files outside the master's data directories are not allowed"}
    with pytest.raises(NotAllowed):
        DataDirs([]).confine(data / "x.csv", "dataset")  # no data directories: no files
    assert DataDirs.parse(f"{data}{os.pathsep}{outside}").roots == (data.resolve(), outside)


def test_job_config_confines_dataset_and_model_files(tmp_path: Path) -> None:
    dirs = DataDirs([tmp_path])
    JobConfig(dataset="breast_cancer").validate(dirs)  # bundled and synthetic names pass
    JobConfig(dataset="synthetic-lsq:n=50,d=3").validate(dirs)
    for config in (
        JobConfig(dataset="/etc/passwd"),
        JobConfig(dataset="/etc/passwd:task=binary"),
        JobConfig(model="torch:/etc/evil.py:net"),
    ):
        with pytest.raises(NotAllowed):
            config.validate(dirs)
    # a name that is no data set and no path is a typo, not a file: INVALID, not refused
    with pytest.raises(InvalidInput, match="must be one of") as info:
        JobConfig(dataset="breast_cancr").validate(dirs)
    assert not isinstance(info.value, NotAllowed)
    # unconfined (in-process use): the old behaviour, a missing file is reported as missing
    with pytest.raises(ValueError, match="not found"):
        JobConfig(dataset=str(tmp_path / "none.csv")).validate()


@pytest.mark.parametrize("role", ["coordinator", "master", "aggregator", "worker"])
def test_a_service_without_certificates_or_insecure_does_not_start(
    role: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("TLS_CA", "TLS_CERT", "TLS_KEY", "TLS_DIR", "INSECURE"):
        monkeypatch.delenv(f"EDGECODE_{key}", raising=False)
    extra = ["--coordinator", "127.0.0.1:1"] if role == "master" else []
    assert main([role, "--port", "0", "--metrics-port", "0", *extra]) == 2
    error = capsys.readouterr().err
    assert "mutual TLS needs ['tls_ca', 'tls_cert', 'tls_key']" in error
    assert "--insecure" in error


def test_a_client_without_certificates_or_insecure_is_one_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("TLS_CA", "TLS_CERT", "TLS_KEY", "TLS_DIR", "INSECURE"):
        monkeypatch.delenv(f"EDGECODE_{key}", raising=False)
    assert main(["train", "--master", "127.0.0.1:5"]) == 2
    error = capsys.readouterr().err
    assert "client: mutual TLS needs" in error and "--insecure" in error
