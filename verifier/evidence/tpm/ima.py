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

:mod:`verifier.evidence.tpm.ima_binary` reads the entries, most of them in bulk (its
docstring says how the bulk path keeps to these checks); parsers build entries with
:data:`new_entry`, which skips the frozen dataclass's slow ``__init__``.

Nothing here is authenticated: an entry is a claim until its replay matches a quote
(:mod:`verifier.evidence.tpm.ima_replay`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, cast

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
    "new_entry",
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
# HASH_MAX_DIGESTSIZE: SHA-512 and friends.
_MAX_DIGEST = 64

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

ByteOrder = Literal["little", "big"]


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
        return not any(self.template_hash)

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


class _EntrySlots:
    """An ImaEntry's slots, filled without the frozen dataclass ``__init__``.

    That ``__init__`` sets each of the eleven fields with ``object.__setattr__``, which
    costs more than the rest of parsing an entry. This class has the same slots on the
    same base, so an instance becomes an ImaEntry by assigning ``__class__`` at the
    end of ``__init__``: callers only ever see ordinary, frozen ImaEntry objects (the
    assignment raises TypeError if the two layouts ever differ).
    """

    __slots__ = (
        "buffer",
        "digest",
        "digest_alg",
        "index",
        "name",
        "offset",
        "pcr",
        "signature",
        "template_data",
        "template_hash",
        "template_name",
    )

    def __init__(  # noqa: PLR0917 - the fields of ImaEntry, in order
        self,
        index: int,
        pcr: int,
        template_hash: bytes,
        template_name: str,
        template_data: bytes,
        digest_alg: str | None,
        digest: bytes | None,
        name: str | None,
        signature: bytes | None,
        buffer: bytes | None,
        offset: int,
    ) -> None:
        self.index = index
        self.pcr = pcr
        self.template_hash = template_hash
        self.template_name = template_name
        self.template_data = template_data
        self.digest_alg = digest_alg
        self.digest = digest
        self.name = name
        self.signature = signature
        self.buffer = buffer
        self.offset = offset
        self.__class__ = ImaEntry  # type: ignore[assignment]  # noqa: PLE0237 - see the docstring


# CPython lays slots out in sorted order, so the same names make the same layout.
if sorted(_EntrySlots.__slots__) != sorted(ImaEntry.__slots__):  # pragma: no cover
    raise ImportError("ima._EntrySlots must have ImaEntry's fields")

# ImaEntry(index, pcr, template_hash, template_name, template_data, digest_alg, digest,
# name, signature, buffer, offset), all eleven positional: what parsers build with.
new_entry = cast(
    "Callable[[int, int, bytes, str, bytes, str | None, bytes | None, str | None, "
    "bytes | None, bytes | None, int], ImaEntry]",
    _EntrySlots,
)


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
    # The readers build on this module's types: imported here, not at the top.
    from verifier.evidence.tpm import ima_binary, ima_native  # noqa: PLC0415

    hash_size = TEMPLATE_HASH_SIZES.get(template_hash_alg)
    if hash_size is None:
        raise ParseError(f"IMA list: template hash {template_hash_alg!r}", code="bad_argument")
    # bytes first: a bytearray or memoryview would give its type to every field, and
    # the len() of a memoryview of wider items counts items, not bytes.
    raw = bytes(raw)
    if len(raw) > MAX_LIST_SIZE:
        raise ParseError(f"IMA list: {len(raw)} bytes exceeds {MAX_LIST_SIZE}", code="too_large")
    if not raw:
        return ImaList("binary", byte_order or "little", template_hash_alg, ())
    order = byte_order or ima_binary.detect_byte_order(raw, hash_size)
    native = ima_native.binary_entries(
        raw,
        hash_size=hash_size,
        first_index=first_index,
        byte_order=order,
        max_entries=MAX_ENTRIES,
        max_data=MAX_TEMPLATE_DATA,
    )
    if native is not None:  # every entry well formed and of a common form (ima_native)
        return ImaList("binary", order, template_hash_alg, native)
    entries = ima_binary.read_entries(
        raw, hash_size=hash_size, byte_order=order, first_index=first_index, limit=MAX_ENTRIES
    )
    return ImaList("binary", order, template_hash_alg, tuple(entries))
