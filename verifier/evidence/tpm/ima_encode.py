"""Write IMA entries and lists the way the kernel does (for tools, tests and fuzzing).

:func:`build_entry` makes an entry of a known template from its fields, building the
template data as ``ima_write_template_field_data`` and ``ima_measurements_show`` lay
it out; the ASCII parser rebuilds every line through it. :func:`encode_binary` and
:func:`encode_ascii` are the inverses of the two parsers: parsing their output gives
back the same entries.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from verifier.evidence.tpm.ima import TEMPLATES, ByteOrder, ImaEntry, new_entry

__all__ = ["build_entry", "encode_ascii", "encode_binary"]

_U32 = {"little": struct.Struct("<I"), "big": struct.Struct(">I")}
_SHA1_SIZE = 20
_IMA_NAME_MAX = 255  # IMA_EVENT_NAME_LEN_MAX


def build_entry(
    index: int,
    pcr: int,
    template_hash: bytes,
    template_name: str,
    *,
    digest_alg: str,
    digest: bytes,
    name: str,
    signature: bytes | None = None,
    buffer: bytes | None = None,
    byte_order: ByteOrder = "little",
    offset: int = 0,
) -> ImaEntry:
    """An entry of a known template, its template data built as the kernel does.

    The ASCII parser rebuilds entries through this; tests and tools use it to make
    lists. ``signature`` is used by ima-sig and ``buffer`` by ima-buf (empty if None);
    the ``ima`` template's digest is always SHA-1, whatever ``digest_alg`` says.
    """
    name_bytes = name.encode("utf-8", "surrogateescape")
    pack = _U32[byte_order].pack
    if template_name == "ima":
        if len(digest) != _SHA1_SIZE or len(name_bytes) > _IMA_NAME_MAX:
            raise ValueError("the ima template holds a 20-byte digest and at most 255 name bytes")
        data = digest + pack(len(name_bytes)) + name_bytes
        return new_entry(
            index, pcr, template_hash, "ima", data, "sha1", digest, name, None, None, offset
        )
    d_ng = digest_alg.encode("ascii") + b":\0" + digest
    data = pack(len(d_ng)) + d_ng + pack(len(name_bytes) + 1) + name_bytes + b"\0"
    if template_name in ("ima-sig", "ima-buf"):
        third = (signature if template_name == "ima-sig" else buffer) or b""
        data += pack(len(third)) + third
    elif template_name != "ima-ng":
        raise ValueError(f"cannot build template data for {template_name!r}")
    return new_entry(
        index,
        pcr,
        template_hash,
        template_name,
        data,
        digest_alg,
        digest,
        name,
        signature if template_name == "ima-sig" else None,
        buffer if template_name == "ima-buf" else None,
        offset,
    )


def encode_binary(entries: Iterable[ImaEntry], *, byte_order: ByteOrder = "little") -> bytes:
    """The binary list the kernel would export for ``entries``.

    Template data is written as it is: its field lengths keep the byte order it was
    built or parsed with, so give the same ``byte_order`` for an exact round trip.
    """
    u32 = _U32[byte_order]
    out: list[bytes] = []
    for e in entries:
        tname = e.template_name.encode("ascii")
        out += [u32.pack(e.pcr), e.template_hash, u32.pack(len(tname)), tname]
        if e.template_name != "ima":
            out.append(u32.pack(len(e.template_data)))
        out.append(e.template_data)
    return b"".join(out)


def encode_ascii(entries: Iterable[ImaEntry]) -> bytes:
    """The ASCII list the kernel would print for ``entries`` (known templates only)."""
    lines: list[bytes] = []
    for e in entries:
        if e.template_name not in TEMPLATES or e.digest is None or e.name is None:
            raise ValueError(f"entry {e.index}: template {e.template_name!r} has no ASCII form")
        name = e.name.encode("utf-8", "surrogateescape")
        if b"\n" in name:
            raise ValueError(f"entry {e.index}: a name with a newline has no ASCII form")
        digest = e.digest.hex().encode()
        if e.template_name != "ima":
            digest = f"{e.digest_alg}:".encode() + digest
        fields = [digest, name]
        if e.template_name == "ima-sig":
            fields.append((e.signature or b"").hex().encode())
        elif e.template_name == "ima-buf":
            fields.append((e.buffer or b"").hex().encode())
        head = f"{e.pcr:2d} {e.template_hash.hex()} {e.template_name}".encode()
        lines.append(b" ".join([head, *fields]) + b"\n")
    return b"".join(lines)
