"""Parse a Linux IMA runtime measurement list (untrusted bytes) into frozen dataclasses.

The kernel exports the same list twice (``security/integrity/ima/ima_fs.c``):
``binary_runtime_measurements`` (parsed here) and ``ascii_runtime_measurements``
(:mod:`verifier.evidence.tpm.ima_ascii`, which rebuilds the binary template data);
:mod:`verifier.evidence.tpm.ima_encode` writes both.

Binary entry: PCR index (u32), template hash (20 bytes: SHA-1; a list exported per
bank carries that bank's digest size, hence ``template_hash_alg``), template-name
length (u32) and name, then, for every template except ``ima``, the template-data
length (u32) and data. Template data is the concatenation of its fields, each a u32
length and its bytes; the template hash is over exactly these bytes. The legacy
``ima`` template is printed without lengths for its digest (always 20 bytes) and
with the name's ``strlen`` as length, and hashed as ``digest || name`` with the name
zero-padded to 256 bytes (``ima_calc_field_array_hash_tfm``).

Integers are in the host's byte order unless the kernel runs with
``ima_canonical_fmt`` (then little-endian). :func:`parse_binary` detects the order
from the first entry (template-name length, else PCR index: both are small) and
says which in :attr:`ImaList.byte_order`.

:func:`parse_binary` checks, in order: the list is at most :data:`MAX_LIST_SIZE`
bytes and :data:`MAX_ENTRIES` entries; every header, name and data fits in what
remains; the PCR index is 0-23; the template name is at most
:data:`MAX_TEMPLATE_NAME` printable bytes; template data is at most
:data:`MAX_TEMPLATE_DATA` bytes; for a known template (:data:`TEMPLATES`) the data
holds exactly its fields, each well formed (``d-ng``: ``alg:\\0`` then a digest of
that algorithm's size; ``n-ng``: a NUL-terminated name without other NULs); no
bytes follow the last entry (tpm2-tss' ``sml-*`` fixtures end with garbage that the
kernel never writes). An unknown template is kept with its raw data: it can still
be replayed (its hash covers the raw data) but not appraised by name. An empty
input is an empty list: incremental callers send only new entries, possibly none.
ParseError codes: ``truncated``, ``too_large``, ``bad_pcr``, ``byte_order``,
``bad_field`` (a known template's fields), ``malformed`` (names), ``bad_argument``.

Nothing here is authenticated: an entry is a claim until its replay matches a quote
(:mod:`verifier.evidence.tpm.ima_replay`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from verifier.evidence.errors import ParseError

__all__ = [
    "HASH_SIZES",
    "MAX_ENTRIES",
    "MAX_LIST_SIZE",
    "MAX_TEMPLATE_DATA",
    "MAX_TEMPLATE_NAME",
    "TEMPLATES",
    "TEMPLATE_HASH_SIZES",
    "ByteOrder",
    "ImaEntry",
    "ImaList",
    "check_digest",
    "fail",
    "parse_binary",
]

# --- Limits (STYLE.md "limits with a reason") -------------------------------------
# A measure-everything policy on a long-running server produces 10^4-10^5 entries
# of 100-700 bytes; the benchmark tops out at 20,000. 500,000 entries in at
# most 128 MiB is 25x that and still bounds the Python objects a hostile agent can
# make us build (incremental attestation sends only new entries after the first).
MAX_LIST_SIZE = 128 * 1024 * 1024
MAX_ENTRIES = 500_000
# The largest template data real kernels write is an ima-buf (a certificate, a
# device-mapper table) or a path of PATH_MAX (4,096): a few KB. 1 MiB is far beyond.
MAX_TEMPLATE_DATA = 1024 * 1024
# Kernel template names are at most 15 bytes; a custom template is named by its
# format string ("d-ng|n-ng|sig|..."), still far below 255.
MAX_TEMPLATE_NAME = 255
# IMA_EVENT_NAME_LEN_MAX: the legacy ``ima`` template truncates names to this.
_IMA_NAME_MAX = 255
# CRYPTO_MAX_ALG_NAME is 128 but no kernel hash name is longer than 11 bytes.
_MAX_ALG_NAME = 64
# HASH_MAX_DIGESTSIZE: SHA-512 and friends.
_MAX_DIGEST = 64
_MAX_PCR = 23

# Kernel hash_algo_name -> digest size (include/crypto/hash_info.h). A d-ng digest
# of a named algorithm must have its size; other names are kept with any size.
HASH_SIZES: Mapping[str, int] = MappingProxyType(
    {
        "md5": 16,
        "sha1": 20,
        "rmd160": 20,
        "sha224": 28,
        "sha256": 32,
        "sha384": 48,
        "sha512": 64,
        "sm3": 32,
        "streebog256": 32,
        "streebog512": 64,
        "sha3-256": 32,
        "sha3-384": 48,
        "sha3-512": 64,
    }
)
# The algorithms a template hash (and a TPM bank) can use, by TPM bank name.
TEMPLATE_HASH_SIZES: Mapping[str, int] = MappingProxyType(
    {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64, "sm3_256": 32}
)
# Template name -> field ids (ima_template.c builtin_templates).
TEMPLATES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "ima": ("d", "n"),
        "ima-ng": ("d-ng", "n-ng"),
        "ima-sig": ("d-ng", "n-ng", "sig"),
        "ima-buf": ("d-ng", "n-ng", "buf"),
    }
)
_SHA1_SIZE = 20
_ALG_CHARS = b"abcdefghijklmnopqrstuvwxyz0123456789-_"
_NAME_CHARS = bytes(range(0x21, 0x7F))

ByteOrder = Literal["little", "big"]
_U32 = {"little": struct.Struct("<I"), "big": struct.Struct(">I")}


@dataclass(frozen=True, slots=True)
class ImaEntry:
    """One measurement. Decoded fields are None where the template lacks them.

    ``index`` is the entry's position in the kernel's list (parsers take the index
    of their first entry, so chunks of an incremental list keep absolute indices);
    ``offset`` is where it starts in the parsed bytes and is not compared.
    """

    index: int
    pcr: int
    template_hash: bytes
    template_name: str
    template_data: bytes  # as the binary list carries it
    digest_alg: str | None  # kernel hash name ("sha256"); "sha1" for the ima template
    digest: bytes | None
    name: str | None  # path, or buffer name for ima-buf (surrogateescape-decoded)
    signature: bytes | None = None  # ima-sig: the security.ima xattr, b"" when absent
    buffer: bytes | None = None  # ima-buf
    offset: int = field(default=0, compare=False)

    @property
    def is_violation(self) -> bool:
        """An all-zero template hash: the kernel logged a violation and extended ff..ff."""
        return self.template_hash.count(0) == len(self.template_hash)

    @property
    def known_template(self) -> bool:
        return self.template_name in TEMPLATES

    def hashed_data(self) -> bytes:
        """The bytes the template hash (and each non-SHA-1 bank's extend) is over."""
        if self.template_name != "ima":
            return self.template_data
        # digest (20) || strlen (u32, either byte order) || name -> digest || name[256]
        data = self.template_data
        return data[:_SHA1_SIZE] + data[_SHA1_SIZE + 4 :].ljust(_IMA_NAME_MAX + 1, b"\0")


@dataclass(frozen=True)
class ImaList:
    """A parsed list (or chunk of one) and how it was encoded."""

    format: Literal["binary", "ascii"]
    byte_order: ByteOrder
    template_hash_alg: str
    entries: tuple[ImaEntry, ...]


def fail(message: str, *, index: int, offset: int, code: str = "malformed") -> ParseError:
    """The ParseError of every IMA parser: names the entry and where it starts."""
    return ParseError(f"IMA list: {message} (entry {index} at offset {offset})", code=code)


# digest_alg, digest, name, signature, buffer (all None for an unknown template)
_Decoded = tuple[str | None, bytes | None, str | None, bytes | None, bytes | None]
_UNDECODED: _Decoded = (None, None, None, None, None)
# Parsing a list looks up the same few names thousands of times: known ones skip
# the character checks and the decoding.
_KNOWN_ALGS = MappingProxyType({name.encode(): name for name in HASH_SIZES})
_KNOWN_TEMPLATES = MappingProxyType({name.encode(): name for name in TEMPLATES})


def check_digest(alg: str, digest: bytes, *, violation: bool) -> None:
    """ValueError unless ``digest`` can be a d-ng digest of ``alg``."""
    size = HASH_SIZES.get(alg)
    if size is not None and len(digest) != size:
        # Kernels before 5.18 record a violation's digest as 20 zero bytes whatever
        # the algorithm (ima_eventdigest_init_common added IMA_DIGEST_SIZE).
        if not (violation and digest == bytes(_SHA1_SIZE)):
            raise ValueError(f"{alg} digest of {len(digest)} bytes")
    elif len(digest) > _MAX_DIGEST:
        raise ValueError(f"{alg} digest of {len(digest)} bytes")


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
    if n_ng.find(b"\0") != len(n_ng) - 1:
        raise ValueError("n-ng field is not one NUL-terminated name")
    name = n_ng[:-1].decode("utf-8", "surrogateescape")
    if template == "ima-sig":
        return alg, digest, name, values[2], None
    if template == "ima-buf":
        return alg, digest, name, None, values[2]
    return alg, digest, name, None, None


def _detect_byte_order(raw: bytes, hash_size: int) -> ByteOrder:
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


def parse_binary(
    raw: bytes,
    *,
    template_hash_alg: str = "sha1",
    first_index: int = 0,
    byte_order: ByteOrder | None = None,
) -> ImaList:
    """Parse a binary list (checks: module docstring); raises ParseError only.

    ``byte_order`` None detects it; give it to parse a chunk of a list whose order a
    previous chunk established.
    """
    hash_size = TEMPLATE_HASH_SIZES.get(template_hash_alg)
    if hash_size is None:
        raise ParseError(f"IMA list: template hash {template_hash_alg!r}", code="bad_argument")
    if len(raw) > MAX_LIST_SIZE:
        raise ParseError(f"IMA list: {len(raw)} bytes exceeds {MAX_LIST_SIZE}", code="too_large")
    if not raw:
        return ImaList("binary", byte_order or "little", template_hash_alg, ())
    order = byte_order or _detect_byte_order(raw, hash_size)
    u32 = _U32[order]
    entries: list[ImaEntry] = []
    pos, end = 0, len(raw)
    while pos < end:
        index = first_index + len(entries)
        if len(entries) >= MAX_ENTRIES:
            raise fail(
                f"more than {MAX_ENTRIES} entries", index=index, offset=pos, code="too_large"
            )
        entry, pos = _read_entry(raw, pos, index, hash_size, u32)
        entries.append(entry)
    return ImaList("binary", order, template_hash_alg, tuple(entries))


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
