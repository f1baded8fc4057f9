"""Replay IMA entries into the PCRs they name, per bank, and check boot_aggregate.

What the kernel extends (``ima_pcr_extend``, Linux >= 5.10 crypto-agile extends):
for every allocated bank, ``PCR = H_bank(PCR || m)`` where ``m`` is the bank's
template digest, ``H_bank`` over the template data as hashed
(:meth:`~verifier.evidence.tpm.ima.ImaEntry.hashed_data`: the raw template data; for
the legacy ``ima`` template the 20-byte digest and the name zero-padded to 256
bytes), and the logged template hash is that digest for its own algorithm (SHA-1).
A violation is logged with an all-zero template hash and extends ``ff..ff`` of the
bank's size in every bank. The shared vectors' swtpm sets confirm this in their
sha1, sha256 and sha384 banks. Kernels before 5.10 extended non-SHA-1 banks with
the zero-padded SHA-1 template hash instead; that rule is not implemented.

:func:`replay_entries` checks, for each entry in order:

1. its index continues the state (``state.count``, then consecutive): an agent
   sending a chunk that overlaps or skips entries is refused (``out_of_order``);
2. unless it is a violation, ``H_alg(hashed data)`` equals the logged template hash
   (``alg`` is ``template_hash_alg``, SHA-1 for the kernel's standard lists):
   otherwise the log lies about what was extended (``template_hash_mismatch``);
3. it extends its PCR in every bank of the state.

Speed: the checks and hashes of a chunk whose entries all extend one PCR are made
in bulk (:mod:`verifier.evidence.tpm.ima_replay_bulk`: in C through
:mod:`verifier.evidence.tpm.ima_native` for the SHA-1/SHA-2 banks, else C-level
loops over the chunk; the same values); a chunk it cannot take, or one with a
failing entry, is replayed entry by entry as above, which raises at the first
failure (or, for :func:`replay_until_quote`, stops at a matching prefix before it).

**Incremental contract.** An :class:`ImaReplayState` is the running value after the
first ``count`` entries of one boot's list. :func:`replay_entries` takes such a state
and exactly the entries ``count, count+1, ...`` (as parsed with
``first_index=count``) and returns the state after them; replaying a list in chunks
gives the same state as replaying it at once. A verifier keeps the state of the
longest prefix that matched a quote (:func:`replay_until_quote` finds it, since the
agent reads the list after quoting and it may have grown) and asks only for the
entries after it; it starts again from :func:`start_state` when the TPM's
resetCount shows a reboot (the PCRs went back to zero). A state is only as good as
the quote it was matched against: never keep one that was not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Protocol

from verifier.evidence.tpm import ima_native
from verifier.evidence.tpm.ima import ImaEntry
from verifier.evidence.tpm.ima_replay_bulk import (
    Chunk,
    NativeRun,
    final_value,
    first_match,
    first_native_match,
    measurements,
    native_prepare,
    native_run,
    prepare,
    running_values,
)

__all__ = [
    "BootAggregateRule",
    "ImaReplayError",
    "ImaReplayState",
    "check_boot_aggregate",
    "replay_entries",
    "replay_ima",
    "replay_until_quote",
    "start_state",
]

BootAggregateRule = Literal["pcr0-7", "pcr0-9"]


class _Hash(Protocol):
    @property
    def digest_size(self) -> int: ...

    def digest(self) -> bytes: ...


_Hasher = Callable[[bytes], _Hash]
# TPM bank name -> hash constructor. hashlib's named constructors avoid the lookup
# hashlib.new does on every call (two hashes per entry per bank on the hot path).
_FAST: Mapping[str, _Hasher] = MappingProxyType(
    {
        "sha1": hashlib.sha1,
        "sha256": hashlib.sha256,
        "sha384": hashlib.sha384,
        "sha512": hashlib.sha512,
    }
)
# The kernel names the SM3 hash "sm3"; TPM banks and hashlib say sm3_256 / sm3.
_KERNEL_NAME = MappingProxyType({"sm3_256": "sm3"})
_BOOT_AGGREGATE = "boot_aggregate"
_MAX_PCR = 23


class ImaReplayError(ValueError):
    """The entries cannot be replayed, or do not match. ``code`` is stable."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def _hasher(bank: str) -> _Hasher:
    fast = _FAST.get(bank)
    if fast is not None:
        return fast
    name = _KERNEL_NAME.get(bank, bank)
    try:
        hashlib.new(name)
    except ValueError:
        raise ImaReplayError(f"cannot compute {bank}", code="unsupported_bank") from None
    return lambda data: hashlib.new(name, data)


