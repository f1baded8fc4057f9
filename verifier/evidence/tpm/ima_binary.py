"""Read the entries of a binary IMA list: a scan, then the fields decoded in bulk.

:func:`~verifier.evidence.tpm.ima.parse_binary` checks its arguments and limits and
calls :func:`read_entries`, which makes the checks that function's module docstring
lists, entry by entry in order, with the ParseError (code, message, entry index and
offset) that :func:`_read_entry`, the per-entry reader, raises.

Why two paths: a list is thousands of entries of the kernel's one template. The scan
reads the header of each entry of that template (PCR, template hash, name, data
length) with one precompiled struct and keeps its template data; any other entry,
and any header that does not fit, goes to :func:`_read_entry`, which reads it or
raises. The kept entries are then decoded column by column (:func:`_decode_rows`):
each field is cut where a well-formed entry has it, the template data those fields
make is rebuilt (:func:`~verifier.evidence.tpm.ima_layout.template_data`) and must
equal the entry's data, which checks the ``alg:\\0`` prefix, every field length and
the name's NUL at once; names must hold no other NUL. An entry that fails goes to
:func:`_decode_fields`, which raises with what is wrong, or decodes what the bulk
path leaves out (another algorithm, a violation's 20-byte digest). A field error of
an earlier entry is raised before a later entry's header error.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from itertools import repeat
from operator import add, eq, getitem, itemgetter
from types import MappingProxyType
from typing import cast

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.ima import (
    HASH_SIZES,
    MAX_TEMPLATE_DATA,
    MAX_TEMPLATE_NAME,
    TEMPLATES,
    ByteOrder,
    ImaEntry,
    check_digest,
    fail,
    new_entry,
)
from verifier.evidence.tpm.ima_layout import d_ng_prefix, template_data

__all__ = ["detect_byte_order", "read_entries"]

# CRYPTO_MAX_ALG_NAME is 128 but no kernel hash name is longer than 11 bytes.
_MAX_ALG_NAME = 64
_MAX_PCR = 23
_SHA1_SIZE = 20
_IMA_NAME_MAX = 255  # IMA_EVENT_NAME_LEN_MAX
_ALG_CHARS = b"abcdefghijklmnopqrstuvwxyz0123456789-_"
_NAME_CHARS = bytes(range(0x21, 0x7F))
_U32 = {"little": struct.Struct("<I"), "big": struct.Struct(">I")}
_ENDIAN = {"little": "<", "big": ">"}
_cut = cast("Callable[[bytes, slice], bytes]", getitem)  # data[a:b], mapped

# digest_alg, digest, name, signature, buffer (all None for an unknown template)
_Decoded = tuple[str | None, bytes | None, str | None, bytes | None, bytes | None]
_UNDECODED: _Decoded = (None, None, None, None, None)
# Parsing a list looks up the same few names thousands of times: known ones skip
# the character checks and the decoding.
_KNOWN_ALGS = MappingProxyType({name.encode(): name for name in HASH_SIZES})
_KNOWN_TEMPLATES = MappingProxyType({name.encode(): name for name in TEMPLATES})
_D_NG_TEMPLATES = MappingProxyType({t.encode(): t for t in ("ima-ng", "ima-sig", "ima-buf")})

# Entries decoded in bulk at a time: the columns of a few thousand stay in the CPU
# caches, those of a whole 20,000-entry list do not.
_CHUNK = 2048
# An entry the scan kept: its position in the list, offset, PCR, template hash, data.
_Row = tuple[int, int, int, bytes, bytes]


def detect_byte_order(raw: bytes, hash_size: int) -> ByteOrder:
    """Little- or big-endian, from the first entry's name length, else its PCR index."""
    name_at = 4 + hash_size
    if len(raw) < name_at + 4:
        raise fail("truncated entry header", index=0, offset=0, code="truncated")
    for at, limit in ((name_at, MAX_TEMPLATE_NAME), (0, _MAX_PCR)):
        little = _U32["little"].unpack_from(raw, at)[0]
        big = _U32["big"].unpack_from(raw, at)[0]
        # A zero (custom template with an empty name, PCR0) reads the same both ways.
        if little != big:
            if little <= limit:
                return "little"
            if big <= limit:
                return "big"
            break
    else:
        return "little"
    raise fail("neither byte order gives a valid header", index=0, offset=0, code="byte_order")


