"""Read AMD SEV-SNP certificates: VCEK/VLEK extensions, and DER/PEM loading.

AMD's KDS puts the key's identity in private extensions (AMD "Versioned Chip
Endorsement Key" spec, VCEK certificate extensions), each a DER value:

* 1.3.6.1.4.1.3704.1.1 structVersion (INTEGER), .1.2 productName (IA5String,
  "Milan-B0", "Genoa", "Turin"), .1.3.x the SPLs (INTEGER 0-255): .1 blSPL,
  .2 teeSPL, .3 snpSPL, .4-.7 spl4-7 (reserved TCB bytes, normally 0; kept in
  ``reserved_spls``), .8 ucodeSPL, .9 fmcSPL (Turin);
* .1.4 hwID (VCEK only): the CHIP_ID, 64 bytes (8 on Turin), found both as the
  raw bytes (every real KDS certificate) and as a DER OCTET STRING;
* .1.5 cspId (VLEK only, IA5String): the cloud provider the VLEK was issued to.

Everything here is a parse of untrusted bytes: only ParseError escapes.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from verifier.evidence.errors import ParseError
from verifier.evidence.snp.tcb import ProductLine, product_from_name

__all__ = [
    "AmdKeyCert",
    "KeyKind",
    "load_certificates",
    "read_key_cert",
]

_AMD = "1.3.6.1.4.1.3704.1."
OID_STRUCT_VERSION = _AMD + "1"
OID_PRODUCT_NAME = _AMD + "2"
OID_HWID = _AMD + "4"
OID_CSP_ID = _AMD + "5"
# SPL OID suffix -> the TcbVersion component it certifies.
SPL_OIDS: Mapping[str, str] = {
    _AMD + "3.1": "bootloader",
    _AMD + "3.2": "tee",
    _AMD + "3.3": "snp",
    _AMD + "3.8": "microcode",
    _AMD + "3.9": "fmc",
}
# The reserved SPLs: they certify the TCB_VERSION bytes no component names
# (tcb.TCB_LAYOUT), normally 0, and are compared with the report's like the rest.
RESERVED_SPL_OIDS: Mapping[str, str] = {_AMD + f"3.{n}": f"spl{n}" for n in (4, 5, 6, 7)}

# A KDS certificate is about 1.4 KB DER; a PEM bundle of VCEK + ASK + ARK about
# 6.5 KB. 64 KiB and 8 certificates bound the DER work one input can cost.
MAX_CERT_INPUT = 64 * 1024
MAX_CERTS = 8
_HWID_SIZES = frozenset({64, 8})  # Milan/Genoa CHIP_ID is 64 bytes, Turin's hwID 8


class KeyKind(enum.Enum):
    """VCEK (per chip, under the ASK) or VLEK (per cloud provider, under the ASVK)."""

    VCEK = "VCEK"
    VLEK = "VLEK"


@dataclass(frozen=True, slots=True)
class AmdKeyCert:
    """A VCEK or VLEK certificate and what its AMD extensions say (not yet verified)."""

    certificate: x509.Certificate
    kind: KeyKind
    product_name: str
    product: ProductLine
    struct_version: int
    spls: Mapping[str, int]  # component ("bootloader", "tee", ...) -> SPL
    reserved_spls: Mapping[str, int]  # "spl4".."spl7" -> SPL, those present
    hwid: bytes | None  # VCEK only
    csp_id: str | None  # VLEK only


_FIELD_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def load_certificates(data: bytes, what: str = "certificate") -> list[x509.Certificate]:
    """The certificates in ``data``: one DER certificate, or PEM (one or more).

    Every field the checks read is decoded here, so that a malformed one is a
    ParseError now rather than an exception deep in a check.
    """
    if len(data) > MAX_CERT_INPUT:
        raise ParseError(f"{what}: over {MAX_CERT_INPUT} bytes", code="too_large")
    is_pem = b"-----BEGIN CERTIFICATE-----" in data
    if is_pem and data.count(b"-----BEGIN CERTIFICATE-----") > MAX_CERTS:
        raise ParseError(f"{what}: over {MAX_CERTS} certificates", code="too_large")
    try:
        # KDS issued early VCEKs with serial number 0, which RFC 5280 forbids and
        # cryptography warns about; the warning says nothing about authenticity.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)  # malformed-name notices: refused below
            if is_pem:
                certificates = x509.load_pem_x509_certificates(data)
            else:
                certificates = [x509.load_der_x509_certificate(data)]
            for certificate in certificates:
                _ = (certificate.subject, certificate.issuer, certificate.extensions)
                _ = (certificate.not_valid_before_utc, certificate.not_valid_after_utc)
                _ = (certificate.public_key(), certificate.signature_algorithm_oid)
                _ = certificate.serial_number
    except (*_FIELD_ERRORS, x509.InvalidVersion) as exc:
        raise ParseError(f"{what} does not parse: {exc}") from None
    return certificates


def _tlv(value: bytes, tag: int, what: str) -> bytes:
    """The contents of a single short-form DER TLV with ``tag`` filling ``value``."""
    if len(value) < 2 or value[0] != tag or value[1] >= 0x80 or len(value) != 2 + value[1]:
        raise ParseError(f"{what}: not a single DER value of tag 0x{tag:02x}", code="bad_extension")
    return value[2:]


def _spl(value: bytes, what: str) -> int:
    body = _tlv(value, 0x02, what)
    # A minimal DER INTEGER 0-255: one byte 0-127, or 0x00 then a byte 128-255.
    if len(body) == 1 and not body[0] & 0x80:
        return body[0]
    if len(body) == 2 and body[0] == 0 and body[1] & 0x80:
        return body[1]
    raise ParseError(f"{what}: not an SPL (minimal INTEGER 0-255)", code="bad_extension")


def _ia5(value: bytes, what: str) -> str:
    body = _tlv(value, 0x16, what)
    if not all(0x20 <= c < 0x7F for c in body):
        raise ParseError(f"{what}: not printable IA5String", code="bad_extension")
    return body.decode("ascii")


def _hwid(value: bytes) -> bytes:
    if len(value) in _HWID_SIZES:
        return value
    # The OCTET STRING form is two bytes longer, so the lengths cannot be confused.
    body = _tlv(value, 0x04, "hwID")
    if len(body) not in _HWID_SIZES:
        raise ParseError(f"hwID of {len(body)} bytes", code="bad_extension")
    return body


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else ""


def read_key_cert(certificate: x509.Certificate) -> AmdKeyCert:
    """The AMD extensions of a VCEK or VLEK (subject CN "SEV-VCEK" / "SEV-VLEK").

    Raises ParseError (``not_amd_key``, ``bad_extension``, ``unknown_product``)
    when the certificate is not one or an extension does not decode.
    """
    common_name = _common_name(certificate)
    kinds = {"SEV-VCEK": KeyKind.VCEK, "SEV-VLEK": KeyKind.VLEK}
    if common_name not in kinds:
        raise ParseError(
            f"subject CN {common_name!r} is not SEV-VCEK or SEV-VLEK", code="not_amd_key"
        )
    kind = kinds[common_name]
    found: dict[str, bytes] = {}
    for extension in certificate.extensions:
        oid = extension.oid.dotted_string
        if oid.startswith(_AMD) and isinstance(extension.value, x509.UnrecognizedExtension):
            found[oid] = extension.value.value
    for required in (OID_STRUCT_VERSION, OID_PRODUCT_NAME):
        if required not in found:
            raise ParseError(f"{kind.value} lacks extension {required}", code="bad_extension")
    product_name = _ia5(found[OID_PRODUCT_NAME], "productName")
    product = product_from_name(product_name)
    if product is None:
        raise ParseError(
            f"productName {product_name!r} is not a known line", code="unknown_product"
        )
    spls = {name: _spl(found[oid], name) for oid, name in SPL_OIDS.items() if oid in found}
    reserved = {
        name: _spl(found[oid], name) for oid, name in RESERVED_SPL_OIDS.items() if oid in found
    }
    hwid = _hwid(found[OID_HWID]) if OID_HWID in found else None
    csp_id = _ia5(found[OID_CSP_ID], "cspId") if OID_CSP_ID in found else None
    return AmdKeyCert(
        certificate=certificate,
        kind=kind,
        product_name=product_name,
        product=product,
        struct_version=_spl(found[OID_STRUCT_VERSION], "structVersion"),
        spls=spls,
        reserved_spls=reserved,
        hwid=hwid,
        csp_id=csp_id,
    )
