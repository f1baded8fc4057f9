"""An IMA runtime measurement list given as a file: recognise, parse, describe.

For ``weightgate evidence``: the kernel exports one list as
``binary_runtime_measurements`` and ``ascii_runtime_measurements``, and operators
copy either. :func:`read_ima_list` tells them apart by the first line (the ASCII
list starts with the PCR as ``%2d`` and a hex template hash; a binary entry starts
with a u32 PCR index, so its first bytes are never printable digits) and parses
with the strict parsers of :mod:`.ima` / :mod:`.ima_ascii`. The ASCII list's
template-hash algorithm follows from the hash's length (the kernel's per-bank
``*_runtime_measurements_sha256`` lists carry longer ones); a binary list is read
with SHA-1 template hashes, the kernel's standard export.

:data:`IMA_REASON_CODES` is the one table that turns the IMA library's error codes
into the verifier's reason codes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.ima import (
    MAX_TEMPLATE_NAME,
    TEMPLATE_HASH_SIZES,
    ByteOrder,
    ImaEntry,
    ImaList,
    parse_binary,
)
from verifier.evidence.tpm.ima_ascii import parse_ascii
from verifier.verdict import Reason

__all__ = [
    "IMA_REASON_CODES",
    "entry_fields",
    "ima_list_fields",
    "ima_reason",
    "looks_like_ima",
    "read_ima_list",
]

# The IMA library's codes (ImaReplayError.code; "malformed" for any ParseError of
# the list parsers) -> the verifier's reason codes. "pcr_not_quoted" is ours: the
# quote does not cover a PCR the list extends, so nothing authenticates the list.
IMA_REASON_CODES: Mapping[str, str] = MappingProxyType(
    {
        "malformed": "tpm.ima.malformed",
        "pcr_not_quoted": "tpm.ima.pcr_not_quoted",
        "out_of_order": "tpm.ima.out_of_order",
        "template_hash_mismatch": "tpm.ima.template_hash_mismatch",
        "pcr_mismatch": "tpm.ima.pcr_mismatch",
        "no_bank": "tpm.ima.no_bank",
        "unsupported_bank": "tpm.ima.unsupported_bank",
        "bad_state": "tpm.ima.bad_state",
        "boot_aggregate_missing": "tpm.ima.boot_aggregate_missing",
        "boot_aggregate_bank": "tpm.ima.boot_aggregate_bank",
        "boot_aggregate_no_tpm": "tpm.ima.boot_aggregate_no_tpm",
        "boot_aggregate_mismatch": "tpm.ima.boot_aggregate_mismatch",
    }
)
# A code the table does not know yet still rejects, under a code that says so.
_UNMAPPED = "tpm.ima.replay_refused"
# The ASCII list's first line: "%2d " PCR, then the template hash in lowercase hex.
_ASCII_START = re.compile(rb"(?: [0-9]|[1-9][0-9]) ((?:[0-9a-f]{2})+) ")
_ASCII_HASH_ALGS = MappingProxyType({20: "sha1", 32: "sha256", 48: "sha384", 64: "sha512"})
_SHA1_SIZE = TEMPLATE_HASH_SIZES["sha1"]
_MAX_PCR = 23
_ORDERS: tuple[ByteOrder, ...] = ("little", "big")
# Entries shown by ``inspect`` (a real list has thousands; the first ones say what it
# is: boot_aggregate, then what ran first).
ENTRIES_SHOWN = 10


def ima_reason(code: str, detail: str) -> Reason:
    """The verifier's reason for an IMA library error ``code`` (:data:`IMA_REASON_CODES`)."""
    mapped = IMA_REASON_CODES.get(code)
    if mapped is None:
        return Reason(_UNMAPPED, f"{detail} (IMA replay code {code!r})")
    return Reason(mapped, detail)


def _binary_prefix(raw: bytes) -> bool:
    """A binary entry header: PCR <= 23, a SHA-1 template hash, a short template name."""
    name_at = 4 + _SHA1_SIZE
    if len(raw) < name_at + 4:
        return False
    for order in _ORDERS:
        pcr = int.from_bytes(raw[:4], order)
        size = int.from_bytes(raw[name_at : name_at + 4], order)
        if pcr <= _MAX_PCR and 0 < size <= MAX_TEMPLATE_NAME:
            name = raw[name_at + 4 : name_at + 4 + size]
            return name.startswith(b"ima") or name.startswith(b"d-ng")
    return False


def looks_like_ima(raw: bytes) -> bool:
    """Whether ``raw`` starts like an IMA list (either format); nothing is parsed."""
    return _ASCII_START.match(raw) is not None or _binary_prefix(raw)


def read_ima_list(raw: bytes) -> ImaList:
    """Parse ``raw`` as an ASCII or binary list (module docstring); raises ParseError.

    An empty file is an empty binary list (IMA off, or nothing measured yet).
    """
    ascii_start = _ASCII_START.match(raw)
    if ascii_start is None:
        return parse_binary(raw)
    size = len(ascii_start.group(1)) // 2
    alg = _ASCII_HASH_ALGS.get(size)
    if alg is None:
        raise ParseError(f"IMA list: template hash of {size} bytes", code="malformed")
    return parse_ascii(raw, template_hash_alg=alg)


def entry_fields(entry: ImaEntry) -> dict[str, Any]:
    """One entry as shown (display only: nothing here is authenticated)."""
    digest = None
    if entry.digest is not None:
        digest = f"{entry.digest_alg}:{entry.digest.hex()}"
    fields: dict[str, Any] = {
        "index": entry.index,
        "pcr": entry.pcr,
        "template": entry.template_name,
        "template_hash": entry.template_hash.hex(),
        "digest": digest,
        "name": entry.name,
        "violation": entry.is_violation,
    }
    if entry.signature:
        fields["signature"] = entry.signature.hex()
    return fields


def ima_list_fields(ima_list: ImaList, *, entries_shown: int = ENTRIES_SHOWN) -> dict[str, Any]:
    """Format, byte order, counts, templates, boot_aggregate and the first entries."""
    entries = ima_list.entries
    first = entries[0] if entries else None
    boot_aggregate = None
    if first is not None and first.name == "boot_aggregate" and first.digest is not None:
        boot_aggregate = f"{first.digest_alg}:{first.digest.hex()}"
    return {
        "format": ima_list.format,
        "byte_order": ima_list.byte_order,
        "template_hash_alg": ima_list.template_hash_alg,
        "entry_count": len(entries),
        "violations": sum(1 for e in entries if e.is_violation),
        "templates": dict(Counter(e.template_name for e in entries)),
        "pcrs": sorted({e.pcr for e in entries}),
        "boot_aggregate": boot_aggregate,
        "entries_shown": min(entries_shown, len(entries)),
        "entries": [entry_fields(e) for e in entries[:entries_shown]],
    }
