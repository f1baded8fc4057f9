"""Parse an Intel TDX quote, version 4 or 5 (untrusted bytes) into frozen dataclasses.

Layout (Intel TDX DCAP Quote Generation Library and Quote Verification Library
API, "Quote Format" appendix; all integers little-endian):

* header, 48 bytes: version u16 (4 or 5), attestation key type u16 (2 =
  ECDSA-256-with-P-256), TEE type u32 (0x81 = TDX), two reserved u16 (zero),
  QE vendor id (16), user data (20);
* v4: the TD 1.0 report body (584 bytes). v5: body type u16 (2 = TD 1.0, 3 =
  TD 1.5; 1 is an SGX body, not TDX) and body size u32 (584 or 648), then the body;
* signature data length u32, then exactly that many bytes: ECDSA r||s (64) over
  SHA-256 of header||body (for v5 including the type and size fields), the
  attestation public key x||y (64), and certification data: type u16, size u32,
  data. Only type 6 (QE report certification data) is accepted: QE report (384),
  its signature (64), QE auth data (u16 size + data) and inner certification
  data, which must be type 5, a PEM PCK chain.

:func:`parse_quote` checks every length against what is left and the bounds
below, and rejects trailing bytes. The quote-generation ioctl returns the quote
in a fixed-size zero-filled buffer; :func:`strip_zero_padding` trims such
padding (zeros only) explicitly before parsing, never anything else.
Every failure is a :class:`ParseError` with a stable code.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from verifier.evidence.errors import ParseError

__all__ = [
    "ATTESTATION_KEY_ECDSA_P256",
    "INTEL_QE_VENDOR_ID",
    "MAX_QUOTE_SIZE",
    "TEE_TYPE_TDX",
    "EnclaveReport",
    "QeCertificationData",
    "Quote",
    "QuoteHeader",
    "TdReport",
    "parse_quote",
    "strip_zero_padding",
]

TEE_TYPE_TDX = 0x81
ATTESTATION_KEY_ECDSA_P256 = 2
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
CERT_DATA_PCK_CHAIN_PEM = 5
CERT_DATA_QE_REPORT = 6
BODY_TYPE_TD10 = 2
BODY_TYPE_TD15 = 3

HEADER_SIZE = 48
TD10_BODY_SIZE = 584
TD15_BODY_SIZE = 648
ENCLAVE_REPORT_SIZE = 384
ECDSA_SIZE = 64

# Real quotes are about 5 KB (a 3.7 KB PEM chain dominates); the ioctl buffer of
# the vectors is 8000 bytes. 64 KiB leaves room for longer chains while bounding
# the work a hostile quote can cause.
MAX_QUOTE_SIZE = 64 * 1024
# Intel's PCK chain is three certificates of about 1.2 KB in PEM each.
MAX_PCK_CHAIN_SIZE = 16 * 1024
# The QE auth data is 32 bytes in every Intel QE; the u16 allows 64 KiB.
MAX_QE_AUTH_DATA = 1024

_HEADER = struct.Struct("<HHIHH16s20s")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_CERT_HEADER = struct.Struct("<HI")
_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----"
)


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    version: int
    attestation_key_type: int
    tee_type: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True, slots=True)
class TdReport:
    """The TD report body (TD 1.0; TD 1.5 adds ``tee_tcb_svn2`` and ``mr_servicetd``)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_servicetd: bytes | None = None

    @property
    def debug(self) -> bool:
        """TDATTRIBUTES bit 0 (TUD.DEBUG): the host VMM can read and write TD memory."""
        return bool(self.td_attributes[0] & 0x01)


@dataclass(frozen=True, slots=True)
class EnclaveReport:
    """An SGX report body (the QE's), the fields verification reads."""

    cpu_svn: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes
    raw: bytes  # exactly the 384 signed bytes


@dataclass(frozen=True, slots=True)
class QeCertificationData:
    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes


@dataclass(frozen=True, slots=True)
class Quote:
    header: QuoteHeader
    body_type: int  # BODY_TYPE_TD10 or BODY_TYPE_TD15 (v4: always TD10)
    body: TdReport
    signed_bytes: bytes  # header (+ v5 type/size) + body, sliced from the input
    signature: bytes  # r || s
    attestation_key: bytes  # x || y
    certification: QeCertificationData


