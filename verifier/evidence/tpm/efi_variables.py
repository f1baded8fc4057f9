"""UEFI variable event data and EFI signature databases (untrusted bytes).

* ``UEFI_VARIABLE_DATA`` (PFP, EFI variable events) is the data of EV_EFI_VARIABLE_DRIVER_CONFIG,
  EV_EFI_VARIABLE_BOOT(2) and EV_EFI_VARIABLE_AUTHORITY: VariableName (EFI_GUID),
  UnicodeNameLength (UINT64, in CHAR16), VariableDataLength (UINT64), UnicodeName,
  VariableData.
* ``EFI_SIGNATURE_LIST`` (UEFI spec, "Signature Database") is the content of PK, KEK, db
  and dbx: SignatureType (EFI_GUID), SignatureListSize, SignatureHeaderSize,
  SignatureSize (UINT32 each), SignatureHeader, then EFI_SIGNATURE_DATA entries of
  SignatureSize bytes each (SignatureOwner EFI_GUID + SignatureData).

Both parsers bound every length against the bytes actually present before slicing
(a hostile 2**64 length costs nothing), reject trailing bytes, and raise
:class:`ParseError` only.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from verifier.evidence.errors import ParseError

__all__ = [
    "EFI_CERT_SHA256",
    "EFI_CERT_X509",
    "EFI_GLOBAL_VARIABLE",
    "EFI_IMAGE_SECURITY_DATABASE",
    "SHIM_LOCK",
    "SignatureEntry",
    "UefiVariable",
    "format_guid",
    "parse_signature_lists",
    "parse_uefi_variable",
    "parse_uefi_variable_prefix",
]

# Vendor GUIDs (UEFI spec, "Globally Defined Variables" and "Signature Database";
# shim's SHIM_LOCK_GUID), in their canonical text form; compare with format_guid()
# of the raw little-endian bytes.
EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"  # SecureBoot, PK, KEK
EFI_IMAGE_SECURITY_DATABASE = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"  # db, dbx
SHIM_LOCK = "605dab50-e046-4300-abb6-3dd810dd8b23"  # MokList*, Shim, SbatLevel
# Signature types (UEFI spec, EFI_SIGNATURE_DATA).
EFI_CERT_X509 = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
EFI_CERT_SHA256 = "c1c41626-504c-4092-aca9-41f936934328"

_VARIABLE_HEADER = struct.Struct("<16sQQ")
_LIST_HEADER = struct.Struct("<16sIII")
_GUID_SIZE = 16
_SHA256_SIZE = 32


def format_guid(raw: bytes) -> str:
    """An EFI_GUID (mixed-endian, as UEFI stores it) in canonical text form."""
    return str(uuid.UUID(bytes_le=bytes(raw)))


@dataclass(frozen=True, slots=True)
class UefiVariable:
    """One UEFI_VARIABLE_DATA: vendor GUID, name, and the variable's content."""

    guid: str
    name: str
    value: bytes

    @property
    def key(self) -> tuple[str, str]:
        """Vendor GUID and name: together they identify a UEFI variable."""
        return self.guid, self.name


def parse_uefi_variable_prefix(data: bytes) -> tuple[UefiVariable, int]:
    """The UEFI_VARIABLE_DATA at the start of ``data`` and the bytes it spans.

    Bytes after it are the caller's business (one shim bug leaves some there, see
    event_quirks.py); everything the structure declares must be present.
    """
    if len(data) < _VARIABLE_HEADER.size:
        raise ParseError("UEFI_VARIABLE_DATA: truncated header", code="truncated")
    guid, name_chars, value_size = _VARIABLE_HEADER.unpack_from(data)
    available = len(data) - _VARIABLE_HEADER.size
    # Compared with what is there before multiplying or slicing.
    if name_chars > available // 2 or value_size > available - 2 * name_chars:
        raise ParseError(
            f"UEFI_VARIABLE_DATA: lengths {name_chars} chars + {value_size} bytes "
            f"exceed the {available} bytes present",
            code="truncated",
        )
    name_end = _VARIABLE_HEADER.size + 2 * name_chars
    end = name_end + value_size
    try:
        name = data[_VARIABLE_HEADER.size : name_end].decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise ParseError("UEFI_VARIABLE_DATA: name is not UTF-16") from exc
    # Some firmware counts the terminating NUL in UnicodeNameLength; it is not part
    # of the variable's name either way.
    if name.endswith("\x00"):
        name = name[:-1]
    if "\x00" in name:
        raise ParseError("UEFI_VARIABLE_DATA: NUL inside the variable name")
    return UefiVariable(format_guid(guid), name, data[name_end:end]), end


def parse_uefi_variable(data: bytes) -> UefiVariable:
    """A whole UEFI_VARIABLE_DATA; bytes after VariableData are refused."""
    variable, end = parse_uefi_variable_prefix(data)
    if end != len(data):
        raise ParseError(f"UEFI_VARIABLE_DATA: {len(data) - end} bytes after VariableData")
    return variable


@dataclass(frozen=True, slots=True)
class SignatureEntry:
    """One EFI_SIGNATURE_DATA with the SignatureType of its list."""

    signature_type: str
    owner: str
    data: bytes


def parse_signature_lists(data: bytes) -> tuple[SignatureEntry, ...]:
    """Every entry of a sequence of EFI_SIGNATURE_LISTs (an empty variable has none)."""
    entries: list[SignatureEntry] = []
    pos = 0
    while pos < len(data):
        remaining = len(data) - pos
        if remaining < _LIST_HEADER.size:
            raise ParseError(f"EFI_SIGNATURE_LIST at {pos}: truncated header", code="truncated")
        sig_type, list_size, header_size, sig_size = _LIST_HEADER.unpack_from(data, pos)
        if not _LIST_HEADER.size + header_size <= list_size <= remaining:
            raise ParseError(
                f"EFI_SIGNATURE_LIST at {pos}: size {list_size} (header {header_size}) "
                f"does not fit the {remaining} bytes left",
                code="truncated",
            )
        # An entry holds at least its owner GUID and one byte of signature.
        if sig_size <= _GUID_SIZE:
            raise ParseError(f"EFI_SIGNATURE_LIST at {pos}: SignatureSize {sig_size}")
        body = list_size - _LIST_HEADER.size - header_size
        if body % sig_size:
            raise ParseError(
                f"EFI_SIGNATURE_LIST at {pos}: {body} bytes is not a multiple of {sig_size}"
            )
        type_text = format_guid(sig_type)
        # A SHA-256 entry is exactly a hash; another size would be misread as one.
        if type_text == EFI_CERT_SHA256 and sig_size != _GUID_SIZE + _SHA256_SIZE:
            raise ParseError(f"EFI_SIGNATURE_LIST at {pos}: SHA-256 entries of {sig_size} bytes")
        start = pos + _LIST_HEADER.size + header_size
        for offset in range(start, start + body, sig_size):
            owner = format_guid(data[offset : offset + _GUID_SIZE])
            value = data[offset + _GUID_SIZE : offset + sig_size]
            entries.append(SignatureEntry(type_text, owner, value))
        pos += list_size
    return tuple(entries)