def read_entries(
    raw: bytes, *, hash_size: int, byte_order: ByteOrder, first_index: int, limit: int
) -> list[ImaEntry]:
    """Every entry of a non-empty list, at most ``limit`` of them; raises ParseError."""
    u32 = _U32[byte_order]
    # The scan's header: PCR, template hash, name length and name, data length, for
    # the template of the first entry (the kernel's, normally every entry's).
    name_at = 4 + hash_size
    name_size = u32.unpack_from(raw, name_at)[0] if len(raw) >= name_at + 4 else 0
    template = _D_NG_TEMPLATES.get(raw[name_at + 4 : name_at + 4 + name_size])
    tag = raw[name_at : name_at + 4 + name_size] if template else None
    header = struct.Struct(f"{_ENDIAN[byte_order]}I{hash_size}s{4 + name_size}sI")
    unpack, head = header.unpack_from, header.size
    max_data = MAX_TEMPLATE_DATA
    rows: list[_Row] = []
    others: list[tuple[int, ImaEntry]] = []
    count, pos, end = 0, 0, len(raw)
    while pos < end:
        if count >= limit:
            _decode_rows(rows, template, first_index, hash_size, byte_order)
            raise fail(
                f"more than {limit} entries",
                index=first_index + count,
                offset=pos,
                code="too_large",
            )
        if end - pos >= head:
            pcr, logged, name, size = unpack(raw, pos)
            after = pos + head + size
            if name == tag and pcr <= _MAX_PCR and size <= max_data and after <= end:
                rows.append((count, pos, pcr, logged, raw[pos + head : after]))
                count += 1
                pos = after
                continue
        try:
            entry, pos = _read_entry(raw, pos, first_index + count, hash_size, u32)
        except ParseError:
            _decode_rows(rows, template, first_index, hash_size, byte_order)  # earlier errors
            raise
        others.append((count, entry))
        count += 1
    decoded = _decode_rows(rows, template, first_index, hash_size, byte_order)
    if not others:
        return decoded
    entries: list[ImaEntry | None] = [None] * count
    for row, entry in zip(rows, decoded, strict=True):
        entries[row[0]] = entry
    for at, entry in others:
        entries[at] = entry
    return entries  # type: ignore[return-value]  # every position is filled above


def _d_ng_alg(data: bytes, u32: struct.Struct) -> str | None:
    """The known algorithm of the d-ng field ``data`` starts with, if it has one."""
    if len(data) < 4:
        return None
    d_ng = data[4 : 4 + u32.unpack_from(data)[0]]
    return _KNOWN_ALGS.get(d_ng[: d_ng.find(b":\0")])


def _decode_rows(
    rows: list[_Row], template: str | None, first_index: int, hash_size: int, order: ByteOrder
) -> list[ImaEntry]:
    """The scan's entries, decoded; raises the first one's field error (in list order)."""
    if template is None:
        return []
    entries: list[ImaEntry] = []
    for start in range(0, len(rows), _CHUNK):
        entries += _decode_chunk(
            rows[start : start + _CHUNK], template, first_index, hash_size, order
        )
    return entries


