"""One round of continuous attestation: evidence for a challenge → a verdict.

Order: the challenge is redeemed (single use, not expired, this host's); the
evidence is converted; the quote is authenticated against the enrolled AK and
the challenge's nonce; only then are the quoted PCRs appraised against the
host group's reference values, the boot log and IMA list replayed against the
quote, and the evidence bound to the quote (GPU reports, the SEV-SNP report)
checked with nonces derived from its exact bytes. A boot log that replays is
always run through the event checks (event_findings.py), with or without a
measured-boot reference, and then, if the group has one, appraised against it.

Every failure is a contraindicated verdict with a named reason. What is neither
a failure nor verified (a vendor quirk no reference has decided on; an IMA
chunk of a new boot that cannot be replayed) makes the verdict a warning: the
host is not affirmed, and nothing unverified is accepted. Nothing here returns
a bool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from verifier.challenges import IssuedChallenge
from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.appraise import ReferencePcrs, appraise_pcrs
from verifier.evidence.tpm.authenticate import authenticate_quote
from verifier.evidence.tpm.boot_log_check import check_boot_log
from verifier.evidence.tpm.boot_reference import BootReference
from verifier.evidence.tpm.event_findings import appraise_events, appraise_reference
from verifier.evidence.tpm.ima_policy import RuntimePolicy
from verifier.evidence.tpm.ima_round import ImaKept, appraise_ima_round
from verifier.evidence.tpm.parse import ClockInfo, parse_tpm2b_public
from verifier.store import ClockState, HostRecord, ReferenceSet
from verifier.verdict import Reason, Tier, Verdict, VerificationError
from weightgate.v1 import attestation_pb2

DIGEST_SIZES: Mapping[str, int] = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    clock: ClockState | None  # set only when the quote authenticated
    boot_event: str | None
    ima_kept: ImaKept | None = None  # IMA progress to keep for the next round


class BoundFindings(Protocol):
    """What a check bound to the quote found: the checks it ran and its reasons."""

    @property
    def checks_run(self) -> frozenset[str]: ...

    @property
    def reasons(self) -> tuple[Reason, ...]: ...


# A check of evidence bound to this round's quote (GPU reports, the SEV-SNP report),
# given the authenticated quote's exact TPMS_ATTEST bytes, from which its expected
# nonce or REPORT_DATA is derived (weightgate.gpu_nonce, weightgate.cvm_binding).
QuoteBoundCheck = Callable[[bytes], BoundFindings]


class MalformedEvidenceError(Exception):
    pass


def _fail(code: str, detail: str, checks: frozenset[str] = frozenset()) -> Outcome:
    return Outcome(Verdict.contraindicated((Reason(code, detail),), checks), None, None)


def reported_pcrs(quote: attestation_pb2.TpmQuote) -> dict[str, dict[int, bytes]]:
    """PCR values as the agent reported them; shapes checked, values not trusted."""
    banks: dict[str, dict[int, bytes]] = {}
    for bank in quote.pcrs:
        size = DIGEST_SIZES.get(bank.hash_algorithm)
        if size is None:
            raise MalformedEvidenceError(f"unknown PCR bank {bank.hash_algorithm!r}")
        if bank.hash_algorithm in banks:
            raise MalformedEvidenceError(f"PCR bank {bank.hash_algorithm} reported twice")
        for index, value in bank.values.items():
            if index > 23 or len(value) != size:
                raise MalformedEvidenceError(
                    f"{bank.hash_algorithm} PCR{index}: bad index or length"
                )
        banks[bank.hash_algorithm] = dict(bank.values)
    return banks


def challenge_selection(
    configured: Mapping[str, tuple[int, ...]], reference: ReferenceSet | None
) -> dict[str, tuple[int, ...]]:
    """What to ask for: the configured selection plus everything the reference needs."""
    selection = {bank: set(pcrs) for bank, pcrs in configured.items()}
    if reference is not None:
        for bank, values in reference.pcrs.items():
            selection.setdefault(bank, set()).update(values)
    return {bank: tuple(sorted(pcrs)) for bank, pcrs in sorted(selection.items())}


def evaluate(
    *,
    host: HostRecord,
    challenge: IssuedChallenge,
    evidence: attestation_pb2.Evidence,
    reference: ReferenceSet | None,
    consumed_qualifying_data: tuple[bytes, ...],
    allow_sha1_signatures: bool,
    boot_reference: BootReference | None = None,
    ima_policy: RuntimePolicy | None = None,
    ima_kept: ImaKept | None = None,
    bound_checks: Sequence[QuoteBoundCheck] = (),
) -> Outcome:
    """Verify the TPM evidence answering `challenge`; see the module docstring."""
    if host.ak_public is None:
        return _fail("attestation.not_enrolled", "host has no enrolled attestation key")
    if not evidence.HasField("tpm"):
        return _fail("tpm.quote.missing", "the challenge asked for a TPM quote")
    if reference is None:
        # No reference means nothing to compare with: never "accept all".
        return _fail("tpm.reference.missing", f"no reference values for group {host.group!r}")
    try:
        pcrs = reported_pcrs(evidence.tpm)
    except MalformedEvidenceError as exc:
        return _fail("tpm.quote.malformed", str(exc))
    try:
        ak = parse_tpm2b_public(host.ak_public)
    except ParseError as exc:  # stored at enrollment after parsing; cannot happen unless corrupted
        return _fail("attestation.not_enrolled", f"stored AK unreadable: {exc}")
    reference_pcrs = ReferencePcrs(reference.pcrs)
    previous = host.last_clock
    try:
        quote = authenticate_quote(
            attest=evidence.tpm.attest,
            signature=evidence.tpm.signature,
            ak=ak,
            expected_qualifying_data=challenge.tpm_qualifying_data,
            required_pcrs=reference_pcrs.required(),
            reported_pcrs=pcrs,
            previous_clock=None
            if previous is None
            else ClockInfo(
                clock=previous.clock,
                reset_count=previous.reset_count,
                restart_count=previous.restart_count,
                safe=True,
            ),
            consumed_qualifying_data=consumed_qualifying_data,
            allow_sha1_signatures=allow_sha1_signatures,
        )
    except VerificationError as exc:
        return Outcome(exc.to_verdict(), None, None)
    clock = quote.info.clock_info
    verdict = appraise_pcrs(quote, reference_pcrs)
    warnings: list[Reason] = []
    has_log = evidence.HasField("boot_log") and bool(evidence.boot_log.event_log)
    if has_log:
        boot_log = check_boot_log(evidence.boot_log.event_log, quote)
        verdict = _combined(verdict, boot_log.checks_run, boot_log.reasons)
        if boot_log.passed:
            # Replay binds digests, not types or data: every replayed log is checked.
            events = appraise_events(boot_log, boot_reference)
            verdict = _combined(verdict, events.checks_run, events.reasons)
            warnings += events.warnings
            if boot_reference is not None:
                verdict = _combined(verdict, *appraise_reference(boot_log, boot_reference, events))
    elif boot_reference is not None:
        why = evidence.boot_log.unavailable or "the agent sent none"
        missing = Reason("tpm.boot.log_missing", f"the group has a boot reference; {why}")
        verdict = _combined(verdict, frozenset(), (missing,))
    kept: ImaKept | None = None
    if ima_policy is not None:
        ima = evidence.ima
        ima_round = appraise_ima_round(
            entries=ima.entries,
            first_entry=ima.first_entry,
            unavailable=ima.unavailable
            or ("" if evidence.HasField("ima") else "the agent sent no IMA list"),
            quote=quote,
            policy=ima_policy,
            kept=ima_kept,
        )
        verdict = _combined(verdict, ima_round.checks_run, ima_round.reasons)
        warnings += ima_round.warnings
        kept = ima_round.kept
    for check in bound_checks:
        # Only now: their nonces bind to quote bytes the AK is proven to have signed.
        found = check(evidence.tpm.attest)
        verdict = _combined(verdict, found.checks_run, found.reasons)
    return Outcome(
        _with_warnings(verdict, warnings),
        ClockState(clock.clock, clock.reset_count, clock.restart_count),
        quote.boot_event,
        kept,
    )


def _combined(verdict: Verdict, checks_run: frozenset[str], reasons: tuple[Reason, ...]) -> Verdict:
    """The verdict so far combined with another finding on the same quote (boot log,
    boot reference, IMA): any reason makes it contraindicated.

    A log that was sent must replay: a host that sends a log which does not match
    its quote is lying about its boot, even if its PCRs match the reference.
    """
    checks = verdict.checks_run | checks_run
    if reasons or not verdict.affirms:
        return Verdict.contraindicated((*verdict.reasons, *reasons), checks)
    return Verdict.affirming(checks)


def _with_warnings(verdict: Verdict, warnings: Sequence[Reason]) -> Verdict:
    """The round's verdict once the findings that only withhold affirmation are in.

    Warnings never turn a rejection into less; they are listed after its reasons
    so that the record explains everything the round found.
    """
    if not warnings:
        return verdict
    if verdict.affirms:
        return Verdict(Tier.WARNING, tuple(warnings), verdict.checks_run)
    return Verdict(verdict.tier, (*verdict.reasons, *warnings), verdict.checks_run)
