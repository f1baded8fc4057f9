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

Speed: :func:`parse_line` is the reference for one line. A list whose every line
is well formed and of a common form is parsed in C (:mod:`.ima_native`), which
builds the same entries and leaves every other list to the code here. Lines of a common shape
(template, digest algorithm and size) are parsed in bulk, 2,048 at a time, by
:mod:`verifier.evidence.tpm.ima_ascii_block`, which accepts exactly the lines
:func:`parse_line` accepts and builds the same entries; lines of no shape, and every
line of a block that has a bad one, go through :func:`parse_line` in order, so the
first bad line is the one named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import accumulate

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import ima_native
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
from verifier.evidence.tpm.ima_ascii_block import Shape, parse_block, shape_of
from verifier.evidence.tpm.ima_encode import build_entry

__all__ = ["parse_ascii", "parse_line"]

_HEX = re.compile(rb"(?:[0-9a-f]{2})*")
_ALG = re.compile(rb"[a-z0-9_-]{1,64}")
_MAX_PCR = 23
_PLUS1 = (1).__add__
# Lines parsed in bulk at a time: the columns of a few thousand lines stay in the CPU
# caches, those of a whole 20,000-line list do not (a third slower per line).
_CHUNK = 2048


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


def parse_line(
    line: bytes, index: int, offset: int, hash_alg: str, byte_order: ByteOrder
) -> ImaEntry:
    """One line without its newline; ValueError (LookupError: an unknown template) says
    what is wrong. The reference for :mod:`.ima_ascii_block`, which must agree with it."""
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
    size = TEMPLATE_HASH_SIZES.get(template_hash_alg)
    if size is None:
        raise ParseError(f"IMA list: template hash {template_hash_alg!r}", code="bad_argument")
    # bytes first: a bytearray or memoryview would give its type to every field, and
    # the len() of a memoryview of wider items counts items, not bytes.
    raw = bytes(raw)
    if len(raw) > MAX_LIST_SIZE:
        raise ParseError(f"IMA list: {len(raw)} bytes exceeds {MAX_LIST_SIZE}", code="too_large")
    native = ima_native.ascii_entries(
        raw, hash_size=size, first_index=first_index, byte_order=byte_order, max_entries=MAX_ENTRIES
    )
    if native is not None:  # every line well formed and of a common form (ima_native)
        return ImaList("ascii", byte_order, template_hash_alg, native)
    lines = raw.split(b"\n")
    tail = lines.pop()  # what follows the last newline: nothing in a whole list
    too_many = len(lines) > MAX_ENTRIES or (len(lines) == MAX_ENTRIES and bool(tail))
    del lines[MAX_ENTRIES:]
    # offsets[i]: where line i starts; offsets[-1]: where the bytes after them start.
    offsets = list(accumulate(map(_PLUS1, map(len, lines)), initial=0))
    context = _Context(first_index, offsets, template_hash_alg, 2 * size, byte_order)
    entries = _parse_lines(lines, context)
    end = len(lines)
    if too_many:
        raise fail(
            f"more than {MAX_ENTRIES} lines",
            index=first_index + end,
            offset=offsets[end],
            code="too_large",
        )
    if tail:
        at = offsets[end]
        raise fail("last line has no newline", index=first_index + end, offset=at, code="truncated")
    return ImaList("ascii", byte_order, template_hash_alg, tuple(entries))


@dataclass(frozen=True, slots=True)
class _Context:
    first_index: int
    offsets: list[int]
    hash_alg: str
    hash_hex: int
    byte_order: ByteOrder


def _parse_lines(lines: list[bytes], ctx: _Context) -> list[ImaEntry]:
    """Every line's entry; raises the first bad line's ParseError."""
    entries: list[ImaEntry] = []
    for start in range(0, len(lines), _CHUNK):
        entries += _parse_chunk(lines[start : start + _CHUNK], start, ctx)
    return entries


def _parse_chunk(lines: list[bytes], start: int, ctx: _Context) -> list[ImaEntry]:
    """The entries of lines ``start, start + 1, ...``: in bulk where lines share a shape,
    the others one by one; raises the first bad line's ParseError."""
    count, first = len(lines), ctx.first_index + start
    offsets = ctx.offsets[start : start + count]
    shape = shape_of(lines[-1], ctx.hash_hex)  # what most lines of a list look like
    if shape is not None and (shape_of(lines[0], ctx.hash_hex) == shape or count == 1):
        done = parse_block(
            lines,
            shape,
            indices=range(first, first + count),
            offsets=offsets,
            byte_order=ctx.byte_order,
        )
        if done is not None:
            return done
    groups: dict[Shape, list[int]] = {}
    one_by_one: list[int] = []
    for i, line in enumerate(lines):
        line_shape = shape_of(line, ctx.hash_hex)
        if line_shape is None:
            one_by_one.append(i)
        else:
            groups.setdefault(line_shape, []).append(i)
    entries: list[ImaEntry | None] = [None] * count
    for group_shape, members in groups.items():
        block = parse_block(
            [lines[i] for i in members],
            group_shape,
            indices=[first + i for i in members],
            offsets=[offsets[i] for i in members],
            byte_order=ctx.byte_order,
        )
        if block is None:  # a bad line among them: one by one finds the first
            one_by_one += members
            continue
        for i, entry in zip(members, block, strict=True):
            entries[i] = entry
    for i in sorted(one_by_one):
        entries[i] = _line_entry(lines[i], first + i, ctx)
    return entries  # type: ignore[return-value]  # every slot is filled above


def _line_entry(line: bytes, index: int, ctx: _Context) -> ImaEntry:
    offset = ctx.offsets[index - ctx.first_index]
    try:
        return parse_line(line, index, offset, ctx.hash_alg, ctx.byte_order)
    except LookupError as exc:
        raise fail(str(exc), index=index, offset=offset, code="unknown_template") from None
    except (ValueError, UnicodeError) as exc:
        raise fail(str(exc), index=index, offset=offset, code="bad_line") from None
