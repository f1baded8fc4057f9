"""The TEST AMD key hierarchy of a simulated SNP host: ARK -> ASK -> VCEK.

It mirrors AMD's (AMD KDS spec): a self-signed ARK per product line signs the
ASK (subject CN "SEV-<line>", the name the verifier requires of a VCEK's
issuer), which signs the chip's VCEK (CN "SEV-VCEK") carrying AMD's private
extensions: structVersion, productName, one SPL per TCB component and the
chip's hwID. ARK and ASK are RSA-4096 and every link is RSASSA-PSS SHA-384 with
MGF1-SHA-384 and a 48-byte salt, as AMD signs; the VCEK is ECDSA P-384.

The ARK is named "weightgate TEST ARK-<line> (simulator)" so that nobody takes it
for AMD's: the verifier pins AMD's ARKs by certificate SHA-256, so it trusts this
one only where a test pins its fingerprint explicitly.

AMD's ARK also issues the line's CRL of revoked ASKs/ASVKs (KDS
``/vcek/v1/<line>/crl``): :func:`make_hierarchy_with_ark` keeps the ARK's key in
memory (:class:`IssuingArk`) so that a test can issue such CRLs; nothing writes it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from devsim.x509util import Validity, builder, key_usage, simulator_name

__all__ = [
    "Hierarchy",
    "IssuingArk",
    "Validity",
    "make_hierarchy",
    "make_hierarchy_with_ark",
    "vcek_extensions",
]

TEST_ORG = "weightgate TEST (simulator, not AMD)"
RSA_BITS = 4096  # the verifier refuses AMD CA keys under 4096 bits, as AMD's are
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)

_AMD = "1.3.6.1.4.1.3704.1."
OID_STRUCT_VERSION = _AMD + "1"
OID_PRODUCT_NAME = _AMD + "2"
OID_HWID = _AMD + "4"
# KDS SPL OIDs: .3.1 blSPL, .3.2 teeSPL, .3.3 snpSPL, .3.4-.3.7 spl4-7 (zero), .3.8 ucodeSPL.
_SPL_OIDS = {
    "bootloader": _AMD + "3.1",
    "tee": _AMD + "3.2",
    "snp": _AMD + "3.3",
    "spl4": _AMD + "3.4",
    "spl5": _AMD + "3.5",
    "spl6": _AMD + "3.6",
    "spl7": _AMD + "3.7",
    "microcode": _AMD + "3.8",
}


@dataclass(frozen=True)
class Hierarchy:
    """The certificates of one simulated chip and its VCEK key (ARK/ASK keys are dropped)."""

    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    vcek_key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class IssuingArk:
    """A TEST ARK with its private key, held in memory only: issues CRLs in tests."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey

    def crl(
        self,
        *,
        this_update: datetime,
        next_update: datetime,
        revoked: Iterable[int] = (),
        signer: rsa.RSAPrivateKey | None = None,
        salt_length: int = 48,
        extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
    ) -> bytes:
        """A DER CRL by this ARK listing the serials ``revoked``, as KDS serves one.

        Signed RSASSA-PSS SHA-384, MGF1-SHA-384 with ``salt_length`` (AMD's: 48) by
        ``signer`` (default: this ARK's key); ``extensions``: (value, critical) pairs.
        """
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(this_update)
            .next_update(next_update)
        )
        for serial in revoked:
            entry = x509.RevokedCertificateBuilder().serial_number(serial)
            builder = builder.add_revoked_certificate(entry.revocation_date(this_update).build())
        for value, critical in extensions:
            builder = builder.add_extension(value, critical=critical)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=salt_length)
        crl = builder.sign(signer or self.key, hashes.SHA384(), rsa_padding=pss)
        return crl.public_bytes(serialization.Encoding.DER)


def ark_common_name(product: str) -> str:
    return f"weightgate TEST ARK-{product} (simulator)"


def _name(common_name: str) -> x509.Name:
    return simulator_name(common_name, TEST_ORG)


def _der_integer(value: int) -> bytes:
    """A minimal DER INTEGER 0-255 (the only form the verifier accepts for an SPL)."""
    if not 0 <= value <= 255:
        raise ValueError(f"SPL {value} is not 0-255")
    return bytes([0x02, 1, value]) if value < 0x80 else bytes([0x02, 2, 0, value])


def _ia5(text: str) -> bytes:
    body = text.encode("ascii")
    if len(body) >= 0x80:
        raise ValueError("productName too long for a short-form DER length")
    return bytes([0x16, len(body)]) + body


def vcek_extensions(product: str, spls: Mapping[str, int], hwid: bytes) -> dict[str, bytes]:
    """OID -> DER value of each AMD extension a VCEK for this chip and TCB carries.

    hwID is the raw CHIP_ID, as every KDS certificate carries it.
    """
    values = {
        OID_STRUCT_VERSION: _der_integer(1),
        OID_PRODUCT_NAME: _ia5(product),
        OID_HWID: bytes(hwid),
    }
    for component, oid in _SPL_OIDS.items():
        values[oid] = _der_integer(spls.get(component, 0))
    return values


def _ca(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey,
    signer: rsa.RSAPrivateKey,
    validity: Validity,
) -> x509.Certificate:
    return (
        builder(subject, issuer, public_key, validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .sign(signer, hashes.SHA384(), rsa_padding=_PSS)
    )


def make_hierarchy(
    product: str, spls: Mapping[str, int], chip_id: bytes, validity: Validity
) -> Hierarchy:
    """A fresh TEST ARK, ASK and VCEK for one chip of ``product`` at TCB ``spls``."""
    return make_hierarchy_with_ark(product, spls, chip_id, validity)[0]


def make_hierarchy_with_ark(
    product: str, spls: Mapping[str, int], chip_id: bytes, validity: Validity
) -> tuple[Hierarchy, IssuingArk]:
    """:func:`make_hierarchy`, and its ARK with the key (to issue CRLs; never written)."""
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    ark_name = _name(ark_common_name(product))
    ask_name = _name(f"SEV-{product}")
    ark = _ca(ark_name, ark_name, ark_key.public_key(), ark_key, validity)
    ask = _ca(ask_name, ark_name, ask_key.public_key(), ark_key, validity)
    vcek_builder = builder(
        _name("SEV-VCEK"),
        ask_name,
        vcek_key.public_key(),
        validity,
        # KDS serials are small integers; a random positive one keeps each chip distinct.
        serial_number=secrets.randbits(63) | 1,
    )
    for oid, value in vcek_extensions(product, spls, chip_id).items():
        vcek_builder = vcek_builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
        )
    vcek = vcek_builder.sign(ask_key, hashes.SHA384(), rsa_padding=_PSS)
    hierarchy = Hierarchy(ark=ark, ask=ask, vcek=vcek, vcek_key=vcek_key)
    return hierarchy, IssuingArk(certificate=ark, key=ark_key)
