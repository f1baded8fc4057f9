"""The GHCB certificate table a guest gets beside an extended report (configfs-tsm auxblob).

GHCB specification (56421), SNP Extended Guest Request: an array of entries
{GUID (16 bytes, RFC 4122 byte order), offset (u32 LE), length (u32 LE)},
ended by an all-zero entry, followed by the certificates (DER) it points at;
offsets count from the start of the table.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence

__all__ = ["ARK_GUID", "ASK_GUID", "ENTRY_SIZE", "VCEK_GUID", "VLEK_GUID", "certificate_table"]

VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
VLEK_GUID = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
ASK_GUID = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
ARK_GUID = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
ENTRY_SIZE = 24
_ENTRY = struct.Struct("<16sII")


def certificate_table(entries: Sequence[tuple[uuid.UUID, bytes]]) -> bytes:
    """The table for ``entries`` (GUID, certificate DER), in that order."""
    header_size = ENTRY_SIZE * (len(entries) + 1)
    header = bytearray()
    payload = bytearray()
    for guid, data in entries:
        header += _ENTRY.pack(guid.bytes, header_size + len(payload), len(data))
        payload += data
    header += bytes(ENTRY_SIZE)  # the all-zero terminator
    return bytes(header + payload)
