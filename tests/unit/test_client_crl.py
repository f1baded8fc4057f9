"""The client CRL check (verifier.revocation) alone, with a clock we set; and its config key."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from verifier import pki
from verifier.config import ConfigError, load_config
from verifier.identity import Role, identity_from_certificate
from verifier.pki_crl import CRL_FILE, revoke, write_crl
from verifier.revocation import ClientRevocationList, RevocationError

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def _cert(files: pki.IssuedFiles) -> x509.Certificate:
    return x509.load_pem_x509_certificate(files.certificate.read_bytes())


def _check(crl: ClientRevocationList, files: pki.IssuedFiles) -> None:
    cert = _cert(files)
    crl.check(cert, identity_from_certificate(cert))


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    directory = tmp_path / "ca"
    pki.init_ca(directory)
    return directory


def test_current_until_next_update_then_stale(ca: Path) -> None:
    alice = pki.issue_operator(ca, "alice", [Role.VIEWER])
    write_crl(ca, days=7, now=T0)
    now = [T0]
    crl = ClientRevocationList(ca / CRL_FILE, ca / pki.CA_CERTIFICATE, now=lambda: now[0])
    _check(crl, alice)
    now[0] = T0 + datetime.timedelta(days=7)
    _check(crl, alice)  # good up to and including next_update
    now[0] += datetime.timedelta(seconds=1)
    with pytest.raises(
        RevocationError, match=r"^authz.crl_stale: .* expired at 2030-01-08T00:00:00Z"
    ):
        _check(crl, alice)


def test_a_crl_dated_in_the_future_is_refused(ca: Path) -> None:
    alice = pki.issue_operator(ca, "alice", [Role.VIEWER])
    write_crl(ca, now=T0 + datetime.timedelta(hours=1))
    crl = ClientRevocationList(ca / CRL_FILE, ca / pki.CA_CERTIFICATE, now=lambda: T0)
    with pytest.raises(RevocationError, match=r"^authz.crl_invalid: .* dated in the future"):
        _check(crl, alice)
    # A few minutes' clock skew is tolerated.
    write_crl(ca, now=T0 + datetime.timedelta(minutes=4))
    _check(crl, alice)


def test_a_der_crl_is_read_too_and_lists_the_revoked(ca: Path) -> None:
    alice = pki.issue_operator(ca, "alice", [Role.VIEWER])
    bob = pki.issue_operator(ca, "bob", [Role.VIEWER])
    revoke(ca, certificate=alice.certificate, reason="unspecified")
    pem = x509.load_pem_x509_crl((ca / CRL_FILE).read_bytes())
    der = ca / "ca.crl.der"
    der.write_bytes(pem.public_bytes(serialization.Encoding.DER))
    now = datetime.datetime.now(datetime.UTC)
    crl = ClientRevocationList(der, ca / pki.CA_CERTIFICATE, now=lambda: now)
    with pytest.raises(
        RevocationError, match=r"^authz.revoked: 'alice' .* was revoked: unspecified$"
    ):
        _check(crl, alice)
    _check(crl, bob)
    assert "1 revoked" in crl.describe()


def test_a_certificate_of_another_issuer_is_not_covered(tmp_path: Path, ca: Path) -> None:
    """With two CAs trusted for clients, one CRL speaks only for its own issuer."""
    other = tmp_path / "other"
    pki.init_ca(other, name="another client CA")
    stranger = pki.issue_operator(other, "stranger", [Role.VIEWER])
    both = tmp_path / "clients-ca.pem"
    both.write_bytes(
        (ca / pki.CA_CERTIFICATE).read_bytes() + (other / pki.CA_CERTIFICATE).read_bytes()
    )
    write_crl(ca)
    now = datetime.datetime.now(datetime.UTC)
    crl = ClientRevocationList(ca / CRL_FILE, both, now=lambda: now)
    with pytest.raises(RevocationError, match=r"^authz.crl_invalid: .* does not cover 'stranger'"):
        _check(crl, stranger)


def test_config_reads_client_crl_relative_to_the_file_and_names_a_missing_one(
    tmp_path: Path,
) -> None:
    key = tmp_path / "server.key"
    key.write_text("key")
    key.chmod(0o600)
    (tmp_path / "clients.crl").write_text("crl")
    text = (
        "[verifier]\nrequire_ek_certificate = false\n[verifier.tls]\n"
        'certificate = "server.crt"\nprivate_key = "server.key"\nclient_ca = "ca.crt"\n'
    )
    path = tmp_path / "verifier.toml"
    path.write_text(text)
    tls = load_config(path).tls
    assert tls is not None and tls.client_crl is None
    path.write_text(text + 'client_crl = "clients.crl"\n')
    tls = load_config(path).tls
    assert tls is not None and tls.client_crl == tmp_path / "clients.crl"
    path.write_text(text + 'client_crl = "missing.crl"\n')
    with pytest.raises(
        ConfigError, match=r"verifier.toml:7: \[verifier.tls\] client_crl: .*missing"
    ):
        load_config(path)
    path.write_text(text + "client_crl = 7\n")
    with pytest.raises(ConfigError, match=r":7: \[verifier.tls\] client_crl: expected a path"):
        load_config(path)
