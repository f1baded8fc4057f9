"""The firmware id (FWID) that an NVIDIA device leaf certificate carries.

The GSP/FSP firmware measures itself into the leaf it certifies; the verifier
compares that digest with the FWID opaque field of the signed SPDM report.
Two encodings exist, and cryptography exposes both only as raw extension bytes
(``UnrecognizedExtension``), so a minimal DER walker reads just these:

* Hopper and LS10 (NVSwitch), OID 2.23.133.5.4.1:
  ``SEQUENCE { INTEGER version, SubjectPublicKeyInfo, FWID }``; the FWID digest
  is the last 48 bytes of the extension, which is what NVIDIA's verifier takes.
* Blackwell, TCG DICE TcbInfo, OID 2.23.133.5.4.1.1:
  ``SEQUENCE { [0] vendor, [1] model, ..., [6] fwids SEQUENCE OF FWID, ... }``;
  the firmware id is ``fwids[0].digest``.

with ``FWID ::= SEQUENCE { hashAlg OBJECT IDENTIFIER, digest OCTET STRING }``.
Both are parsed fully (no trailing bytes, SHA-384 only) rather than sliced, so
a leaf whose extension says something else is rejected instead of misread.
Errors raise :class:`ParseError` only.
"""

from __future__ import annotations

from cryptography import x509

from verifier.evidence.errors import ParseError

HOPPER_FWID_OID = x509.ObjectIdentifier("2.23.133.5.4.1")
DICE_TCB_INFO_OID = x509.ObjectIdentifier("2.23.133.5.4.1.1")

# DER of OBJECT IDENTIFIER 2.16.840.1.101.3.4.2.2 (id-sha384): every NVIDIA FWID
# is a SHA-384 digest, the same hash as the report's measurement blocks.
_SHA384_OID_CONTENT = bytes.fromhex("608648016503040202")
SHA384_LEN = 48

_SEQUENCE = 0x30
_INTEGER = 0x02
_OID = 0x06
_OCTET_STRING = 0x04
_TCB_INFO_FWIDS = 0xA6  # [6] IMPLICIT, constructed: fwids

# A TcbInfo or composite-id extension is a few hundred bytes; the bound keeps a
# hostile length field from making the walker do more than trivial work.
MAX_EXTENSION_BYTES = 4096


def _tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """One DER element at ``offset``: (tag, content start, content end)."""
    if offset + 2 > len(data):
        raise ParseError("DER element truncated", code="truncated")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        # No field of these two structures uses a high tag number.
        raise ParseError("DER high tag numbers are not expected here")
    first = data[offset + 1]
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 2:
            # Indefinite lengths are not DER; more than 2 length bytes cannot
            # fit inside MAX_EXTENSION_BYTES.
            raise ParseError("DER length form not allowed")
        if start + count > len(data):
            raise ParseError("DER length truncated", code="truncated")
        length = int.from_bytes(data[start : start + count], "big")
        if length < 0x80 or (count == 2 and length < 0x100):
            raise ParseError("DER length not minimally encoded")
        start += count
    end = start + length
    if end > len(data):
        raise ParseError("DER content runs past its container", code="truncated")
    return tag, start, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    elements = []
    offset = start
    while offset < end:
        tag, content_start, content_end = _tlv(data[:end], offset)
        elements.append((tag, content_start, content_end))
        offset = content_end
    return elements


def _outer_sequence(value: bytes) -> list[tuple[int, int, int]]:
    if len(value) > MAX_EXTENSION_BYTES:
        raise ParseError("FWID extension too large", code="too_large")
    tag, start, end = _tlv(value, 0)
    if tag != _SEQUENCE or end != len(value):
        raise ParseError("FWID extension is not one SEQUENCE")
    return _children(value, start, end)


def _fwid_digest(data: bytes, start: int, end: int) -> bytes:
    """The digest of an ``FWID`` SEQUENCE whose content is ``data[start:end]``."""
    fields = _children(data, start, end)
    if len(fields) != 2 or fields[0][0] != _OID or fields[1][0] != _OCTET_STRING:
        raise ParseError("FWID is not SEQUENCE { OID, OCTET STRING }")
    _, oid_start, oid_end = fields[0]
    if data[oid_start:oid_end] != _SHA384_OID_CONTENT:
        raise ParseError("FWID hash algorithm is not SHA-384", code="unsupported")
    _, digest_start, digest_end = fields[1]
    if digest_end - digest_start != SHA384_LEN:
        raise ParseError("FWID digest is not 48 bytes")
    return data[digest_start:digest_end]


def hopper_fwid(value: bytes) -> bytes:
    """FWID of a 2.23.133.5.4.1 extension value (Hopper, NVSwitch)."""
    fields = _outer_sequence(value)
    if len(fields) != 3 or [f[0] for f in fields] != [_INTEGER, _SEQUENCE, _SEQUENCE]:
        raise ParseError("2.23.133.5.4.1 is not SEQUENCE { INTEGER, SPKI, FWID }")
    _, start, end = fields[2]
    digest = _fwid_digest(value, start, end)
    # NVIDIA's verifier slices the last 48 bytes; the parse must agree with it.
    if digest != value[-SHA384_LEN:]:
        raise ParseError("FWID digest is not the extension's last 48 bytes")
    return digest


def tcb_info_fwid(value: bytes) -> bytes:
    """``fwids[0].digest`` of a TCG DICE TcbInfo extension value (Blackwell)."""
    fields = _outer_sequence(value)
    fwids = [f for f in fields if f[0] == _TCB_INFO_FWIDS]
    if len(fwids) != 1:
        raise ParseError("TcbInfo has no single fwids field")
    _, start, end = fwids[0]
    entries = _children(value, start, end)
    if not entries or entries[0][0] != _SEQUENCE:
        raise ParseError("TcbInfo fwids is empty or not a SEQUENCE OF FWID")
    _, entry_start, entry_end = entries[0]
    return _fwid_digest(value, entry_start, entry_end)


def leaf_fwid(leaf: x509.Certificate) -> bytes:
    """The FWID of a device leaf, from whichever of the two extensions it carries.

    A leaf carrying both (or neither) is refused: which digest binds the report
    would otherwise be the verifier's guess.
    """
    found: dict[x509.ObjectIdentifier, bytes] = {}
    for extension in leaf.extensions:
        if extension.oid in (HOPPER_FWID_OID, DICE_TCB_INFO_OID):
            if not isinstance(extension.value, x509.UnrecognizedExtension):
                raise ParseError("FWID extension decoded unexpectedly")
            found[extension.oid] = extension.value.value
    if len(found) != 1:
        raise ParseError(f"leaf carries {len(found)} FWID extensions, need exactly 1")
    if DICE_TCB_INFO_OID in found:
        return tcb_info_fwid(found[DICE_TCB_INFO_OID])
    return hopper_fwid(found[HOPPER_FWID_OID])
