"""An evaluation PKI: one private CA for the verifier, its operators and its agents.

Client certificates carry what the verifier authorizes on (verifier.identity):
roles as ``urn:weightgate:role:<role>`` SAN URIs and an agent's host as
``urn:weightgate:host:<host_id>``. Keys are EC P-256, written mode 0600 and
atomically (a temporary file linked into place), and no file is ever
overwritten: issuing a name twice is an error, not a silent key rotation.

This is for evaluations and small deployments; a production CA keeps its key
offline or in an HSM and is out of scope here.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from verifier.identity import PERSONNEL_ROLES, Role, host_uri, role_uri
from verifier.pki_files import PkiError, private_directory, write_new
from verifier.pki_records import CA_CERTIFICATE, record_issued

CA_KEY = "ca.key"
ORGANIZATION = "weightgate"
CA_DAYS = 3650
LEAF_DAYS = 365
# Tolerates clocks a few minutes apart between the CA host and its peers.
CLOCK_SKEW = datetime.timedelta(minutes=5)
# Names become file names and host ids: the verifier's identifier alphabet.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class IssuedFiles:
    """A certificate and its private key, both PEM files."""

    certificate: Path
    private_key: Path


def _check_name(name: str, what: str) -> str:
    if not NAME.fullmatch(name):
        raise PkiError(f"{what} {name!r}: expected letters, digits, '.', '_' or '-' (at most 128)")
    return name


def _subject(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def init_ca(directory: Path, *, name: str = "weightgate evaluation CA") -> IssuedFiles:
    """Create ``directory`` (0700) with a new self-signed CA; refuses an existing CA."""
    private_directory(directory)
    files = IssuedFiles(directory / CA_CERTIFICATE, directory / CA_KEY)
    if files.certificate.exists() or files.private_key.exists():
        raise PkiError(f"{directory} already holds a CA; refusing to replace it")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(name))
        .issuer_name(_subject(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    # The key first: a certificate without its key would look like a usable CA.
    write_new(files.private_key, _key_pem(key), 0o600)
    write_new(files.certificate, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERTIFICATE).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot load the CA in {directory} (run `pki init`?): {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{directory / CA_KEY}: not an EC private key")
    return cert, key


def _issue(
    directory: Path,
    *,
    stem: str,
    kind: str,
    common_name: str,
    usage: x509.ObjectIdentifier,
    alt_names: list[x509.GeneralName],
    days: int,
) -> IssuedFiles:
    if days < 1:
        raise PkiError("days: must be at least 1")
    ca_cert, ca_key = load_ca(directory)
    files = IssuedFiles(directory / f"{stem}.crt", directory / f"{stem}.key")
    for path in (files.certificate, files.private_key):
        if path.exists():
            raise PkiError(f"{path} exists; refusing to overwrite it")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    )
    cert = builder.sign(ca_key, hashes.SHA256())
    write_new(files.private_key, _key_pem(key), 0o600)
    write_new(files.certificate, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    # Last: a record without its certificate would name access nobody holds.
    record_issued(directory, cert, kind=kind, file=files.certificate)
    return files


def issue_operator(
    directory: Path, name: str, roles: Iterable[Role], *, days: int = LEAF_DAYS
) -> IssuedFiles:
    """A client certificate for a person, with one or more personnel roles."""
    chosen = frozenset(roles)
    if not chosen:
        raise PkiError("an operator certificate needs at least one role")
    if not chosen <= PERSONNEL_ROLES:
        raise PkiError("the agent role is for agents: use `pki issue agent HOST`")
    uris: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(role_uri(r)) for r in sorted(chosen)
    ]
    return _issue(
        directory,
        stem=f"operator-{_check_name(name, 'operator name')}",
        kind="operator",
        common_name=name,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        alt_names=uris,
        days=days,
    )


def issue_agent(directory: Path, host_id: str, *, days: int = LEAF_DAYS) -> IssuedFiles:
    """A client certificate for the agent of ``host_id``: the agent role and that host."""
    _check_name(host_id, "host id")
    uris: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(role_uri(Role.AGENT)),
        x509.UniformResourceIdentifier(host_uri(host_id)),
    ]
    return _issue(
        directory,
        stem=f"agent-{host_id}",
        kind="agent",
        common_name=host_id,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        alt_names=uris,
        days=days,
    )


def issue_server(
    directory: Path, name: str, sans: Iterable[str] = (), *, days: int = LEAF_DAYS
) -> IssuedFiles:
    """A server certificate for the verifier; ``sans`` are DNS names or IP addresses
    (default: ``name`` itself)."""
    _check_name(name, "server name")
    alt_names: list[x509.GeneralName] = []
    for san in list(sans) or [name]:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            alt_names.append(x509.DNSName(san))
    return _issue(
        directory,
        stem=f"server-{name}",
        kind="server",
        common_name=name,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        alt_names=alt_names,
        days=days,
    )


__all__ = [
    "CA_CERTIFICATE",
    "CA_KEY",
    "IssuedFiles",
    "PkiError",
    "init_ca",
    "issue_agent",
    "issue_operator",
    "issue_server",
    "load_ca",
]