@dataclass(frozen=True)
class ImaReplayState:
    """The running PCR values after the first ``count`` entries (incremental contract:
    module docstring). ``pcrs`` maps bank -> PCR index -> value; a PCR no entry has
    extended yet is absent and holds its reset value (all zero)."""

    count: int
    pcrs: Mapping[str, Mapping[int, bytes]]

    def __post_init__(self) -> None:
        # A state may come back from the store: check it and freeze a copy of it.
        if self.count < 0 or not self.pcrs:
            raise ImaReplayError(
                f"state of {self.count} entries, {len(self.pcrs)} banks", code="bad_state"
            )
        frozen: dict[str, Mapping[int, bytes]] = {}
        for bank, values in self.pcrs.items():
            size = _hasher(bank)(b"").digest_size
            if any(not 0 <= pcr <= _MAX_PCR or len(v) != size for pcr, v in values.items()):
                raise ImaReplayError(f"state has a bad {bank} PCR value", code="bad_state")
            frozen[bank] = MappingProxyType(dict(values))
        object.__setattr__(self, "pcrs", MappingProxyType(frozen))

    def value(self, bank: str, pcr: int = 10) -> bytes:
        """The running value of ``pcr`` in ``bank`` (zero if not extended yet)."""
        values = self.pcrs.get(bank)
        if values is None:
            raise KeyError(f"bank {bank} is not replayed")
        return values.get(pcr, bytes(_hasher(bank)(b"").digest_size))


def start_state(banks: Iterable[str]) -> ImaReplayState:
    """The state before the first entry of a boot, for ``banks`` (at least one)."""
    names = tuple(dict.fromkeys(banks))
    if not names:
        raise ImaReplayError("no bank to replay", code="no_bank")
    for bank in names:
        _hasher(bank)
    return ImaReplayState(0, {bank: {} for bank in names})


def _sequence(entries: Sequence[ImaEntry]) -> Sequence[ImaEntry]:
    # Callers may hand any iterable despite the annotation; the bulk path needs len().
    return entries if isinstance(entries, list | tuple) else tuple(entries)


def _getter(values: Mapping[int, bytes], size: int) -> Callable[[int], bytes]:
    return lambda pcr: values.get(pcr, bytes(size))


