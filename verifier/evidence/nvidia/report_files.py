"""Read reports in the forms NVIDIA's tools write: hex text and evidence JSON.

Evidence JSON is NRAS's request shape, ``[{"arch", "nonce", "evidence",
"certificate", ...}]``, with ``evidence`` base64 of the raw report (some tools put
the hex text there instead; both are accepted) and ``certificate`` base64 of the
PEM chain, leaf first. Only the framing is checked here: the report bytes go to
:func:`parse_report`, the chain to the chain verifier.
"""

from __future__ import annotations

import base64
import binascii
import json
import string
from dataclasses import dataclass

from verifier.evidence.errors import ParseError

# An 8-GPU + 4-NVSwitch host is 12 entries; 64 leaves room for larger systems while
# bounding what one file can make us decode.
MAX_EVIDENCE_ENTRIES = 64
MAX_EVIDENCE_JSON_SIZE = 4 * 1024 * 1024
_HEX = frozenset(string.hexdigits.encode())


@dataclass(frozen=True)
class EvidenceEntry:
    arch: str  # HOPPER, BLACKWELL, LS10, ... as the file says (unauthenticated)
    nonce: bytes  # the nonce the file claims; the report's own request nonce is what counts
    report: bytes
    chain_pem: bytes


def report_from_hex(text: str | bytes) -> bytes:
    """The report bytes from NVIDIA's hex text (surrounding whitespace allowed)."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    stripped = raw.strip()
    if not stripped or len(stripped) % 2 or not _HEX.issuperset(stripped):
        raise ParseError("report hex text is empty, odd-length or not hex", code="bad_hex")
    return bytes.fromhex(stripped.decode("ascii"))


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ParseError(f"evidence JSON: {what} is not a string", code="bad_evidence_json")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ParseError(f"evidence JSON: {what} is not base64", code="bad_evidence_json") from exc


def _report_bytes(blob: bytes) -> bytes:
    # A raw report starts with the SPDM version byte 0x11; hex text starts with "11".
    if blob[:2] == b"11":
        return report_from_hex(blob)
    return blob


def _entry(item: object, position: int) -> EvidenceEntry:
    if not isinstance(item, dict):
        raise ParseError(
            f"evidence JSON entry {position} is not an object", code="bad_evidence_json"
        )
    arch, nonce_hex = item.get("arch"), item.get("nonce")
    if not isinstance(arch, str) or not isinstance(nonce_hex, str):
        raise ParseError(
            f"evidence JSON entry {position}: arch and nonce must be strings",
            code="bad_evidence_json",
        )
    try:
        nonce = bytes.fromhex(nonce_hex)
    except ValueError as exc:
        raise ParseError(
            f"evidence JSON entry {position}: nonce is not hex", code="bad_evidence_json"
        ) from exc
    return EvidenceEntry(
        arch=arch,
        nonce=nonce,
        report=_report_bytes(_b64(item.get("evidence"), f"entry {position} evidence")),
        chain_pem=_b64(item.get("certificate"), f"entry {position} certificate"),
    )


def read_evidence_json(data: bytes | str) -> list[EvidenceEntry]:
    """Every device entry of an evidence JSON file, in file order."""
    if len(data) > MAX_EVIDENCE_JSON_SIZE:
        raise ParseError("evidence JSON is too large", code="too_large")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ParseError("evidence JSON does not parse", code="bad_evidence_json") from exc
    if not isinstance(doc, list) or not 0 < len(doc) <= MAX_EVIDENCE_ENTRIES:
        raise ParseError(
            f"evidence JSON must be a list of 1..{MAX_EVIDENCE_ENTRIES} entries",
            code="bad_evidence_json",
        )
    return [_entry(item, i) for i, item in enumerate(doc)]
