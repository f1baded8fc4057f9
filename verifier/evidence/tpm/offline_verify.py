"""``weightgate evidence verify tpm`` as a library: one quote set in, one report out.

The verifier's own checks, in its order, on files instead of an agent stream; every
stage after the quote needs an authenticated quote, and the event-log policy needs
a log that replayed (only replayed events may be interpreted). Stages, named as the
test vectors' ``failing_stage``:

1. ``quote``: :func:`authenticate_quote` (parse, AK + signature, nonce, PCR
   selection, PCR digest against the given PCR values, clock). Without PCR values
   the digest cannot be checked: a warning, not an affirmation;
2. ``eventlog-replay`` (with a log): the verifier's :func:`check_boot_log` against
   the quoted PCRs, then every other replayed PCR against the given values;
3. ``eventlog-policy``: :func:`check_events` (event data against digests, structure)
   in every quoted bank the log replayed. With a measured-boot reference
   (``--boot-reference``), the facts read from the log are appraised against it
   exactly as the verifier does (:func:`appraise_boot_log`), and it decides which
   vendor quirks and whether a SHA-1-only log are permitted. Without one, named
   vendor quirks are warnings and a SHA-1-only log is refused (only a reference
   may allow it);
4. ``ima-replay`` and ``ima-policy`` (with an IMA list, and a runtime policy):
   :func:`~verifier.evidence.tpm.offline_ima.ima_stages`, the whole list against
   the quoted PCR10, boot_aggregate, then the policy;
5. ``reference`` (with a reference): :func:`appraise_pcrs`.

An AK given as a PEM key has unknown TPM attributes: the result is at best a
warning (``tpm.ak.attributes_unknown``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from verifier.evidence.errors import ParseError
from verifier.evidence.report import EvidenceReport, ReportBuilder
from verifier.evidence.tpm.akfile import LoadedAk
from verifier.evidence.tpm.appraise import CHECK_PCR_REFERENCE, ReferencePcrs, appraise_pcrs
from verifier.evidence.tpm.authenticate import (
    CHECK_CLOCK,
    CHECK_NONCE,
    CHECK_PARSE,
    CHECK_PCR_DIGEST,
    CHECK_PCR_SELECTION,
    CHECK_SIGNATURE,
    AuthenticatedQuote,
    authenticate_quote,
)
from verifier.evidence.tpm.boot_appraisal import CHECK_BOOT_REFERENCE
from verifier.evidence.tpm.boot_log_check import check_boot_log
from verifier.evidence.tpm.boot_reference import BootReference
from verifier.evidence.tpm.describe import public_fields, quote_fields
from verifier.evidence.tpm.event_findings import (
    CHECK_EVENTS,
    appraise_events,
    appraise_reference,
    checked_banks,
)
from verifier.evidence.tpm.ima_policy import RuntimePolicy
from verifier.evidence.tpm.offline_ima import STAGE_IMA_POLICY, STAGE_IMA_REPLAY, ima_stages
from verifier.evidence.tpm.offline_replay import (
    CHECK_REPLAY,
    STAGE_REPLAY,
    bank_reasons,
    banks_claims,
    log_claims,
    replay_banks,
)
from verifier.evidence.tpm.parse import parse_quote_attest
from verifier.verdict import Reason, VerificationError

__all__ = ["STAGES", "TpmEvidence", "verify_tpm_offline"]

STAGE_QUOTE = "quote"
STAGE_POLICY = "eventlog-policy"
STAGE_REFERENCE = "reference"
STAGES = (
    STAGE_QUOTE,
    STAGE_REPLAY,
    STAGE_POLICY,
    STAGE_IMA_REPLAY,
    STAGE_IMA_POLICY,
    STAGE_REFERENCE,
)
_QUOTE_CHECKS = (
    CHECK_PARSE,
    CHECK_SIGNATURE,
    CHECK_NONCE,
    CHECK_PCR_SELECTION,
    CHECK_PCR_DIGEST,
    CHECK_CLOCK,
)
CHECK_AK_ATTRIBUTES = "tpm.ak.attributes"


@dataclass(frozen=True, slots=True)
class TpmEvidence:
    """Everything ``evidence verify tpm`` was given, read and parsed where trusted.

    ``pcrs`` are the values read from the TPM at quote time (PCRS.json); a log, an
    IMA list or a reference needs them, because the quote carries only their digest.
    ``ima_log`` is an IMA list (binary or ASCII, as read); ``ima_policy`` needs it.
    """

    ak: LoadedAk
    attest: bytes
    signature: bytes
    nonce: bytes
    pcrs: Mapping[str, Mapping[int, bytes]] | None = None
    event_log: bytes | None = None
    reference: ReferencePcrs | None = None
    boot_reference: BootReference | None = None
    allow_sha1_signatures: bool = False
    ima_log: bytes | None = None
    ima_policy: RuntimePolicy | None = None

    def __post_init__(self) -> None:
        needs_pcrs = (self.event_log, self.ima_log, self.reference)
        if self.pcrs is None and any(x is not None for x in needs_pcrs):
            raise ValueError("an event log, IMA list or reference needs the PCR values (pcrs)")
        if self.boot_reference is not None and self.event_log is None:
            raise ValueError("a measured-boot reference needs the event log (event_log)")
        if self.ima_policy is not None and self.ima_log is None:
            raise ValueError("an IMA runtime policy needs the IMA list (ima_log)")


def verify_tpm_offline(evidence: TpmEvidence) -> EvidenceReport:
    """Run every stage that can run (module docstring) and report all of them."""
    run = ReportBuilder()
    run.claims["ak"] = {
        "format": evidence.ak.source_format,
        **public_fields(evidence.ak.public, attributes_known=evidence.ak.attributes_known),
    }
    if not evidence.ak.attributes_known:
        why = "a PEM key carries no TPM attributes: restricted, fixedTPM, nameAlg assumed"
        run.skip((CHECK_AK_ATTRIBUTES,), STAGE_QUOTE, why)
        run.warnings.append(Reason("tpm.ak.attributes_unknown", why))
    quote = _quote_stage(evidence, run)

    if evidence.event_log is None:
        run.skip((CHECK_REPLAY,), STAGE_REPLAY, "no --eventlog")
        run.skip(_policy_checks(evidence), STAGE_POLICY, "no --eventlog")
    elif quote is None:
        why = "the quote was not authenticated"
        run.skip((CHECK_REPLAY,), STAGE_REPLAY, why)
        run.skip(_policy_checks(evidence), STAGE_POLICY, why)
    else:
        _eventlog_stages(evidence, evidence.event_log, quote, run)

    ima_stages(evidence.ima_log, evidence.ima_policy, quote, evidence.pcrs or {}, run)

    if evidence.reference is None:
        run.skip((CHECK_PCR_REFERENCE,), STAGE_REFERENCE, "no --reference")
    elif quote is None:
        run.skip((CHECK_PCR_REFERENCE,), STAGE_REFERENCE, "the quote was not authenticated")
    else:
        appraisal = appraise_pcrs(quote, evidence.reference)
        run.check(CHECK_PCR_REFERENCE, STAGE_REFERENCE, list(appraisal.reasons))

    return run.build("tpm")


def _quote_stage(evidence: TpmEvidence, run: ReportBuilder) -> AuthenticatedQuote | None:
    required: Mapping[str, tuple[int, ...] | frozenset[int]] = {}
    try:
        info = parse_quote_attest(evidence.attest)
        run.claims["quote"] = {**quote_fields(info), "authenticated": False}
        # Offline there is no policy saying what must be quoted: the reference's PCRs
        # if there is one (as the verifier does), else what the quote selected.
        required = {s.hash_algorithm: s.pcrs for s in info.pcr_selection}
    except ParseError:
        pass  # authenticate_quote reports it, with the verifier's code
    if evidence.reference is not None:
        required = evidence.reference.required()
    try:
        quote = authenticate_quote(
            attest=evidence.attest,
            signature=evidence.signature,
            ak=evidence.ak.public,
            expected_qualifying_data=evidence.nonce,
            required_pcrs=required,
            reported_pcrs=evidence.pcrs or {},
            previous_clock=None,  # offline: one quote, nothing to compare the clock with
            allow_sha1_signatures=evidence.allow_sha1_signatures,
        )
    except VerificationError as exc:
        unchecked = evidence.pcrs is None and exc.reason.code == "tpm.quote.pcr_values_missing"
        failed_at = next(name for name in _QUOTE_CHECKS if name not in exc.checks_run)
        for name in _QUOTE_CHECKS:
            if name in exc.checks_run:
                run.check(name, STAGE_QUOTE, [])
            elif unchecked:
                run.skip((name,), STAGE_QUOTE, "no --pcrs: the quoted PCR values are unknown")
            elif name == failed_at:
                run.check(name, STAGE_QUOTE, [exc.reason])
            else:
                run.skip((name,), STAGE_QUOTE, "an earlier quote check failed")
        if unchecked:
            detail = "no PCR values given (--pcrs): the quote's pcrDigest was not checked"
            run.warnings.append(Reason("tpm.quote.pcr_digest_unchecked", detail))
        return None
    for name in _QUOTE_CHECKS:
        run.check(name, STAGE_QUOTE, [])
    run.claims["quote"].update(authenticated=True, boot_event=quote.boot_event)
    return quote


def _policy_checks(evidence: TpmEvidence) -> tuple[str, ...]:
    """The checks of the eventlog-policy stage for this evidence."""
    if evidence.boot_reference is None:
        return (CHECK_EVENTS,)
    return (CHECK_EVENTS, CHECK_BOOT_REFERENCE)


def _eventlog_stages(
    evidence: TpmEvidence, raw: bytes, quote: AuthenticatedQuote, run: ReportBuilder
) -> None:
    """Replay against the quote (the verifier's check) and the rest against the PCR
    values given; then the events, and the measured-boot reference if there is one."""
    pcrs = evidence.pcrs or {}
    policy_checks = _policy_checks(evidence)
    result = check_boot_log(raw, quote)
    if result.log is None:
        run.check(CHECK_REPLAY, STAGE_REPLAY, list(result.reasons))
        run.skip(policy_checks, STAGE_POLICY, "the log did not parse")
        return
    banks = replay_banks(result.log, pcrs)
    # The quoted PCRs are check_boot_log's; these are the ones only PCRS.json vouches for.
    extra = bank_reasons(banks, skip=quote.pcrs)
    run.claims["eventlog"] = {
        **log_claims(result.log),
        "verified_pcrs": {bank: list(p) for bank, p in result.verified_pcrs.items()},
        "replay": banks_claims(banks, quote.pcrs),
    }
    run.check(CHECK_REPLAY, STAGE_REPLAY, [*result.reasons, *extra])
    if result.reasons or extra:
        why = "the log does not replay: only replayed events may be interpreted"
        run.skip(policy_checks, STAGE_POLICY, why)
        return
    if not checked_banks(result.verified_pcrs):
        run.skip(policy_checks, STAGE_POLICY, "no quoted PCR is extended by the log")
        return
    # The verifier's own sorting of the findings (event_findings.py).
    events = appraise_events(result, evidence.boot_reference)
    run.claims["eventlog"]["events_checked_in"] = list(events.banks)
    run.check(CHECK_EVENTS, STAGE_POLICY, list(events.reasons))
    run.warnings.extend(events.warnings)
    if evidence.boot_reference is not None:
        _, reasons = appraise_reference(result, evidence.boot_reference, events)
        run.check(CHECK_BOOT_REFERENCE, STAGE_POLICY, list(reasons))
