"""Replay a chunk of IMA entries in bulk: the speed path of :mod:`.ima_replay`.

Where the C module is built (:mod:`.ima_native`), :func:`prepare`'s checks and the
extends of SHA-1/SHA-2 banks (:func:`native_run`, :func:`first_native_match`) run in
C; the functions below them are the Python path, used otherwise and as the reference.

:func:`prepare` makes checks 1 and 2 of
:func:`~verifier.evidence.tpm.ima_replay.replay_entries` for every entry of a chunk
at once (indices consecutive from the state's count; each template hash the digest
of its hashed data unless the entry is a violation), hashing with C-level loops
(``map``) instead of a Python step per entry. It returns None when any entry fails
a check, or when the entries extend more than one PCR: the caller then replays
entry by entry, which raises at the first failure exactly as before (and, for
:func:`~verifier.evidence.tpm.ima_replay.replay_until_quote`, stops at a matching
prefix before it). The measurements and running values it computes are the ones the
per-entry replay computes: ``m`` is the logged template hash in the template-hash
bank, the bank's digest of the hashed data in the others, ``ff..ff`` for a
violation; ``PCR = H(PCR || m)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter, ne
from typing import Protocol

from verifier.evidence.tpm import ima_native
from verifier.evidence.tpm.ima import ImaEntry

__all__ = [
    "Chunk",
    "NativeRun",
    "final_value",
    "first_match",
    "first_native_match",
    "measurements",
    "native_prepare",
    "native_run",
    "prepare",
    "running_values",
]


class _Hash(Protocol):
    def digest(self) -> bytes: ...


Hasher = Callable[[bytes], _Hash]

_INDEX = attrgetter("index")
_PCR = attrgetter("pcr")
_TEMPLATE = attrgetter("template_name")
_DATA = attrgetter("template_data")
_HASH = attrgetter("template_hash")


@dataclass(frozen=True, slots=True)
class Chunk:
    """Entries that passed checks 1 and 2, as the replay needs them."""

    pcr: int  # the one PCR they all extend
    hashed: Sequence[bytes]  # ImaEntry.hashed_data() of each
    hashes: Sequence[bytes]  # template hashes
    violations: tuple[int, ...]  # positions of violations (all-zero template hash)


def _digest_of(hasher: Hasher) -> Callable[[_Hash], bytes]:
    """The unbound ``digest`` of what ``hasher`` makes (for ``map``: a third faster than
    ``methodcaller("digest")``)."""
    digest: Callable[[_Hash], bytes] = type(hasher(b"")).digest
    return digest


def prepare(
    entries: Sequence[ImaEntry], *, start: int, check: Hasher, check_alg: str
) -> Chunk | None:
    """``entries`` (at least one) checked as a whole, or None to replay them one by one.

    ``check`` hashes template data with ``check_alg``, the template-hash algorithm.
    The Python path: :func:`native_prepare` is the same in C.
    """
    count = len(entries)
    if list(map(_INDEX, entries)) != list(range(start, start + count)):
        return None
    pcrs = set(map(_PCR, entries))
    if len(pcrs) != 1:
        return None
    if "ima" in map(_TEMPLATE, entries):  # the legacy template hashes a padded name
        hashed = [entry.hashed_data() for entry in entries]
    else:
        hashed = list(map(_DATA, entries))
    hashes = list(map(_HASH, entries))
    computed = list(map(_digest_of(check), map(check, hashed)))
    violations: set[int] = set()
    if computed != hashes:
        differs = list(map(ne, computed, hashes))
        at = -1
        while True:
            try:
                at = differs.index(True, at + 1)
            except ValueError:
                break
            if any(hashes[at]):  # not all zero: not a violation
                return None  # template_hash_mismatch: the per-entry replay names it
            violations.add(at)
    # A violation whose hash is also the digest of its data cannot be told apart above.
    zero = bytes(len(computed[0]))
    at = -1
    while True:
        try:
            at = hashes.index(zero, at + 1)
        except ValueError:
            break
        violations.add(at)
    return Chunk(pcrs.pop(), hashed, hashes, tuple(sorted(violations)))


def measurements(chunk: Chunk, hasher: Hasher, size: int, *, logged: bool) -> list[bytes]:
    """What each entry extends into a bank of ``size``-byte digests made by ``hasher``.

    ``logged``: the bank is the template hash's (its template hashes are extended).
    """
    if logged:
        measured = list(chunk.hashes)
    else:
        measured = list(map(_digest_of(hasher), map(hasher, chunk.hashed)))
    violation = b"\xff" * size
    for at in chunk.violations:
        measured[at] = violation
    return measured


def final_value(hasher: Hasher, value: bytes, measured: list[bytes]) -> bytes:
    """The PCR after extending ``value`` with every measurement."""
    for m in measured:
        value = hasher(value + m).digest()
    return value


def running_values(hasher: Hasher, value: bytes, measured: list[bytes]) -> list[bytes]:
    """The PCR after each measurement."""
    out: list[bytes] = []
    append = out.append
    for m in measured:
        value = hasher(value + m).digest()
        append(value)
    return out


def first_match(
    pcr: int,
    runs: Mapping[str, list[bytes]],
    values: Mapping[str, Callable[[int], bytes]],
    quoted: Mapping[str, Mapping[int, bytes]],
) -> int | None:
    """The fewest entries (at least one) after which every quoted value is replayed.

    ``runs``: each bank's running values of ``pcr``; ``values``: each bank's current
    value of any other PCR (which the chunk does not change).
    """
    targets: list[tuple[list[bytes], bytes]] = []
    for bank, pcrs in quoted.items():
        for index, value in pcrs.items():
            if index == pcr:
                targets.append((runs[bank], value))
            elif values[bank](index) != value:
                return None
    if not targets:
        return None
    (run, value), others = targets[0], targets[1:]
    at = -1
    while True:
        try:
            at = run.index(value, at + 1)
        except ValueError:
            return None
        if all(other[at] == wanted for other, wanted in others):
            return at + 1


@dataclass(frozen=True, slots=True)
class NativeRun:
    """One bank's replay of a chunk in C: its final value and where it hit the target."""

    final: bytes
    hits: list[int]  # counts of entries after which the bank's value was the target


