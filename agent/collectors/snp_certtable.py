"""Parse the GHCB certificate table that comes with an SEV-SNP extended report.

GHCB specification (AMD 56421), SNP Extended Guest Request: the hypervisor gives
the guest an array of entries {GUID (16 bytes, RFC 4122 byte order), offset (u32
LE), length (u32 LE)} ended by an all-zero entry, then the certificates (DER)
those entries point at, offsets counted from the start of the table. The kernel
passes it on untouched as configfs-tsm's ``auxblob``.

Every byte of it comes from the hypervisor, which the guest does not trust: no
offset or length is followed beyond the blob, the table must end before the
blob does, and every failure is a :class:`CertTableError` naming what is wrong.
Nothing here judges the certificates: the verifier does.
"""

from __future__ import annotations

import base64
import struct
import uuid
from dataclasses import dataclass

__all__ = [
    "ARK_GUID",
    "ASK_GUID",
    "MAX_CERT_TABLE_BYTES",
    "VCEK_GUID",
    "VLEK_GUID",
    "CertTable",
    "CertTableError",
    "der_to_pem",
    "parse_cert_table",
]

VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
VLEK_GUID = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
ASK_GUID = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")  # the ASK, or the ASVK for a VLEK
ARK_GUID = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
_KNOWN = {VCEK_GUID: "VCEK", VLEK_GUID: "VLEK", ASK_GUID: "ASK", ARK_GUID: "ARK"}

_ENTRY = struct.Struct("<16sII")
# The kernel hands out at most SEV_FW_BLOB_MAX_SIZE (16 KiB) of certificate data
# and the verifier reads at most 64 KiB of certificates; a larger blob is not a table.
MAX_CERT_TABLE_BYTES = 64 * 1024
# VCEK, VLEK, ASK, ARK and perhaps a CRL or two: far fewer than this. The bound
# keeps a table of junk entries from costing more than a glance.
MAX_ENTRIES = 64


class CertTableError(ValueError):
    """The certificate table is malformed; the message says how."""


@dataclass(frozen=True)
class CertTable:
    """The certificates found, by kind (None: no entry). Entries with other GUIDs are skipped."""

    vcek: bytes | None
    vlek: bytes | None
    ask: bytes | None
    ark: bytes | None


def parse_cert_table(blob: bytes) -> CertTable:
    """The VCEK, VLEK, ASK/ASVK and ARK in ``blob``; CertTableError if malformed.

    Checks: at most MAX_CERT_TABLE_BYTES; entries until the all-zero terminator,
    which must lie inside the blob (``truncated``) within MAX_ENTRIES; each known
    entry non-empty, starting after the table and ending inside the blob; no GUID
    twice.
    """
    blob = bytes(blob)
    if len(blob) > MAX_CERT_TABLE_BYTES:
        raise CertTableError(
            f"certificate table of {len(blob)} bytes (at most {MAX_CERT_TABLE_BYTES})"
        )
    entries: list[tuple[uuid.UUID, int, int]] = []
    position = 0
    while True:
        if position + _ENTRY.size > len(blob):
            raise CertTableError(
                f"certificate table truncated: no terminating entry within {len(blob)} bytes"
            )
        raw_guid, offset, length = _ENTRY.unpack_from(blob, position)
        position += _ENTRY.size
        if raw_guid == bytes(16) and offset == 0 and length == 0:
            break
        if len(entries) == MAX_ENTRIES:
            raise CertTableError(f"certificate table has over {MAX_ENTRIES} entries")
        entries.append((uuid.UUID(bytes=raw_guid), offset, length))
    found: dict[str, bytes] = {}
    for guid, offset, length in entries:
        name = _KNOWN.get(guid)
        if name is None:
            continue  # a CRL or a vendor's entry: not ours to send
        if name in found:
            raise CertTableError(f"certificate table lists the {name} twice")
        if length == 0 or offset < position or offset + length > len(blob):
            raise CertTableError(
                f"certificate table: {name} at offset {offset}, length {length} lies outside "
                f"the {len(blob) - position} bytes after the table"
            )
        found[name] = blob[offset : offset + length]
    return CertTable(
        vcek=found.get("VCEK"), vlek=found.get("VLEK"), ask=found.get("ASK"), ark=found.get("ARK")
    )


def der_to_pem(certificate: bytes) -> bytes:
    """``certificate`` as PEM: DER armored unchanged, PEM (some hosts ship it) as is.

    Armoring only: the bytes are not parsed, so the verifier judges exactly what
    the host gave.
    """
    if certificate.lstrip().startswith(b"-----BEGIN"):
        return certificate if certificate.endswith(b"\n") else certificate + b"\n"
    text = base64.b64encode(certificate)
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"
