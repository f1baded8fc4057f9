"""Secure Boot signature databases and authorities as facts.

An EFI_SIGNATURE_LIST entry of type X.509 becomes a :class:`Certificate`: the
SHA-256 of its exact DER bytes (what references pin) and, for people, its subject
as ``cryptography`` reads it (None when it cannot; the fingerprint stays exact).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509

from verifier.evidence.tpm.efi_variables import (
    EFI_CERT_SHA256,
    EFI_CERT_X509,
    SignatureEntry,
    format_guid,
    parse_uefi_variable_prefix,
)
from verifier.evidence.tpm.eventlog import Event

__all__ = [
    "Authority",
    "Certificate",
    "SignatureDatabase",
    "authority",
    "certificate",
    "signature_database",
]


@dataclass(frozen=True, slots=True)
class Certificate:
    """An X.509 entry: ``sha256`` of its DER, its subject (None: unparsable), owner GUID."""

    sha256: str
    subject: str | None
    owner: str


@dataclass(frozen=True, slots=True)
class SignatureDatabase:
    """PK, KEK, db or dbx. ``other``: ``<type GUID>:<sha256 of the entry>``."""

    certificates: tuple[Certificate, ...]
    sha256: tuple[str, ...]
    other: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Authority:
    """One EV_EFI_VARIABLE_AUTHORITY: the variable, its value's hash, its certificate."""

    variable: str
    guid: str
    value_sha256: str
    certificate: Certificate | None


def certificate(der: bytes, owner: str) -> Certificate:
    """The fact for one X.509 entry (never raises: ``subject`` is None if unreadable)."""
    subject: str | None
    try:
        subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        subject = None  # the fingerprint is still exact; only the name is lost
    return Certificate(hashlib.sha256(der).hexdigest(), subject, owner)


def signature_database(entries: tuple[SignatureEntry, ...]) -> SignatureDatabase:
    """Sort a variable's entries into certificates, SHA-256 hashes and the rest."""
    certificates: list[Certificate] = []
    hashes: list[str] = []
    other: list[str] = []
    for entry in entries:
        if entry.signature_type == EFI_CERT_X509:
            certificates.append(certificate(entry.data, entry.owner))
        elif entry.signature_type == EFI_CERT_SHA256:
            hashes.append(entry.data.hex())
        else:
            other.append(f"{entry.signature_type}:{hashlib.sha256(entry.data).hexdigest()}")
    return SignatureDatabase(tuple(certificates), tuple(hashes), tuple(other))


def authority(event: Event) -> Authority:
    """An EV_EFI_VARIABLE_AUTHORITY whose data check passed (event_data.py)."""
    variable, _ = parse_uefi_variable_prefix(event.data)
    value = variable.value
    cert: Certificate | None = None
    # The PFP (PCR[7] authority events) logs an EFI_SIGNATURE_DATA (owner GUID +
    # certificate); shim logs the bare DER certificate (go-attestation #157).
    # Anything else (SbatLevel text, MokListTrusted's byte) has no certificate.
    if value[:2] == b"\x30\x82":
        cert = certificate(value, "")
    elif value[16:18] == b"\x30\x82":
        cert = certificate(value[16:], format_guid(value[:16]))
    return Authority(variable.name, variable.guid, hashlib.sha256(value).hexdigest(), cert)
