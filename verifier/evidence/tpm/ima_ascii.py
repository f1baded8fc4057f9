"""Parse the ASCII IMA runtime measurement list, rebuilding template data.

A line is what ``ima_ascii_measurements_show`` prints: the PCR as ``%2d``, the
template hash in lowercase hex, the template name, then one space before each field
(an empty field leaves a trailing space, as for an unsigned ima-sig entry) and a
newline. Fields: ``d`` as hex, ``d-ng`` as ``alg:hex``, ``n``/``n-ng`` as the raw
name, ``sig``/``buf`` as hex.

The ASCII list shows fields, not the template data the hash covers, so each line is
rebuilt into the binary template data (:func:`~verifier.evidence.tpm.ima_encode.build_entry`)
and the result must be exactly what the binary list holds: field lengths are
little-endian (x86, or ``ima_canonical_fmt``) unless ``byte_order`` says otherwise.

:func:`parse_ascii` checks, in order: at most :data:`~ima.MAX_LIST_SIZE` bytes and
:data:`~ima.MAX_ENTRIES` lines; every line ends with a newline and none is empty;
the PCR is 0-23 as the kernel prints it; the template hash is lowercase hex of the
template-hash algorithm's size; the template is a known one (an unknown template's
fields cannot be turned back into its template data); each field is well formed
(hex where hex is due; a ``d-ng`` algorithm name and digest size as in the binary
parser). Names are split the way the kernel makes them unambiguous: a name is the
rest of the line (ima, ima-ng) or everything up to the last space (ima-sig,
ima-buf, whose last field is hex). A name containing a newline cannot be
represented and fails the line. ParseError codes: ``truncated`` (no final
newline), ``too_large``, ``unknown_template``, ``bad_line``, ``bad_argument``.
"""

from __future__ import annotations

import re

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.ima import (
    MAX_ENTRIES,
    MAX_LIST_SIZE,
    TEMPLATE_HASH_SIZES,
    TEMPLATES,
    ByteOrder,
    ImaEntry,
    ImaList,
    check_digest,
    fail,
)
from verifier.evidence.tpm.ima_encode import build_entry

__all__ = ["parse_ascii"]

_HEX = re.compile(rb"(?:[0-9a-f]{2})*")
_ALG = re.compile(rb"[a-z0-9_-]{1,64}")
_MAX_PCR = 23


def _hex(token: bytes, what: str) -> bytes:
    if _HEX.fullmatch(token) is None:
        raise ValueError(f"{what} is not lowercase hex")
    return bytes.fromhex(token.decode("ascii"))


def _pcr(line: bytes) -> int:
    # "%2d ": " 9 " or "10 "; the kernel never prints a leading zero.
    text = line[:2]
    if line[2:3] != b" " or not (
        (text[:1] == b" " and text[1:].isdigit()) or (text.isdigit() and text[:1] != b"0")
    ):
        raise ValueError("no PCR index")
    pcr = int(text)
    if pcr > _MAX_PCR:
        raise ValueError(f"PCR index {pcr}")
    return pcr


def _d_ng(token: bytes, *, violation: bool) -> tuple[str, bytes]:
    alg_text, colon, hex_digest = token.partition(b":")
    if not colon or _ALG.fullmatch(alg_text) is None:
        raise ValueError("d-ng field has no valid 'alg:' prefix")
    alg, digest = alg_text.decode("ascii"), _hex(hex_digest, "digest")
    check_digest(alg, digest, violation=violation)
    return alg, digest


def _name(raw: bytes) -> str:
    if b"\0" in raw:
        raise ValueError("NUL in name")
    return raw.decode("utf-8", "surrogateescape")


def _entry(line: bytes, index: int, offset: int, hash_alg: str, byte_order: ByteOrder) -> ImaEntry:
    pcr = _pcr(line)
    parts = line[3:].split(b" ", 2)
    if len(parts) != 3:
        raise ValueError("fewer than four columns")
    hash_hex, tname, fields = parts
    template_hash = _hex(hash_hex, "template hash")
    if len(template_hash) != TEMPLATE_HASH_SIZES[hash_alg]:
        raise ValueError(f"template hash of {len(template_hash)} bytes")
    template = tname.decode("ascii", "replace")
    if template not in TEMPLATES:
        raise LookupError(f"template {template!r} cannot be rebuilt from ASCII")
    violation = template_hash.count(0) == len(template_hash)
    digest_text, space, rest = fields.partition(b" ")
    if not space:
        raise ValueError(f"{template} line has too few fields")
    if template == "ima":  # build_entry checks its size and the name's
        alg, digest = "sha1", _hex(digest_text, "digest")
    else:
        alg, digest = _d_ng(digest_text, violation=violation)
    extra: bytes | None = None
    if template in ("ima-sig", "ima-buf"):
        name_raw, space, extra_hex = rest.rpartition(b" ")
        if not space:
            raise ValueError(f"{template} line has too few fields")
        extra = _hex(extra_hex, "signature" if template == "ima-sig" else "buffer")
        rest = name_raw
    return build_entry(
        index,
        pcr,
        template_hash,
        template,
        digest_alg=alg,
        digest=digest,
        name=_name(rest),
        signature=extra if template == "ima-sig" else None,
        buffer=extra if template == "ima-buf" else None,
        byte_order=byte_order,
        offset=offset,
    )


def parse_ascii(
    raw: bytes,
    *,
    template_hash_alg: str = "sha1",
    first_index: int = 0,
    byte_order: ByteOrder = "little",
) -> ImaList:
    """Parse an ASCII list (checks: module docstring); raises ParseError only."""
    if template_hash_alg not in TEMPLATE_HASH_SIZES:
        raise ParseError(f"IMA list: template hash {template_hash_alg!r}", code="bad_argument")
    if len(raw) > MAX_LIST_SIZE:
        raise ParseError(f"IMA list: {len(raw)} bytes exceeds {MAX_LIST_SIZE}", code="too_large")
    entries: list[ImaEntry] = []
    offset = 0
    while offset < len(raw):
        index = first_index + len(entries)
        if len(entries) >= MAX_ENTRIES:
            raise fail(
                f"more than {MAX_ENTRIES} lines", index=index, offset=offset, code="too_large"
            )
        end = raw.find(b"\n", offset)
        if end < 0:
            raise fail("last line has no newline", index=index, offset=offset, code="truncated")
        try:
            entry = _entry(raw[offset:end], index, offset, template_hash_alg, byte_order)
        except LookupError as exc:
            raise fail(str(exc), index=index, offset=offset, code="unknown_template") from None
        except (ValueError, UnicodeError) as exc:
            raise fail(str(exc), index=index, offset=offset, code="bad_line") from None
        entries.append(entry)
        offset = end + 1
    return ImaList("ascii", byte_order, template_hash_alg, tuple(entries))