def native_prepare(
    entries: Sequence[ImaEntry], *, start: int, check_alg: str, runs: Sequence[ima_native.Run]
) -> tuple[Chunk, list[NativeRun]] | None:
    """:func:`prepare` and a :func:`native_run` per run, in one walk in C; None where
    C cannot (the caller then prepares and replays as usual)."""
    native = ima_native.chunk(entries, start=start, template_hash_alg=check_alg, runs=runs)
    if native is None:
        return None
    pcr, hashed, hashes, violations, finished = native
    return Chunk(pcr, hashed, hashes, violations), [NativeRun(*run) for run in finished]


def native_run(
    chunk: Chunk, bank: str, value: bytes, *, logged: bool, target: bytes | None, upto: int
) -> NativeRun | None:
    """The first ``upto`` entries of ``chunk`` extended into ``value`` (the bank's
    measurements as :func:`measurements` makes them) in C; None where C cannot."""
    items = chunk.hashes if logged else chunk.hashed
    if upto != len(items):
        items = items[:upto]
    done = ima_native.extend(
        bank,
        value,
        items,
        hashed=not logged,
        violation_positions=[at for at in chunk.violations if at < upto],
        target=target,
    )
    return None if done is None else NativeRun(*done)


def first_native_match(
    pcr: int,
    runs: Mapping[str, NativeRun],
    values: Mapping[str, Callable[[int], bytes]],
    quoted: Mapping[str, Mapping[int, bytes]],
) -> int | None:
    """:func:`first_match` over native runs (made with each quoted bank's value of
    ``pcr`` as target): the fewest entries after which every quoted value is replayed."""
    hits: list[set[int]] = []
    for bank, pcrs in quoted.items():
        for index, value in pcrs.items():
            if index == pcr:
                hits.append(set(runs[bank].hits))
            elif values[bank](index) != value:
                return None
    if not hits:
        return None
    common = hits[0].intersection(*hits[1:])
    return min(common) if common else None