class _Replayer:
    """The mutable running values of one replay; states are snapshots of it."""

    def __init__(self, state: ImaReplayState, template_hash_alg: str) -> None:
        self.check = _hasher(template_hash_alg)
        self.alg = template_hash_alg
        # C replays a chunk when it can hash every bank (ima_native).
        self._native = ima_native.active() and all(
            bank in ima_native.NATIVE_BANKS for bank in state.pcrs
        )
        self.count = state.count
        self.banks = [
            (bank, hasher, hasher(b"").digest_size, dict(values))
            for bank, values in state.pcrs.items()
            for hasher in (_hasher(bank),)
        ]

    def step(self, entry: ImaEntry) -> None:
        if entry.index != self.count:
            raise ImaReplayError(
                f"entry {entry.index} where entry {self.count} was expected",
                code="out_of_order",
            )
        pcr = entry.pcr
        if entry.is_violation:
            for _bank, hasher, size, values in self.banks:
                current = values.get(pcr, bytes(size))
                values[pcr] = hasher(current + b"\xff" * size).digest()
        else:
            data = entry.hashed_data()
            if self.check(data).digest() != entry.template_hash:
                raise ImaReplayError(
                    f"entry {entry.index} ({entry.name!r}): template hash is not the "
                    f"{self.alg} of its template data",
                    code="template_hash_mismatch",
                )
            for bank, hasher, size, values in self.banks:
                measured = entry.template_hash if bank == self.alg else hasher(data).digest()
                current = values.get(pcr, bytes(size))
                values[pcr] = hasher(current + measured).digest()
        self.count += 1

    def extend(self, entries: Sequence[ImaEntry]) -> None:
        """Replay every entry: in bulk when the chunk allows it, else one by one."""
        entries = _sequence(entries)
        native = self._native_prepare(entries, None)
        if native is not None:  # checked and replayed in one walk in C
            walked, runs = native
            for (_b, _h, _s, values), run in zip(self.banks, runs, strict=True):
                values[walked.pcr] = run.final
            self.count += len(entries)
            return
        chunk = self._prepare(entries)
        if chunk is None:
            for entry in entries:
                self.step(entry)
            return
        if self._native:
            for bank, _h, size, values in self.banks:
                start = values.get(chunk.pcr, bytes(size))
                values[chunk.pcr] = self._run(chunk, bank, start, None, len(entries)).final
            self.count += len(entries)
            return
        for bank, hasher, size, values in self.banks:
            measured = measurements(chunk, hasher, size, logged=bank == self.alg)
            values[chunk.pcr] = final_value(hasher, values.get(chunk.pcr, bytes(size)), measured)
        self.count += len(entries)

    def extend_until(
        self, entries: Sequence[ImaEntry], quoted: Mapping[str, Mapping[int, bytes]]
    ) -> bool:
        """Replay up to the first entry after which ``quoted`` matches (True), else all."""
        entries = _sequence(entries)
        native_ok = self._native and _comparable(quoted)
        native = self._native_prepare(entries, quoted) if native_ok else None
        if native is not None:  # checked and replayed in one walk in C
            return self._native_until(*native, quoted)
        chunk = self._prepare(entries)
        if chunk is None:
            for entry in entries:
                self.step(entry)
                if self.matches(quoted):
                    return True
            return False
        if native_ok:
            pcr, count = chunk.pcr, len(entries)
            native_runs = [
                self._run(
                    chunk,
                    bank,
                    values.get(pcr, bytes(size)),
                    _target(quoted, bank, pcr, size),
                    count,
                )
                for bank, _h, size, values in self.banks
            ]
            return self._native_until(chunk, native_runs, quoted)
        pcr = chunk.pcr
        runs = {
            bank: running_values(
                hasher,
                values.get(pcr, bytes(size)),
                measurements(chunk, hasher, size, logged=bank == self.alg),
            )
            for bank, hasher, size, values in self.banks
        }
        current = {bank: _getter(values, size) for bank, _h, size, values in self.banks}
        done = first_match(pcr, runs, current, quoted)
        taken = len(entries) if done is None else done
        for bank, _h, _s, values in self.banks:
            values[pcr] = runs[bank][taken - 1]
        self.count += taken
        return done is not None

    def _prepare(self, entries: Sequence[ImaEntry]) -> Chunk | None:
        """The chunk checked as a whole, or None to replay it entry by entry. When every
        bank is native, C has already declined it (_native_prepare): Python checks it;
        otherwise C checks the template hashes (no banks) where it can."""
        if not entries:
            return None
        if not self._native:
            native = native_prepare(entries, start=self.count, check_alg=self.alg, runs=())
            if native is not None:
                return native[0]
        return prepare(entries, start=self.count, check=self.check, check_alg=self.alg)

    def _native_prepare(
        self, entries: Sequence[ImaEntry], quoted: Mapping[str, Mapping[int, bytes]] | None
    ) -> tuple[Chunk, list[NativeRun]] | None:
        """The chunk checked and every bank replayed over it (looking for ``quoted``)
        in one walk in C; None where C cannot, for the usual path to take it."""
        if not self._native or not entries:
            return None
        pcr = entries[0].pcr  # C checks that every entry extends it
        if type(pcr) is not int:
            return None
        runs: list[ima_native.Run] = []
        for bank, _h, size, values in self.banks:
            start = values.get(pcr, bytes(size))
            if type(start) is not bytes or len(start) != size:
                return None
            runs.append((bank, start, bank == self.alg, _target(quoted, bank, pcr, size)))
        return native_prepare(entries, start=self.count, check_alg=self.alg, runs=runs)

    def _native_until(
        self, chunk: Chunk, runs: Sequence[NativeRun], quoted: Mapping[str, Mapping[int, bytes]]
    ) -> bool:
        """extend_until's bulk step from C's runs (one per bank, in bank order)."""
        pcr, count = chunk.pcr, len(chunk.hashes)
        by_bank = {bank: run for (bank, _h, _s, _v), run in zip(self.banks, runs, strict=True)}
        current = {bank: _getter(values, size) for bank, _h, size, values in self.banks}
        done = first_native_match(pcr, by_bank, current, quoted)
        for bank, _h, size, values in self.banks:
            final = by_bank[bank].final
            if done is not None and done != count:  # the bank's value after `done` entries
                target = _target(quoted, bank, pcr, size)
                if target is not None and done in by_bank[bank].hits:
                    final = target  # a hit at `done`: the value there is the target
                else:
                    start = values.get(pcr, bytes(size))
                    final = self._run(chunk, bank, start, None, done).final
            values[pcr] = final
        self.count += count if done is None else done
        return done is not None

    def _run(
        self, chunk: Chunk, bank: str, start: bytes, target: bytes | None, upto: int
    ) -> NativeRun:
        run = native_run(chunk, bank, start, logged=bank == self.alg, target=target, upto=upto)
        if run is None:  # self._native says every bank is native
            raise RuntimeError(f"IMA replay: the C path cannot hash {bank}")
        return run

    def matches(self, quoted: Mapping[str, Mapping[int, bytes]]) -> bool:
        running = {bank: (size, values) for bank, _h, size, values in self.banks}
        for bank, pcrs in quoted.items():
            size, values = running[bank]
            if any(values.get(pcr, bytes(size)) != value for pcr, value in pcrs.items()):
                return False
        return True

    def state(self) -> ImaReplayState:
        return ImaReplayState(self.count, {bank: values for bank, _h, _s, values in self.banks})


