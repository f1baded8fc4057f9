"""What every TPM structure parser shares: size bounds, algorithm tables, framing.

The structures are untrusted bytes from an agent. Each parser bounds its input
(:func:`as_bytes`) before any byte reaches the TSS; structures unmarshalled with
tpm2-pytss (the TSS reference marshalling code) go through :func:`unmarshal_exact`,
which rejects trailing bytes and non-canonical encodings (the value must re-marshal
to exactly the bytes received, so that what we read is exactly what was signed or
hashed); :func:`read_field` turns any failure reading a pytss object into
:class:`~verifier.evidence.errors.ParseError`. :func:`slot_setters` serves the
builders of the per-quote dataclasses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

from verifier.evidence.errors import ParseError

__all__ = [
    "HASH_ALGS",
    "HASH_IDS",
    "HASH_SIZES",
    "MAX_ATTEST_SIZE",
    "MAX_PUBLIC_SIZE",
    "MAX_SIGNATURE_SIZE",
    "as_bytes",
    "hash_name",
    "read_field",
    "slot_setters",
    "unmarshal_exact",
]

# Size bounds, checked before any byte reaches the TSS. The largest legal quote
# (16 banks selected, 64-byte names, extraData and digest) is under 400 bytes; an
# RSA-4096 TPMT_SIGNATURE is 518 bytes; an RSA-4096 TPMT_PUBLIC with a SHA-512
# policy is under 700 bytes. Anything bigger is not evidence we can use.
MAX_ATTEST_SIZE = 1024
MAX_SIGNATURE_SIZE = 1024
MAX_PUBLIC_SIZE = 2048

# TPM_ALG_ID -> hashlib name, for the hashes this verifier can recompute.
HASH_ALGS = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}
HASH_IDS = {name: alg_id for alg_id, name in HASH_ALGS.items()}
HASH_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

_T = TypeVar("_T")


def slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Callable[[Any, Any], None], ...]:
    """The slot setters of a frozen slots dataclass, for a builder on the per-quote path.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``;
    setting the slots directly takes half the time. The builders must set every
    field and the class must have no ``__post_init__``: both are checked here, at
    import, so that a field added later cannot be left unset.
    """
    if tuple(f.name for f in fields(cls)) != names or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: the fast builder no longer matches its fields")
    return tuple(cls.__dict__[name].__set__ for name in names)


def as_bytes(data: bytes, *, what: str, limit: int) -> bytes:
    if type(data) is bytes:  # the common case, without the copy or the isinstance
        raw = data
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
    if len(raw) > limit:
        raise ParseError(f"{what}: {len(raw)} bytes exceeds the {limit}-byte bound")
    return raw


def unmarshal_exact(cls: Any, raw: bytes, *, what: str) -> Any:
    """Unmarshal exactly ``raw`` into a pytss ``cls`` and prove the encoding canonical."""
    try:
        obj, offset = cls.unmarshal(raw)
    # The TSS is a C library behind cffi: any failure on untrusted bytes, whatever
    # its Python type, means "does not parse", never a crash of the verifier.
    except Exception as exc:
        raise ParseError(f"{what}: cannot unmarshal ({exc})") from exc
    if offset != len(raw):
        raise ParseError(f"{what}: {len(raw) - offset} trailing bytes")
    try:
        canonical = bytes(obj.marshal())
    except Exception as exc:
        raise ParseError(f"{what}: cannot re-marshal ({exc})") from exc
    if canonical != raw:
        # e.g. bytes after sizeofSelect or a union member the TSS ignores: what we
        # would read is not what the TPM signed, so refuse it.
        raise ParseError(f"{what}: non-canonical encoding")
    return obj


def read_field(what: str, getter: Callable[[], _T]) -> _T:
    """Read a field off a pytss object, turning any error into a ParseError."""
    try:
        return getter()
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"{what}: {exc}") from exc


def hash_name(alg_id: int, *, what: str) -> str:
    try:
        return HASH_ALGS[alg_id]
    except KeyError:
        raise ParseError(f"{what}: unsupported hash algorithm 0x{alg_id:04x}") from None
