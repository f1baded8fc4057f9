"""One attestation round's IMA check, incremental across rounds of one boot.

The verifier keeps, per host, how many entries of the current boot's list it has
appraised and the running PCR10 after them (:class:`verifier.store.ImaProgress`).
Each round the agent sends the entries from there on (or the whole list: starting
over from entry 0 is always accepted). The chunk is parsed strictly, replayed
from the kept state, and the shortest prefix whose replay equals the *quoted*
PCR10 is accepted (the agent reads its list after quoting, so a tail beyond the
quote is normal and waits for the next round); the accepted entries are then
appraised against the group's runtime policy. A list started from 0 must begin
with a boot_aggregate that matches the quoted PCRs 0-7 or 0-9.

Progress advances only when every accepted entry passes the policy: a file that
should not have run keeps the host untrusted until it reboots, instead of
scrolling out of the next round's chunk.

A violation entry is replayed like any other (the ff..ff it extended must be in the
quoted PCR10); the policy decides whether it is a finding (``violations``: ``deny``)
or is let pass and counted in :attr:`ImaRound.violations_tolerated` (``tolerate``).

Only PCR10 is replayed and kept across rounds, so every entry of the chunk must
extend PCR10: an entry in a PCR the quote does not cover is a claim nobody
signed (``tpm.ima.pcr_not_quoted``, as ``evidence verify tpm --ima`` says), and
one in another quoted PCR cannot be followed from round to round
(``tpm.ima.pcr_unsupported``).

The verifier asks for the chunk before it sees the quote, so after a reboot it
still asks from the old boot's entry count. When the quote's resetCount shows
the reboot and the chunk does not start at entry 0, nothing in it can be
replayed (the new boot's first entries are missing): the round is not a
failure, but it verifies no IMA and keeps nothing; it says so with the warning
``tpm.ima.full_list_needed`` (never an affirmation), and the next round asks
for the whole list, because the kept progress belongs to another boot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.authenticate import AuthenticatedQuote
from verifier.evidence.tpm.ima import ImaEntry, parse_binary
from verifier.evidence.tpm.ima_policy import RuntimePolicy, appraise_ima_full
from verifier.evidence.tpm.ima_replay import (
    ImaReplayError,
    ImaReplayState,
    check_boot_aggregate,
    replay_until_quote,
    start_state,
)
from verifier.verdict import Reason

CHECK_IMA_REPLAY = "tpm.ima.replay"
CHECK_IMA_POLICY = "tpm.ima.policy"
IMA_PCR = 10


@dataclass(frozen=True, slots=True)
class ImaKept:
    """What the verifier kept from earlier rounds of this boot."""

    reset_count: int
    entry_count: int
    pcrs: Mapping[str, bytes]  # bank -> running PCR10


@dataclass(frozen=True, slots=True)
class ImaRound:
    checks_run: frozenset[str]
    reasons: tuple[Reason, ...]
    kept: ImaKept | None = None  # what to keep for the next round (set only on success)
    # Violation entries among this round's accepted ones that the policy tolerated.
    violations_tolerated: int = 0
    # Not failures, but nothing was verified: the round must not affirm IMA.
    warnings: tuple[Reason, ...] = ()


def _failed(code: str, detail: str, checks: frozenset[str] = frozenset()) -> ImaRound:
    return ImaRound(checks, (Reason(code, detail),))


def appraise_ima_round(
    *,
    entries: bytes,
    first_entry: int,
    unavailable: str,
    quote: AuthenticatedQuote,
    policy: RuntimePolicy,
    kept: ImaKept | None,
) -> ImaRound:
    """This round's IMA check (module docstring); ``kept`` is the progress of earlier rounds."""
    reset_count = quote.info.clock_info.reset_count
    rebooted_from = None
    if kept is not None and kept.reset_count != reset_count:
        rebooted_from, kept = kept, None  # a reboot: the list started over
    if first_entry == 0:
        kept = None
    quoted = {bank: {IMA_PCR: values[IMA_PCR]} for bank, values in quote.pcrs.items()
              if IMA_PCR in values}  # fmt: skip
    if not quoted:
        return _failed("tpm.ima.pcr10_not_quoted", "the quote does not cover PCR10")
    if rebooted_from is not None and first_entry != 0:
        return _restart(rebooted_from, reset_count, first_entry)
    if kept is None and first_entry != 0:
        return _failed(
            "tpm.ima.out_of_order", f"the list was sent from entry {first_entry}, expected 0"
        )
    if kept is not None and first_entry != kept.entry_count:
        detail = f"the list was sent from entry {first_entry}, expected {kept.entry_count} or 0"
        return _failed("tpm.ima.out_of_order", detail)
    if unavailable and not entries:
        return _failed("tpm.ima.log_missing", unavailable)
    try:
        parsed = parse_binary(entries, first_index=first_entry).entries if entries else ()
    except ParseError as exc:
        return _failed("tpm.ima.malformed", str(exc))
    outside = _outside_pcr10(parsed, quote, banks=quoted)
    if outside is not None:
        return ImaRound(frozenset(), (outside,))
    try:
        state = (
            start_state(quoted)
            if kept is None
            else ImaReplayState(
                kept.entry_count, {bank: {IMA_PCR: kept.pcrs[bank]} for bank in quoted}
            )
        )
        accepted_state = replay_until_quote(state, parsed, quoted)
    except (ImaReplayError, KeyError) as exc:
        code = exc.code if isinstance(exc, ImaReplayError) else "no_bank"
        return _failed(f"tpm.ima.{code}", str(exc))
    accepted = parsed[: accepted_state.count - first_entry]
    checks = frozenset({CHECK_IMA_REPLAY})
    if first_entry == 0:
        reason = _boot_aggregate(accepted, quote)
        if reason is not None:
            return ImaRound(checks, (reason,))
    appraisal = appraise_ima_full(accepted, policy)
    tolerated = appraisal.violations_tolerated
    if appraisal.reasons:
        return ImaRound(checks, appraisal.reasons, violations_tolerated=tolerated)
    pcrs = {bank: accepted_state.value(bank, IMA_PCR) for bank in quoted}
    kept_now = ImaKept(reset_count, accepted_state.count, pcrs)
    return ImaRound(checks | {CHECK_IMA_POLICY}, (), kept_now, tolerated)