def _comparable(quoted: Mapping[str, Mapping[int, bytes]]) -> bool:
    """Whether C compares every quoted value as Python's ``==`` would: bytes and
    bytearrays compare by their bytes; anything else (a memoryview of another format,
    a subclass with its own ``__eq__``) takes the Python path."""
    return all(type(v) in (bytes, bytearray) for values in quoted.values() for v in values.values())


def _target(
    quoted: Mapping[str, Mapping[int, bytes]] | None, bank: str, pcr: int, size: int
) -> bytes | None:
    """The quoted value C looks for (:func:`_comparable` values only): bytes of the
    bank's size; None, which never matches, for a value of another size."""
    value = None if quoted is None else quoted.get(bank, {}).get(pcr)
    if value is not None and len(value) == size:
        return bytes(value)
    return None


def replay_entries(
    state: ImaReplayState, entries: Sequence[ImaEntry], *, template_hash_alg: str = "sha1"
) -> ImaReplayState:
    """Continue ``state`` over ``entries`` (checks: module docstring)."""
    replayer = _Replayer(state, template_hash_alg)
    replayer.extend(entries)
    return replayer.state()


def replay_ima(
    entries: Sequence[ImaEntry], *, banks: Iterable[str], template_hash_alg: str = "sha1"
) -> ImaReplayState:
    """Replay a whole list from the start of the boot."""
    return replay_entries(start_state(banks), entries, template_hash_alg=template_hash_alg)


