"""X.509 pieces every simulated hierarchy builds from: validity, TEST names, key usage.

Each simulator names its certificates "... TEST ... (simulator)" under its own
TEST organisation, so nobody takes them for the vendor's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

__all__ = ["BACKDATE", "Validity", "builder", "key_usage", "pem", "simulator_name"]

# Not-before a little in the past so a verifier whose clock lags ours by
# minutes still sees valid certificates (and CRLs and collateral).
BACKDATE = timedelta(hours=1)


@dataclass(frozen=True)
class Validity:
    not_before: datetime
    not_after: datetime

    @classmethod
    def starting(cls, now: datetime, days: int) -> Validity:
        return cls(now - BACKDATE, now + timedelta(days=days))


def simulator_name(common_name: str, organization: str, *, serial: str | None = None) -> x509.Name:
    """CN ``common_name``, O ``organization`` and, where given, serialNumber ``serial``."""
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
    ]
    if serial is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    return x509.Name(attributes)


def key_usage(*, ca: bool, content_commitment: bool = False) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; anything else signs data."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    validity: Validity,
    *,
    serial_number: int | None = None,
) -> x509.CertificateBuilder:
    """A certificate of ``subject`` by ``issuer`` for ``validity``, yet without extensions.

    ``serial_number`` None: a random one.
    """
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number() if serial_number is None else serial_number)
        .not_valid_before(validity.not_before)
        .not_valid_after(validity.not_after)
    )


def pem(*certificates: x509.Certificate) -> bytes:
    """The certificates as PEM, one after the other."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
