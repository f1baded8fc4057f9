"""Template data of many IMA entries at once, laid out as the kernel writes it.

Both bulk parsers use :func:`template_data`: the ASCII one to rebuild each line's
template data, the binary one to check that each entry's data is exactly what its
decoded fields make. The layout is
:func:`~verifier.evidence.tpm.ima_encode.build_entry`'s: each field a u32 length and
its bytes (``d-ng``: ``alg:\\0`` and the digest; ``n-ng``: the name and a NUL;
``sig``/``buf``: the bytes), except the legacy ``ima`` template: digest, name length
(strlen) and name.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from itertools import repeat

__all__ = ["d_ng_prefix", "template_data"]

_NUL = b"\0"
_PLUS1 = (1).__add__


def d_ng_prefix(alg: str, digest_size: int, u32: struct.Struct) -> bytes:
    """What a d-ng field of ``alg`` starts with: its u32 length, then ``alg:\\0``."""
    label = alg.encode("ascii") + b":\0"
    return u32.pack(len(label) + digest_size) + label


def template_data(
    template: str,
    *,
    prefix: bytes,
    digests: Iterable[bytes],
    names: Sequence[bytes],
    extras: Sequence[bytes] | None,
    u32: struct.Struct,
) -> list[bytes]:
    """Each entry's template data. ``prefix``: :func:`d_ng_prefix` (unused for ``ima``);
    ``extras``: the third field of ima-sig and ima-buf, None for the others."""
    pack = u32.pack
    if template == "ima":  # digest || strlen || name
        return list(map(b"".join, zip(digests, map(pack, map(len, names)), names, strict=False)))
    name_sizes = map(pack, map(_PLUS1, map(len, names)))
    if extras is None:
        parts = zip(repeat(prefix), digests, name_sizes, names, repeat(_NUL), strict=False)
        return list(map(b"".join, parts))
    extra_sizes = map(pack, map(len, extras))
    parts7 = zip(
        repeat(prefix), digests, name_sizes, names, repeat(_NUL), extra_sizes, extras, strict=False
    )
    return list(map(b"".join, parts7))