def _decode_chunk(
    rows: list[_Row], template: str, first_index: int, hash_size: int, order: ByteOrder
) -> list[ImaEntry]:
    u32 = _U32[order]
    positions, starts, pcrs, hashes, datas = map(list, zip(*rows, strict=True))
    alg = _d_ng_alg(datas[-1], u32) or _d_ng_alg(datas[0], u32) or "sha256"
    size = HASH_SIZES[alg]
    prefix = d_ng_prefix(alg, size, u32)
    digests, names, extras = _cut_fields(template, prefix, size, datas, order)
    rebuilt = template_data(
        template, prefix=prefix, digests=digests, names=names, extras=extras, u32=u32
    )
    good = list(map(eq, rebuilt, datas))
    joined = b"\0".join(names)
    if joined.count(0) != len(names) - 1:  # a name holds a NUL
        good = [ok and b"\0" not in name for ok, name in zip(good, names, strict=True)]
    bad: dict[int, _Decoded] = {}
    if False in good:
        for at, ok in enumerate(good):
            if not ok:
                bad[at] = _decode_one(
                    template, rows[at], u32, first_index=first_index, hash_size=hash_size
                )
                names[at] = b""
        joined = b"\0".join(names)
    # UTF-8 decoding is self-synchronising and surrogateescape escapes byte by byte,
    # so decoding the joined names equals decoding each (tests compare the two).
    texts = joined.decode("utf-8", "surrogateescape").split("\0")
    entries = list(
        map(
            new_entry,
            map(add, positions, repeat(first_index)),
            pcrs,
            hashes,
            repeat(template),
            datas,
            repeat(alg),
            digests,
            texts,
            _third(extras, template == "ima-sig"),
            _third(extras, template == "ima-buf"),
            starts,
        )
    )
    for at, decoded in bad.items():
        index, start = first_index + positions[at], starts[at]
        entries[at] = ImaEntry(index, pcrs[at], hashes[at], template, datas[at], *decoded, start)
    return entries


def _third(extras: list[bytes] | None, used: bool) -> Iterable[bytes | None]:  # noqa: FBT001
    """The signature or buffer column: the third fields where ``used``, else None."""
    return extras if used and extras is not None else repeat(None)


def _cut_fields(
    template: str, prefix: bytes, size: int, datas: list[bytes], order: ByteOrder
) -> tuple[list[bytes], list[bytes], list[bytes] | None]:
    """Digest, name and (ima-sig, ima-buf) third field where a well-formed entry whose
    d-ng field starts with ``prefix`` has them; garbage for any other entry."""
    name_size_at = len(prefix) + size
    name_at = name_size_at + 4
    digests = list(map(itemgetter(slice(len(prefix), name_size_at)), datas))
    if template == "ima-ng":  # the name runs to the data's last byte, its NUL
        return digests, list(map(itemgetter(slice(name_at, -1)), datas)), None
    sizes = map(itemgetter(slice(name_size_at, name_at)), datas)
    # n-ng length L: the name is L - 1 bytes from name_at, the third field's length
    # follows its NUL, then the field itself to the end.
    name_ends = list(map(add, map(int.from_bytes, sizes, repeat(order)), repeat(name_at - 1)))
    names: list[bytes] = list(map(_cut, datas, map(slice, repeat(name_at), name_ends)))
    thirds = map(slice, map(add, name_ends, repeat(5)), repeat(None))
    extras: list[bytes] = list(map(_cut, datas, thirds))
    return digests, names, extras


def _decode_one(
    template: str, row: _Row, u32: struct.Struct, *, first_index: int, hash_size: int
) -> _Decoded:
    """The reference decoding of one kept entry: its fields, or its ParseError."""
    position, start, _pcr, logged, data = row
    violation = logged.count(0) == hash_size
    try:
        return _decode_fields(template, data, u32, violation=violation)
    except ValueError as exc:
        index = first_index + position
        raise fail(f"{template}: {exc}", index=index, offset=start, code="bad_field") from None


def _decode_fields(template: str, data: bytes, u32: struct.Struct, *, violation: bool) -> _Decoded:
    """The fields of a known, non-``ima`` template; ValueError says what is wrong."""
    values: list[bytes] = []
    pos, end = 0, len(data)
    for field_id in TEMPLATES[template]:
        if end - pos < 4:
            raise ValueError(f"template data ends before field {field_id}")
        size = u32.unpack_from(data, pos)[0]
        pos += 4
        if size > end - pos:
            raise ValueError(f"field {field_id} length {size} exceeds the template data")
        values.append(data[pos : pos + size])
        pos += size
    if pos != end:
        raise ValueError(f"{end - pos} bytes after the last field")
    d_ng, n_ng = values[0], values[1]
    sep = d_ng.find(b":\0")
    alg = _KNOWN_ALGS.get(d_ng[:sep]) if sep > 0 else None
    if alg is None:
        if not 0 < sep <= _MAX_ALG_NAME or d_ng[:sep].translate(None, _ALG_CHARS):
            raise ValueError("d-ng field has no valid 'alg:' prefix")
        alg = d_ng[:sep].decode("ascii")
    digest = d_ng[sep + 2 :]
    check_digest(alg, digest, violation=violation)
    if not n_ng or n_ng.find(b"\0") != len(n_ng) - 1:
        raise ValueError("n-ng field is not one NUL-terminated name")
    name = n_ng[:-1].decode("utf-8", "surrogateescape")
    if template == "ima-sig":
        return alg, digest, name, values[2], None
    if template == "ima-buf":
        return alg, digest, name, None, values[2]
    return alg, digest, name, None, None