class _Reader:
    def __init__(self, data: bytes, *, base: int = 0) -> None:
        self.data = data
        self.offset = 0
        self.base = base

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def take(self, size: int, what: str) -> bytes:
        if size > self.remaining:
            raise ParseError(
                f"TDX quote: {what} needs {size} bytes, {self.remaining} left "
                f"at offset {self.base + self.offset}",
                code="truncated",
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def u16(self, what: str) -> int:
        value: int = _U16.unpack(self.take(2, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = _U32.unpack(self.take(4, what))[0]
        return value


def _fail(message: str, code: str = "malformed") -> ParseError:
    return ParseError(f"TDX quote: {message}", code=code)


def _parse_header(reader: _Reader) -> QuoteHeader:
    version, key_type, tee_type, reserved1, reserved2, vendor, user = _HEADER.unpack(
        reader.take(HEADER_SIZE, "header")
    )
    if version not in (4, 5):
        raise _fail(f"version {version} (only 4 and 5 are TDX quotes)", "unsupported_version")
    if tee_type != TEE_TYPE_TDX:
        raise _fail(f"TEE type 0x{tee_type:x} is not TDX (0x81)", "not_tdx")
    if key_type != ATTESTATION_KEY_ECDSA_P256:
        raise _fail(f"attestation key type {key_type} is not ECDSA P-256", "unsupported_key")
    if reserved1 or reserved2:
        raise _fail("reserved header bytes 8..11 are not zero")
    return QuoteHeader(version, key_type, tee_type, vendor, user)


def _parse_body(raw: bytes, *, td15: bool) -> TdReport:
    r = _Reader(raw, base=HEADER_SIZE)
    fields = {
        "tee_tcb_svn": r.take(16, "TEE_TCB_SVN"),
        "mr_seam": r.take(48, "MRSEAM"),
        "mr_signer_seam": r.take(48, "MRSIGNERSEAM"),
        "seam_attributes": r.take(8, "SEAMATTRIBUTES"),
        "td_attributes": r.take(8, "TDATTRIBUTES"),
        "xfam": r.take(8, "XFAM"),
        "mr_td": r.take(48, "MRTD"),
        "mr_config_id": r.take(48, "MRCONFIGID"),
        "mr_owner": r.take(48, "MROWNER"),
        "mr_owner_config": r.take(48, "MROWNERCONFIG"),
    }
    rtmrs = (r.take(48, "RTMR0"), r.take(48, "RTMR1"), r.take(48, "RTMR2"), r.take(48, "RTMR3"))
    report_data = r.take(64, "REPORTDATA")
    if not td15:
        return TdReport(**fields, rtmrs=rtmrs, report_data=report_data)
    return TdReport(
        **fields,
        rtmrs=rtmrs,
        report_data=report_data,
        tee_tcb_svn2=r.take(16, "TEE_TCB_SVN2"),
        mr_servicetd=r.take(48, "MRSERVICETD"),
    )


def parse_enclave_report(raw: bytes) -> EnclaveReport:
    """A 384-byte SGX report body (Intel SGX SDK ``sgx_report_body_t``)."""
    if len(raw) != ENCLAVE_REPORT_SIZE:
        raise _fail(f"enclave report of {len(raw)} bytes", "truncated")
    (misc_select,) = _U32.unpack_from(raw, 16)
    isv_prod_id, isv_svn = struct.unpack_from("<HH", raw, 256)
    return EnclaveReport(
        cpu_svn=raw[0:16],
        misc_select=misc_select,
        attributes=raw[48:64],
        mr_enclave=raw[64:96],
        mr_signer=raw[128:160],
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        report_data=raw[320:384],
        raw=raw,
    )


def _check_pem_chain(data: bytes) -> bytes:
    """The PEM chain of certification data type 5, with a C-string NUL trimmed."""
    text = data.rstrip(b"\x00")
    if not text.strip():
        raise _fail("empty PCK certificate chain", "bad_certification_data")
    # Outside the PEM blocks only whitespace may appear: a DER chain (Intel's test
    # sample does that) or anything else is not the type-5 encoding.
    if _PEM_BLOCK.sub(b"", text).strip():
        raise _fail("PCK chain (type 5) is not PEM certificates only", "bad_certification_data")
    return text


def _parse_certification(raw: bytes, base: int) -> QeCertificationData:
    r = _Reader(raw, base=base)
    cert_type = r.u16("certification data type")
    size = r.u32("certification data size")
    if cert_type != CERT_DATA_QE_REPORT:
        raise _fail(f"certification data type {cert_type}, expected 6", "bad_certification_data")
    if size != r.remaining:
        raise _fail(f"certification data size {size}, {r.remaining} bytes follow")
    qe_report = parse_enclave_report(r.take(ENCLAVE_REPORT_SIZE, "QE report"))
    qe_signature = r.take(ECDSA_SIZE, "QE report signature")
    auth_size = r.u16("QE auth data size")
    if auth_size > MAX_QE_AUTH_DATA:
        raise _fail(f"QE auth data of {auth_size} bytes", "too_large")
    auth = r.take(auth_size, "QE auth data")
    inner_type = r.u16("inner certification data type")
    inner_size = r.u32("inner certification data size")
    if inner_type != CERT_DATA_PCK_CHAIN_PEM:
        raise _fail(
            f"inner certification data type {inner_type}, expected 5", "bad_certification_data"
        )
    if inner_size > MAX_PCK_CHAIN_SIZE:
        raise _fail(f"PCK chain of {inner_size} bytes", "too_large")
    if inner_size != r.remaining:
        raise _fail(f"inner certification data size {inner_size}, {r.remaining} bytes follow")
    chain = _check_pem_chain(r.take(inner_size, "PCK chain"))
    return QeCertificationData(qe_report, qe_signature, auth, chain)


def _declared_end(data: bytes) -> int:
    """Where the signature data ends, from the length fields alone (no other checks)."""
    r = _Reader(data)
    header = _parse_header(r)
    if header.version == 5:
        r.take(2, "body type")
        r.take(r.u32("body size"), "body")
    else:
        r.take(TD10_BODY_SIZE, "body")
    r.take(r.u32("signature data length"), "signature data")
    return r.offset


def strip_zero_padding(data: bytes) -> tuple[bytes, int]:
    """``data`` without the zero bytes after the quote's declared end, and their count.

    Only an all-zero tail is removed (a fixed-size ioctl buffer); any other tail is
    left in place for :func:`parse_quote` to reject. Raises ParseError only.
    """
    if len(data) > MAX_QUOTE_SIZE:
        raise _fail(f"{len(data)} bytes exceeds {MAX_QUOTE_SIZE}", "too_large")
    end = _declared_end(data)
    tail = data[end:]
    if tail and not tail.strip(b"\x00"):
        return data[:end], len(tail)
    return data, 0


def parse_quote(data: bytes) -> Quote:
    """Parse a whole TDX quote v4/v5 (checks: module docstring); raises ParseError only."""
    data = bytes(data)
    if len(data) > MAX_QUOTE_SIZE:
        raise _fail(f"{len(data)} bytes exceeds {MAX_QUOTE_SIZE}", "too_large")
    r = _Reader(data)
    header = _parse_header(r)
    body_type = BODY_TYPE_TD10
    if header.version == 5:
        body_type = r.u16("body type")
        body_size = r.u32("body size")
        expected = {BODY_TYPE_TD10: TD10_BODY_SIZE, BODY_TYPE_TD15: TD15_BODY_SIZE}.get(body_type)
        if expected is None:
            raise _fail(f"v5 body type {body_type} is not a TD report", "not_tdx")
        if body_size != expected:
            raise _fail(f"v5 body type {body_type} with size {body_size}, expected {expected}")
        body_raw = r.take(body_size, "body")
    else:
        body_raw = r.take(TD10_BODY_SIZE, "body")
    body = _parse_body(body_raw, td15=body_type == BODY_TYPE_TD15)
    signed_end = r.offset
    sig_length = r.u32("signature data length")
    if sig_length > r.remaining:
        raise _fail(f"signature data length {sig_length}, {r.remaining} bytes left", "truncated")
    if sig_length < r.remaining:
        raise _fail(f"{r.remaining - sig_length} bytes after the signature data", "trailing_bytes")
    sig_base = r.offset
    signature = r.take(ECDSA_SIZE, "quote signature")
    key = r.take(ECDSA_SIZE, "attestation key")
    certification = _parse_certification(data[r.offset :], sig_base + 2 * ECDSA_SIZE)
    return Quote(
        header=header,
        body_type=body_type,
        body=body,
        signed_bytes=data[:signed_end],
        signature=signature,
        attestation_key=key,
        certification=certification,
    )
