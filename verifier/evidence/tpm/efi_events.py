"""Structures carried in event data (untrusted bytes), other than UEFI variables.

* ``UEFI_GPT_DATA`` (PFP, EV_EFI_GPT_EVENT): the GPT header, NumberOfPartitions, the entries.
* ``UEFI_IMAGE_LOAD_EVENT`` (PFP, EV_EFI_BOOT_SERVICES_APPLICATION): where an image
  was loaded and its device path. The digest of such an event is the image's
  Authenticode hash, so nothing in this structure is bound by it: the path is a
  hint, never a fact to appraise.
* ``UEFI_PLATFORM_FIRMWARE_BLOB`` / ``..._BLOB2`` (PFP): base and length of a
  firmware volume, with a description in the second form.
* The strings GRUB measures into PCR8 and systemd-boot's UTF-16 load options.

Printable text is asked for only where nothing is trusted on the strength of its
absence (device paths, S-CRTM versions, event_data.py's choice of convention):
whether data *is* a boot loader's UTF-16 string is :func:`is_utf16_string`'s
question, which printability does not enter (a tab is still a command line).

Every parser bounds lengths before slicing, refuses trailing bytes and raises
:class:`ParseError` only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.efi_variables import format_guid

__all__ = [
    "FirmwareBlob",
    "GptData",
    "GrubString",
    "decode_crtm_version",
    "decode_utf16_string",
    "decode_utf16_text",
    "is_utf16_string",
    "parse_firmware_blob",
    "parse_firmware_blob2",
    "parse_gpt_data",
    "parse_grub_string",
    "parse_image_load_path",
]

# EFI_PARTITION_TABLE_HEADER is byte-packed (MdePkg UefiGpt.h, #pragma pack(1)):
# Signature, Revision, HeaderSize, HeaderCRC32, Reserved, MyLBA, AlternateLBA,
# FirstUsableLBA, LastUsableLBA, DiskGUID, PartitionEntryLBA,
# NumberOfPartitionEntries, SizeOfPartitionEntry, PartitionEntryArrayCRC32.
_GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_GPT_SIGNATURE = b"EFI PART"
_GPT_MIN_ENTRY = 128  # UEFI spec, GPT header: SizeOfPartitionEntry is 128 * 2**n
_U64 = struct.Struct("<Q")
_IMAGE_LOAD = struct.Struct("<QQQQ")  # location, length, link-time address, path size
_BLOB = struct.Struct("<QQ")  # base, length
_DEVICE_NODE = struct.Struct("<BBH")  # type, subtype, length (header included)
_MEDIA_PATH, _FILE_PATH = 0x04, 0x04  # UEFI spec: File Path Media Device Path
_END_PATH = 0x7F


@dataclass(frozen=True, slots=True)
class GptData:
    """The GPT a boot manager measured: disk GUID and each partition's type GUID."""

    disk_guid: str
    partition_types: tuple[str, ...]


def parse_gpt_data(data: bytes) -> GptData:
    """A whole UEFI_GPT_DATA."""
    if len(data) < _GPT_HEADER.size + _U64.size:
        raise ParseError("UEFI_GPT_DATA: truncated header", code="truncated")
    fields = _GPT_HEADER.unpack_from(data)
    signature, header_size, disk_guid = fields[0], fields[2], fields[9]
    table_entries, entry_size = fields[11], fields[12]
    if signature != _GPT_SIGNATURE:
        raise ParseError("UEFI_GPT_DATA: no 'EFI PART' signature", code="bad_magic")
    if header_size < _GPT_HEADER.size:
        raise ParseError(f"UEFI_GPT_DATA: HeaderSize {header_size}")
    ratio = entry_size // _GPT_MIN_ENTRY
    if entry_size % _GPT_MIN_ENTRY or ratio == 0 or ratio & (ratio - 1):
        raise ParseError(f"UEFI_GPT_DATA: SizeOfPartitionEntry {entry_size}")
    (count,) = _U64.unpack_from(data, _GPT_HEADER.size)
    start = _GPT_HEADER.size + _U64.size
    # Only used entries are measured, so there cannot be more than the table holds.
    if count > table_entries or count * entry_size != len(data) - start:
        raise ParseError(
            f"UEFI_GPT_DATA: {count} partitions of {entry_size} bytes "
            f"(table of {table_entries}) in {len(data) - start} bytes"
        )
    types = tuple(
        format_guid(data[offset : offset + 16]) for offset in range(start, len(data), entry_size)
    )
    return GptData(format_guid(disk_guid), types)


def parse_image_load_path(data: bytes) -> str | None:
    """The file path of a UEFI_IMAGE_LOAD_EVENT's device path (None: it names none)."""
    if len(data) < _IMAGE_LOAD.size:
        raise ParseError("UEFI_IMAGE_LOAD_EVENT: truncated", code="truncated")
    path_size = _IMAGE_LOAD.unpack_from(data)[3]
    if path_size != len(data) - _IMAGE_LOAD.size:
        raise ParseError(
            f"UEFI_IMAGE_LOAD_EVENT: device path of {path_size} bytes, "
            f"{len(data) - _IMAGE_LOAD.size} present"
        )
    parts: list[str] = []
    pos = _IMAGE_LOAD.size
    while pos < len(data):
        if len(data) - pos < _DEVICE_NODE.size:
            raise ParseError("device path: truncated node", code="truncated")
        node_type, subtype, length = _DEVICE_NODE.unpack_from(data, pos)
        if not _DEVICE_NODE.size <= length <= len(data) - pos:
            raise ParseError(f"device path: node length {length} at {pos}")
        if node_type == _END_PATH:
            break
        if node_type == _MEDIA_PATH and subtype == _FILE_PATH:
            parts.append(_utf16z(data[pos + _DEVICE_NODE.size : pos + length]))
        pos += length
    if not parts:
        return None
    # Firmware may split a path over several file nodes (directory, then file).
    path = parts[0]
    for part in parts[1:]:
        joiner = "" if path.endswith("\\") or part.startswith("\\") else "\\"
        path = path + joiner + part
    return path