def _read_entry(
    raw: bytes, start: int, index: int, hash_size: int, u32: struct.Struct
) -> tuple[ImaEntry, int]:
    left = len(raw) - start
    if left < 8 + hash_size:
        raise fail("truncated entry header", index=index, offset=start, code="truncated")
    pcr = u32.unpack_from(raw, start)[0]
    if pcr > _MAX_PCR:
        raise fail(f"PCR index {pcr}", index=index, offset=start, code="bad_pcr")
    pos = start + 4 + hash_size
    template_hash = raw[start + 4 : pos]
    name_len = u32.unpack_from(raw, pos)[0]
    pos += 4
    if name_len > MAX_TEMPLATE_NAME:
        raise fail(f"template name of {name_len} bytes", index=index, offset=start)
    if name_len + 4 > len(raw) - pos:  # the name and the data length (or ima digest)
        raise fail("truncated template name", index=index, offset=start, code="truncated")
    tname = raw[pos : pos + name_len]
    pos += name_len
    template = _KNOWN_TEMPLATES.get(tname)
    if template is None:
        if tname.translate(None, _NAME_CHARS):
            raise fail("template name is not printable ASCII", index=index, offset=start)
        template = tname.decode("ascii")
    violation = template_hash.count(0) == hash_size
    if template == "ima":
        return _read_ima_template(
            raw, start, pos, index=index, pcr=pcr, template_hash=template_hash, u32=u32
        )
    size = u32.unpack_from(raw, pos)[0]
    pos += 4
    if size > MAX_TEMPLATE_DATA:
        raise fail(f"template data of {size} bytes", index=index, offset=start, code="too_large")
    if size > len(raw) - pos:
        raise fail("truncated template data", index=index, offset=start, code="truncated")
    data = raw[pos : pos + size]
    decoded = _UNDECODED
    if template in TEMPLATES:
        try:
            decoded = _decode_fields(template, data, u32, violation=violation)
        except ValueError as exc:
            raise fail(f"{template}: {exc}", index=index, offset=start, code="bad_field") from None
    entry = ImaEntry(index, pcr, template_hash, template, data, *decoded, start)
    return entry, pos + size


def _read_ima_template(
    raw: bytes,
    start: int,
    pos: int,
    *,
    index: int,
    pcr: int,
    template_hash: bytes,
    u32: struct.Struct,
) -> tuple[ImaEntry, int]:
    """The legacy template: a 20-byte digest, then the name's strlen and the name."""
    if len(raw) - pos < _SHA1_SIZE + 4:
        raise fail("truncated ima template data", index=index, offset=start, code="truncated")
    digest = raw[pos : pos + _SHA1_SIZE]
    size = u32.unpack_from(raw, pos + _SHA1_SIZE)[0]
    if size > _IMA_NAME_MAX:
        raise fail(f"ima template name of {size} bytes", index=index, offset=start)
    name_at = pos + _SHA1_SIZE + 4
    if size > len(raw) - name_at:
        raise fail("truncated ima template name", index=index, offset=start, code="truncated")
    name = raw[name_at : name_at + size]
    if b"\0" in name:
        raise fail("NUL in ima template name", index=index, offset=start)
    text = name.decode("utf-8", "surrogateescape")
    data = raw[pos : name_at + size]
    entry = ImaEntry(
        index, pcr, template_hash, "ima", data, "sha1", digest, text, None, None, start
    )
    return entry, name_at + size