def _restart(previous: ImaKept, reset_count: int, first_entry: int) -> ImaRound:
    detail = (
        f"the TPM's resetCount went from {previous.reset_count} to {reset_count} (a "
        f"reboot); the list was sent from entry {first_entry} of the new boot, which "
        f"cannot be replayed without its first entries: the next round asks for the "
        f"whole list"
    )
    return ImaRound(frozenset(), (), warnings=(Reason("tpm.ima.full_list_needed", detail),))


def _outside_pcr10(
    entries: Sequence[ImaEntry], quote: AuthenticatedQuote, *, banks: Iterable[str]
) -> Reason | None:
    """A reason if an entry extends a PCR other than PCR10 (module docstring)."""
    others = {e.pcr for e in entries} - {IMA_PCR}
    if not others:
        return None
    banks = tuple(banks)
    unquoted = {p for p in others if not any(p in quote.pcrs[bank] for bank in banks)}
    refused = unquoted or others
    first = next(e.index for e in entries if e.pcr in refused)
    pcrs = ", ".join(str(p) for p in sorted(refused))
    if unquoted:
        detail = (
            f"the IMA list extends PCR {pcrs} (first at entry {first}), which the quote "
            f"does not cover with PCR{IMA_PCR} in any bank: nothing authenticates it"
        )
        return Reason("tpm.ima.pcr_not_quoted", detail)
    detail = (
        f"the IMA list extends PCR {pcrs} (first at entry {first}); the verifier "
        f"replays IMA in PCR{IMA_PCR} only"
    )
    return Reason("tpm.ima.pcr_unsupported", detail)


def _boot_aggregate(accepted: Sequence[ImaEntry], quote: AuthenticatedQuote) -> Reason | None:
    """None if the list's first entry is a boot_aggregate matching a quoted bank."""
    if not accepted:
        return Reason("tpm.ima.boot_aggregate_missing", "the quoted list is empty")
    first = accepted[0]
    errors: list[str] = []
    for bank, values in quote.pcrs.items():
        try:
            check_boot_aggregate(first, values, bank)
        except ImaReplayError as exc:
            errors.append(f"{bank}: {exc}")
            continue
        return None
    return Reason("tpm.ima.boot_aggregate_mismatch", "; ".join(errors) or "no bank to check")
