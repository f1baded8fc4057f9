"""The Intel SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1).

Intel SGX PCK Certificate and CRL Profile, section 1.5: a SEQUENCE of
``SEQUENCE { OBJECT IDENTIFIER, value }`` entries: .1 PPID (OCTET STRING 16),
.2 TCB (SEQUENCE of 16 component SVNs .2.1-.2.16, PCESVN .2.17 and CPUSVN .2.18,
each ``SEQUENCE { OID, value }``), .3 PCE-ID (OCTET STRING 2), .4 FMSPC (OCTET
STRING 6), .5 SGX Type (ENUMERATED), and on Platform CA certificates .6
PlatformInstanceID and .7 Configuration. cryptography exposes the extension
only as raw bytes, so a minimal, bounded DER walker reads it; every entry this
module needs must appear exactly once, and a malformed one raises ParseError.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from verifier.evidence.errors import ParseError

__all__ = ["SGX_EXTENSION_OID", "PckTcb", "parse_sgx_extension", "read_pck_extension"]

SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
# DER content of the OID 1.2.840.113741.1.13.1 (the prefix of every entry's OID).
_SGX_OID = bytes.fromhex("2a864886f84d010d01")

_SEQUENCE = 0x30
_OID = 0x06
_OCTET_STRING = 0x04
_INTEGER = 0x02
_ENUMERATED = 0x0A

# Intel's extension is about 550 bytes; 4 KiB keeps a hostile one cheap.
MAX_EXTENSION_BYTES = 4096
COMPONENT_COUNT = 16


@dataclass(frozen=True, slots=True)
class PckTcb:
    """What a PCK certificate says about its platform."""

    fmspc: bytes  # 6 bytes
    pce_id: bytes  # 2 bytes
    sgx_tcb_components: tuple[int, ...]  # 16 SVNs
    pce_svn: int
    cpu_svn: bytes
    sgx_type: int


def _tlv(data: bytes, offset: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``offset`` before ``end``."""
    if offset + 2 > end:
        raise ParseError("SGX extension: DER element truncated", code="truncated")
    tag = data[offset]
    first = data[offset + 1]
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 2 or start + count > end:
            raise ParseError("SGX extension: DER length form not allowed")
        length = int.from_bytes(data[start : start + count], "big")
        if length < 0x80 or (count == 2 and length < 0x100):
            raise ParseError("SGX extension: DER length not minimal")
        start += count
    if start + length > end:
        raise ParseError("SGX extension: DER content overruns", code="truncated")
    return tag, start, start + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    found = []
    offset = start
    while offset < end:
        element = _tlv(data, offset, end)
        found.append(element)
        offset = element[2]
    return found


def _entries(data: bytes, start: int, end: int) -> dict[bytes, tuple[int, bytes]]:
    """OID suffix (after the SGX prefix) -> (value tag, value content), each once."""
    entries: dict[bytes, tuple[int, bytes]] = {}
    for tag, s, e in _children(data, start, end):
        if tag != _SEQUENCE:
            raise ParseError("SGX extension: entry is not a SEQUENCE")
        parts = _children(data, s, e)
        if len(parts) != 2 or parts[0][0] != _OID:
            raise ParseError("SGX extension: entry is not { OID, value }")
        oid = data[parts[0][1] : parts[0][2]]
        if not oid.startswith(_SGX_OID):
            raise ParseError("SGX extension: entry OID outside 1.2.840.113741.1.13.1")
        suffix = oid[len(_SGX_OID) :]
        if suffix in entries:
            raise ParseError(f"SGX extension: entry {suffix.hex()} twice")
        vtag, vs, ve = parts[1]
        entries[suffix] = (vtag, data[vs:ve])
    return entries


def _octets(entries: dict[bytes, tuple[int, bytes]], key: bytes, size: int, what: str) -> bytes:
    tag, value = _required(entries, key, what)
    if tag != _OCTET_STRING or len(value) != size:
        raise ParseError(f"SGX extension: {what} is not an OCTET STRING of {size} bytes")
    return value


def _small_int(tag: int, value: bytes, what: str, *, expected_tag: int = _INTEGER) -> int:
    # SVNs are 0..255 (components) or 0..65535 (PCESVN); non-negative and minimal.
    if tag != expected_tag or not 1 <= len(value) <= 3 or value[0] & 0x80:
        raise ParseError(f"SGX extension: {what} is not a small non-negative integer")
    if len(value) > 1 and value[0] == 0 and not value[1] & 0x80:
        raise ParseError(f"SGX extension: {what} is not minimally encoded")
    return int.from_bytes(value, "big")


def _required(entries: dict[bytes, tuple[int, bytes]], key: bytes, what: str) -> tuple[int, bytes]:
    if key not in entries:
        raise ParseError(f"SGX extension: no {what}")
    return entries[key]


def read_pck_extension(certificate: x509.Certificate) -> PckTcb:
    """FMSPC, PCE-ID, TCB component SVNs, PCESVN and SGX type of a PCK certificate."""
    try:
        extension = certificate.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
    except x509.ExtensionNotFound:
        raise ParseError("PCK certificate has no SGX extension") from None
    except (ValueError, x509.DuplicateExtension) as exc:
        raise ParseError(f"PCK certificate extensions do not decode: {exc}") from None
    if not isinstance(extension, x509.UnrecognizedExtension):
        raise ParseError("SGX extension decoded as something else")
    return parse_sgx_extension(extension.value)


def parse_sgx_extension(data: bytes) -> PckTcb:
    """The SGX extension's value (DER, as in the certificate); ParseError only."""
    if len(data) > MAX_EXTENSION_BYTES:
        raise ParseError("SGX extension too large", code="too_large")
    tag, start, end = _tlv(data, 0, len(data))
    if tag != _SEQUENCE or end != len(data):
        raise ParseError("SGX extension is not one SEQUENCE")
    top = _entries(data, start, end)
    tcb_tag, tcb_raw = _required(top, b"\x02", "TCB")
    if tcb_tag != _SEQUENCE:
        raise ParseError("SGX extension: TCB is not a SEQUENCE")
    tcb = _entries(tcb_raw, 0, len(tcb_raw))
    components = []
    for number in range(1, COMPONENT_COUNT + 1):
        key = b"\x02" + bytes([number])
        vtag, value = _required(tcb, key, f"TCB component {number}")
        svn = _small_int(vtag, value, f"TCB component {number}")
        if svn > 0xFF:
            raise ParseError(f"SGX extension: component {number} SVN {svn} exceeds a byte")
        components.append(svn)
    ptag, pvalue = _required(tcb, b"\x02\x11", "PCESVN")
    pce_svn = _small_int(ptag, pvalue, "PCESVN")
    if pce_svn > 0xFFFF:
        raise ParseError("SGX extension: PCESVN exceeds 16 bits")
    cpu_svn = _octets(tcb, b"\x02\x12", 16, "CPUSVN")
    stag, svalue = _required(top, b"\x05", "SGX Type")
    return PckTcb(
        fmspc=_octets(top, b"\x04", 6, "FMSPC"),
        pce_id=_octets(top, b"\x03", 2, "PCE-ID"),
        sgx_tcb_components=tuple(components),
        pce_svn=pce_svn,
        cpu_svn=cpu_svn,
        sgx_type=_small_int(stag, svalue, "SGX Type", expected_tag=_ENUMERATED),
    )
