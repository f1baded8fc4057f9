"""Parse many ASCII IMA lines of one shape at once: the speed path of :mod:`.ima_ascii`.

A list is mostly thousands of lines of one *shape*: the same template and digest
algorithm, hence the same layout up to the name, e.g.
``10 <40 hex> ima-ng sha256:<64 hex> <path>``. :func:`parse_block` parses a block of
such lines column by column, each step one C-level operation over every line (one
slice per column, one hex check and one hex decode per column, one UTF-8 decode for
all names), instead of a dozen Python steps per line.

It accepts a line only where :func:`~verifier.evidence.tpm.ima_ascii.parse_line`
accepts it, and builds the very same entry: a line of the shape is its template
hash (lowercase hex of the template-hash size), a PCR as the kernel prints it, the
shape's template and ``alg:``, a lowercase hex digest of that algorithm's size and
one space; then the name, which holds no NUL (for ima-sig and ima-buf: up to the
last space, then lowercase hex of even length; for ``ima``: at most 255 bytes).
When any line of a block fails any of these, :func:`parse_block` returns None and
the caller parses the block line by line, which names the first bad line. Lines of
no shape (an unknown digest algorithm, a violation's 20-byte digest of another
algorithm, anything malformed) never reach this module.
"""

from __future__ import annotations

import struct
from binascii import unhexlify
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter, methodcaller
from types import MappingProxyType

from verifier.evidence.tpm.ima import HASH_SIZES, ByteOrder, ImaEntry, new_entry
from verifier.evidence.tpm.ima_layout import d_ng_prefix, template_data

__all__ = ["Shape", "parse_block", "shape_of"]

_LOWER_HEX = b"0123456789abcdef"
_DNG_TEMPLATES = MappingProxyType({t.encode(): t for t in ("ima-ng", "ima-sig", "ima-buf")})
_KNOWN_ALGS = MappingProxyType({name.encode(): name for name in HASH_SIZES})
_SHA1_SIZE = 20
_IMA_NAME_MAX = 255  # IMA_EVENT_NAME_LEN_MAX, as build_entry checks
_NUL = b"\0"
# "%2d " for PCRs 0-23, by its two characters (as ints: what zip over bytes yields).
_PCR_CHARS = MappingProxyType(
    {(0x20 if pcr < 10 else 0x30 + pcr // 10, 0x30 + pcr % 10): pcr for pcr in range(24)}
)
_RPARTITION = methodcaller("rpartition", b" ")
_U32 = {"little": struct.Struct("<I"), "big": struct.Struct(">I")}


@dataclass(frozen=True, slots=True)
class Shape:
    """The layout of a line up to its name: ``PP <hash hex><middle><digest hex> ``."""

    template: str
    alg: str  # kernel hash name; "sha1" for the ima template
    digest_size: int
    hash_hex: int  # hex digits of the template hash
    middle: bytes  # b" ima-ng sha256:": from the space after the hash to the digest

    @property
    def width(self) -> int:
        """Bytes before the name (the space after the digest included)."""
        return 3 + self.hash_hex + len(self.middle) + 2 * self.digest_size + 1


def shape_of(line: bytes, hash_hex: int) -> Shape | None:
    """The shape ``line`` would have if it is well formed (nothing is checked here).

    None for a line no shape describes: the per-line parser takes it.
    """
    tname, _, rest = line[hash_hex + 4 :].partition(b" ")
    size = rest.find(b" ")
    if tname == b"ima":
        if size != 2 * _SHA1_SIZE:
            return None
        return Shape("ima", "sha1", _SHA1_SIZE, hash_hex, b" ima ")
    template = _DNG_TEMPLATES.get(tname)
    if template is None or size < 0:
        return None
    alg_text, colon, digest_hex = rest[:size].partition(b":")
    alg = _KNOWN_ALGS.get(alg_text)
    if alg is None or not colon or len(digest_hex) != 2 * HASH_SIZES[alg]:
        return None
    return Shape(template, alg, HASH_SIZES[alg], hash_hex, b" %b %b:" % (tname, alg_text))


def _hex_column(column: Sequence[bytes]) -> list[bytes] | None:
    """Each item decoded, or None unless all are lowercase hex of even length."""
    if b"".join(column).translate(None, _LOWER_HEX):
        return None
    try:
        return list(map(unhexlify, column))
    except ValueError:  # binascii.Error: an odd number of digits
        return None


def _pcrs(heads: bytes, width: int, count: int) -> Iterable[int] | None:
    """Each line's PCR from its first three bytes (every ``width`` bytes of ``heads``)."""
    tens, units = heads[0::width], heads[1::width]
    if heads[2::width] != b" " * count:
        return None
    if tens == b"1" * count and units == b"0" * count:  # IMA's PCR on every line
        return repeat(10)
    pcrs = list(map(_PCR_CHARS.get, zip(tens, units, strict=True)))
    return None if None in pcrs else pcrs  # type: ignore[return-value]


def parse_block(
    lines: Sequence[bytes],
    shape: Shape,
    *,
    indices: Iterable[int],
    offsets: Iterable[int],
    byte_order: ByteOrder,
) -> list[ImaEntry] | None:
    """The entries of ``lines`` (at least one, all of ``shape``), or None if any is bad.

    ``indices`` and ``offsets`` give each line's entry index and where it starts.
    """
    count, width = len(lines), shape.width
    hash_end = 3 + shape.hash_hex
    digest_at = hash_end + len(shape.middle)
    heads = b"".join(map(itemgetter(slice(0, width)), lines))
    if len(heads) != count * width:  # a line shorter than the shape
        return None
    pcrs = _pcrs(heads, width, count)
    if pcrs is None or heads[width - 1 :: width] != b" " * count:
        return None
    for at, char in enumerate(shape.middle, start=hash_end):
        if heads[at::width] != bytes((char,)) * count:
            return None
    hashes = _hex_column(list(map(itemgetter(slice(3, hash_end)), lines)))
    digests = _hex_column(list(map(itemgetter(slice(digest_at, width - 1)), lines)))
    if hashes is None or digests is None:
        return None
    rests = list(map(itemgetter(slice(width, None)), lines))
    extras: list[bytes] | None = None
    names: Sequence[bytes] = rests
    if shape.template in ("ima-sig", "ima-buf"):  # "name hex": the name ends at the last space
        parts = tuple(chain.from_iterable(map(_RPARTITION, rests)))
        names = parts[0::3]
        extras = _hex_column(parts[2::3])
        if extras is None or parts[1::3].count(b" ") != count:
            return None
    joined = b"\n".join(names)  # no name holds a newline: the lines were split there
    if _NUL in joined:
        return None
    if shape.template == "ima" and max(map(len, names)) > _IMA_NAME_MAX:
        return None
    # UTF-8 decoding is self-synchronising and surrogateescape escapes byte by byte,
    # so decoding the joined names equals decoding each (tests compare the two).
    texts = joined.decode("utf-8", "surrogateescape").split("\n")
    u32 = _U32[byte_order]
    prefix = d_ng_prefix(shape.alg, shape.digest_size, u32)
    datas = template_data(
        shape.template, prefix=prefix, digests=digests, names=names, extras=extras, u32=u32
    )
    template, alg = shape.template, shape.alg
    none: Iterable[bytes | None] = repeat(None)
    signatures = extras if template == "ima-sig" and extras is not None else none
    buffers = extras if template == "ima-buf" and extras is not None else none
    return list(
        map(
            new_entry,
            indices,
            pcrs,
            hashes,
            repeat(template),
            datas,
            repeat(alg),
            digests,
            texts,
            signatures,
            buffers,
            offsets,
        )
    )