@dataclass(frozen=True, slots=True)
class FirmwareBlob:
    """Where a measured firmware blob lay; the digest is of the blob, not of this."""

    base: int
    length: int
    description: str | None = None


def parse_firmware_blob(data: bytes) -> FirmwareBlob:
    """UEFI_PLATFORM_FIRMWARE_BLOB: exactly a base and a length."""
    if len(data) != _BLOB.size:
        raise ParseError(f"UEFI_PLATFORM_FIRMWARE_BLOB: {len(data)} bytes, not 16")
    base, length = _BLOB.unpack(data)
    return FirmwareBlob(base, length)


def parse_firmware_blob2(data: bytes) -> FirmwareBlob:
    """UEFI_PLATFORM_FIRMWARE_BLOB2: description size, description, base, length."""
    if not data or len(data) != 1 + data[0] + _BLOB.size:
        raise ParseError("UEFI_PLATFORM_FIRMWARE_BLOB2: sizes do not add up")
    description = data[1 : 1 + data[0]]
    if not description.isascii() or not description.decode().isprintable():
        raise ParseError("UEFI_PLATFORM_FIRMWARE_BLOB2: description is not printable ASCII")
    base, length = _BLOB.unpack_from(data, 1 + data[0])
    return FirmwareBlob(base, length, description.decode())


def _utf16z(raw: bytes) -> str:
    """A NUL-terminated UTF-16LE string that fills ``raw`` exactly."""
    if len(raw) < 2 or len(raw) % 2 or raw[-2:] != b"\x00\x00":
        raise ParseError("UTF-16 string: not NUL-terminated")
    try:
        text = raw[:-2].decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise ParseError("UTF-16 string: invalid") from exc
    if not text.isprintable():
        raise ParseError("UTF-16 string: unprintable characters")
    return text


def decode_utf16_text(data: bytes) -> str:
    """Printable UTF-16LE text ending in one NUL character (systemd-boot, S-CRTM)."""
    return _utf16z(data)


def decode_utf16_string(data: bytes) -> str:
    """UTF-16LE code units whose only NUL is the last, as a boot loader measures a
    string (systemd-boot's load options stop at the first NUL), printable or not.

    An unpaired surrogate becomes a ``\\xNN`` escape: the text then differs from
    every line without one, and stays printable in reasons and JSON.
    """
    if len(data) < 2 or len(data) % 2 or data[-2:] != b"\x00\x00":
        raise ParseError("UTF-16 string: not NUL-terminated")
    if any(data[i : i + 2] == b"\x00\x00" for i in range(0, len(data) - 2, 2)):
        raise ParseError("UTF-16 string: a NUL before the end")
    return data[:-2].decode("utf-16-le", errors="backslashreplace")


def is_utf16_string(data: bytes) -> bool:
    """Whether ``data`` is a NUL-terminated UTF-16 string (:func:`decode_utf16_string`),
    counting the odd-length form that lost the terminator's last byte."""
    try:
        decode_utf16_string(data + b"\x00" * (len(data) % 2))
    except ParseError:
        return False
    return True


def decode_crtm_version(data: bytes) -> str:
    """EV_S_CRTM_VERSION data as text: the UTF-16 string most firmware logs, or
    ``hex:...`` for the binary forms some use (a GUID on many AMI builds)."""
    try:
        return _utf16z(data)
    except ParseError:
        return "hex:" + data.hex()


GrubKind = Literal["command", "kernel_cmdline", "module_cmdline"]


@dataclass(frozen=True, slots=True)
class GrubString:
    """A string GRUB measured into PCR8, and the exact bytes it hashed."""

    kind: GrubKind
    text: str
    measured: bytes
    legacy: bool  # the older Fedora/RHEL prefixes


# Upstream
# GRUB >= 2.06 (grub_tpm_verify_string) hashes the string without prefix or NUL;
# the older Fedora/RHEL patch ("Rework TPM measurements") used "grub_cmd " with the
# NUL and "grub_kernel_cmdline " without (go-tpm-tools server/eventlog.go accepts
# the same two generations).
_GRUB_PREFIXES: tuple[tuple[bytes, GrubKind, bool, bool], ...] = (
    # prefix, kind, NUL hashed, legacy
    (b"grub_cmd: ", "command", False, False),
    (b"kernel_cmdline: ", "kernel_cmdline", False, False),
    (b"module_cmdline: ", "module_cmdline", False, False),
    (b"grub_kernel_cmdline ", "kernel_cmdline", False, True),
    (b"grub_cmd ", "command", True, True),
)


def parse_grub_string(data: bytes) -> GrubString:
    """A GRUB PCR8 event's data: known prefix, UTF-8 text, one terminating NUL."""
    for prefix, kind, with_nul, legacy in _GRUB_PREFIXES:
        if data.startswith(prefix):
            if not data.endswith(b"\x00") or b"\x00" in data[:-1]:
                raise ParseError("GRUB string: not exactly one terminating NUL")
            body = data[len(prefix) :]
            try:
                text = body[:-1].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ParseError("GRUB string: not UTF-8") from exc
            return GrubString(kind, text, body if with_nul else body[:-1], legacy)
    raise ParseError("GRUB string: no known prefix", code="unknown")