def replay_until_quote(
    state: ImaReplayState,
    entries: Sequence[ImaEntry],
    quoted: Mapping[str, Mapping[int, bytes]],
    *,
    template_hash_alg: str = "sha1",
) -> ImaReplayState:
    """The state after the shortest prefix of ``entries`` whose replay equals ``quoted``.

    ``quoted`` holds, per bank, the quoted values of the PCRs the list extends
    (normally ``{bank: {10: value}}``). The agent reads its list after the quote, so
    entries past the match are expected; they are not lost, only not yet accepted:
    the returned ``count`` says where the next chunk must start. Raises
    ImaReplayError (``pcr_mismatch``) when no prefix matches.
    """
    missing = set(quoted) - set(state.pcrs)
    if missing:
        raise ImaReplayError(f"banks {sorted(missing)} are not replayed", code="no_bank")
    replayer = _Replayer(state, template_hash_alg)
    if replayer.matches(quoted):
        return state
    if replayer.extend_until(entries, quoted):
        return replayer.state()
    end = replayer.state()
    detail = ", ".join(
        f"{bank} PCR{pcr}: replayed {end.value(bank, pcr).hex()} quoted {value.hex()}"
        for bank, pcrs in quoted.items()
        for pcr, value in pcrs.items()
    )
    raise ImaReplayError(
        f"no prefix of entries {state.count}..{end.count - 1} matches the quote ({detail})",
        code="pcr_mismatch",
    )


def check_boot_aggregate(
    entry: ImaEntry, pcrs: Mapping[int, bytes], bank: str
) -> BootAggregateRule:
    """Which rule the list's boot_aggregate follows, over ``bank``'s quoted PCR values.

    Checks, in order: ``entry`` is entry 0, named ``boot_aggregate``, not a violation;
    its digest algorithm is ``bank`` (the kernel uses the bank of its IMA hash, else
    SHA-1); its digest is not all zero (the kernel found no TPM, so nothing binds the
    list to the boot); it equals ``H(PCR0 || ... || PCR7)`` (before Linux 5.8, and
    always for SHA-1) or ``H(PCR0 || ... || PCR9)`` (5.8 and later, non-SHA-1 banks).
    Raises ImaReplayError naming the failed check.
    """
    if entry.index != 0 or entry.name != _BOOT_AGGREGATE or entry.is_violation:
        raise ImaReplayError(
            f"entry {entry.index} ({entry.name!r}) is not the list's boot_aggregate",
            code="boot_aggregate_missing",
        )
    if entry.digest_alg != _KERNEL_NAME.get(bank, bank) or entry.digest is None:
        raise ImaReplayError(
            f"boot_aggregate is {entry.digest_alg}, not over the {bank} bank",
            code="boot_aggregate_bank",
        )
    if entry.digest.count(0) == len(entry.digest):
        raise ImaReplayError(
            "boot_aggregate is all zero: the kernel had no TPM when IMA started",
            code="boot_aggregate_no_tpm",
        )
    hasher = _hasher(bank)
    rules: list[tuple[BootAggregateRule, int]] = [("pcr0-7", 8)]
    # Linux 5.8 added PCRs 8-9 only for non-SHA-1 banks, to keep SHA-1 values stable.
    if bank != "sha1":
        rules.append(("pcr0-9", 10))
    for rule, count in rules:
        if any(i not in pcrs for i in range(count)):
            continue
        if hasher(b"".join(pcrs[i] for i in range(count))).digest() == entry.digest:
            return rule
    needed = ", ".join(r for r, n in rules if all(i in pcrs for i in range(n)))
    raise ImaReplayError(
        f"boot_aggregate {entry.digest.hex()} matches no rule over the quoted {bank} PCRs "
        f"(tried: {needed or 'none, PCRs 0-7 missing'})",
        code="boot_aggregate_mismatch",
    )
