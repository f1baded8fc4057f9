# Types of the C module _ima_native.c; callers use ima_native.py.
from collections.abc import Mapping

from verifier.evidence.tpm.ima import ImaEntry

def ascii_entries(
    raw: bytes,
    hash_size: int,
    first_index: int,
    little: bool,
    max_entries: int,
    entry_type: type[ImaEntry],
    /,
) -> tuple[ImaEntry, ...] | None: ...
def binary_entries(
    raw: bytes,
    hash_size: int,
    first_index: int,
    little: bool,
    max_entries: int,
    max_data: int,
    entry_type: type[ImaEntry],
    /,
) -> tuple[ImaEntry, ...] | None: ...
def chunk(
    entries: list[ImaEntry] | tuple[ImaEntry, ...],
    start: int,
    alg: str,
    entry_type: type[ImaEntry],
    runs: tuple[tuple[str, bytes, bool, bytes | None], ...] = (),
    /,
) -> (
    tuple[
        int,
        tuple[bytes, ...],
        tuple[bytes, ...],
        tuple[int, ...],
        tuple[tuple[bytes, list[int]], ...],
    ]
    | None
): ...
def extend(
    alg: str,
    value: bytes,
    items: list[bytes] | tuple[bytes, ...],
    hashed: bool,
    violations: tuple[int, ...],
    target: bytes | None,
    /,
) -> tuple[bytes, list[int]]: ...
def digest_index(digests: Mapping[str, frozenset[tuple[str, bytes]]], /) -> object | None: ...
def unallowed(
    entries: list[ImaEntry] | tuple[ImaEntry, ...], index: object, entry_type: type[ImaEntry], /
) -> list[int]: ...
