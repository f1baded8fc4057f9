"""IMA in the offline evidence tools: the ``verify tpm --ima`` stages, ``replay --ima``.

:func:`ima_stages` runs after the quote stage and needs the authenticated quote
(never PCRS.json alone: the list is authenticated only by the quoted PCR10):

1. ``ima-replay`` / ``tpm.ima.replay``: the list parses (binary or ASCII,
   :func:`.read_ima_list`); the quote covers PCR10 in at least one bank, and every
   other PCR the list extends (``tpm.ima.pcr_not_quoted``); the *whole* list
   replays (:func:`.replay_ima`: entries in order, template hashes over their data)
   to the quoted value of each of those PCRs in every bank whose PCR10 is quoted
   (``tpm.ima.pcr_mismatch``). A list read after the quote may be longer than the
   quoted one: it is refused, and the message says how many first entries do match,
   so that the operator can quote again and read the list right after;
2. ``ima-replay`` / ``tpm.ima.boot_aggregate``: entry 0 is the boot_aggregate, over
   PCRs 0-7 or 0-9 of its bank (:func:`.check_boot_aggregate`), quoted values first,
   then --pcrs values for PCRs the quote lacks (then a warning,
   ``tpm.ima.boot_aggregate_unchecked``: nothing authenticates them); when the PCRs a
   rule needs are in neither, it is not checked (the same warning);
3. ``ima-policy`` / ``tpm.ima.policy`` (with a runtime policy, on a list that
   replayed): :func:`.appraise_ima_full`, every finding. A violation
   (``tpm.ima.violation``: a file measured while open for writing; the kernel
   extends ff..ff, so nothing binds its name) under a policy whose ``violations`` is
   ``deny`` (the default) is a warning here, never an affirmation, like the event-log
   quirks a reference must allow; under ``tolerate`` it is no finding, and the claims
   count it (``violations_tolerated``). Either way it was replayed in stage 1.

Reason codes come from :data:`.IMA_REASON_CODES` (the IMA library's codes under
``tpm.ima.``). :func:`ima_replay_report` is ``evidence replay --ima``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from verifier.evidence.errors import ParseError
from verifier.evidence.report import EvidenceReport, ReportBuilder
from verifier.evidence.tpm.authenticate import AuthenticatedQuote
from verifier.evidence.tpm.describe import pcr_ranges, selection_text
from verifier.evidence.tpm.ima import ImaEntry, ImaList
from verifier.evidence.tpm.ima_policy import RuntimePolicy, appraise_ima_full
from verifier.evidence.tpm.ima_replay import (
    ImaReplayError,
    check_boot_aggregate,
    replay_ima,
    replay_until_quote,
    start_state,
)
from verifier.evidence.tpm.offline_ima_file import ima_list_fields, ima_reason, read_ima_list
from verifier.evidence.tpm.offline_replay import BankReplay, PcrReplay, banks_claims
from verifier.verdict import Reason

__all__ = [
    "CHECK_BOOT_AGGREGATE",
    "CHECK_IMA_POLICY",
    "CHECK_IMA_REPLAY",
    "STAGE_IMA_POLICY",
    "STAGE_IMA_REPLAY",
    "ima_replay_report",
    "ima_stages",
]

STAGE_IMA_REPLAY = "ima-replay"
STAGE_IMA_POLICY = "ima-policy"
CHECK_IMA_REPLAY = "tpm.ima.replay"
CHECK_BOOT_AGGREGATE = "tpm.ima.boot_aggregate"
CHECK_IMA_POLICY = "tpm.ima.policy"  # the key-release control "ima_runtime" needs it
IMA_PCR = 10
_UNCHECKED = "tpm.ima.boot_aggregate_unchecked"
# Findings that only a policy's "violations": "tolerate" allows: warnings offline.
_PERMITTABLE = frozenset({"tpm.ima.violation"})
# The kernel's hash names that differ from the TPM bank's.
_BANK_OF = MappingProxyType({"sm3": "sm3_256"})
# `replay --ima` without --pcrs: the banks TPMs allocate.
_DEFAULT_BANKS = ("sha1", "sha256", "sha384", "sha512")

Pcrs = Mapping[str, Mapping[int, bytes]]


def ima_stages(
    raw: bytes | None,
    policy: RuntimePolicy | None,
    quote: AuthenticatedQuote | None,
    given: Pcrs,
    run: ReportBuilder,
) -> None:
    """The IMA stages of ``verify tpm`` (module docstring), recorded in ``run``."""
    replay_checks = (CHECK_IMA_REPLAY, CHECK_BOOT_AGGREGATE)
    no_policy = "no --ima-policy" if raw is not None else "no --ima"
    if raw is None or quote is None:
        why = "no --ima" if raw is None else "the quote was not authenticated"
        run.skip(replay_checks, STAGE_IMA_REPLAY, why)
        run.skip((CHECK_IMA_POLICY,), STAGE_IMA_POLICY, no_policy if policy is None else why)
        return
    try:
        ima_list = read_ima_list(raw)
    except ParseError as exc:
        run.check(CHECK_IMA_REPLAY, STAGE_IMA_REPLAY, [ima_reason("malformed", str(exc))])
        run.skip((CHECK_BOOT_AGGREGATE,), STAGE_IMA_REPLAY, "the IMA list did not parse")
        why = no_policy if policy is None else "the IMA list did not parse"
        run.skip((CHECK_IMA_POLICY,), STAGE_IMA_POLICY, why)
        return
    claims = _list_claims(ima_list)
    run.claims["ima"] = claims
    reasons, banks = _replay_against_quote(ima_list, quote)
    claims["replay"] = banks_claims(banks, quote.pcrs)
    run.check(CHECK_IMA_REPLAY, STAGE_IMA_REPLAY, reasons)
    if reasons:
        why = "the IMA list does not replay to the quote: only replayed entries may be interpreted"
        run.skip((CHECK_BOOT_AGGREGATE,), STAGE_IMA_REPLAY, why)
        run.skip((CHECK_IMA_POLICY,), STAGE_IMA_POLICY, no_policy if policy is None else why)
        return
    _boot_aggregate(ima_list.entries, quote.pcrs, given, run)
    if policy is None:
        run.skip((CHECK_IMA_POLICY,), STAGE_IMA_POLICY, no_policy)
        return
    appraisal = appraise_ima_full(ima_list.entries, policy)
    findings = list(appraisal.reasons)
    permitted = [r for r in findings if r.code in _PERMITTABLE]
    tolerated = appraisal.violations_tolerated
    details = [f"{len(permitted)} violation(s): warnings"] if permitted else []
    if tolerated:
        details.append(f"{tolerated} violation(s) tolerated by the policy")
    run.check(
        CHECK_IMA_POLICY,
        STAGE_IMA_POLICY,
        [r for r in findings if r not in permitted],
        "; ".join(details),
    )
    run.warnings.extend(permitted)
    claims["policy_findings"] = len(findings)
    claims["policy_violations"] = policy.violations
    claims["violations_tolerated"] = tolerated


def _list_claims(ima_list: ImaList) -> dict[str, object]:
    fields = ima_list_fields(ima_list, entries_shown=0)
    del fields["entries"], fields["entries_shown"]
    return fields


def _replay_against_quote(
    ima_list: ImaList, quote: AuthenticatedQuote
) -> tuple[list[Reason], tuple[BankReplay, ...]]:
    quoted = quote.pcrs
    extended = sorted({e.pcr for e in ima_list.entries} | {IMA_PCR})
    banks = [bank for bank, values in quoted.items() if IMA_PCR in values]
    selection = selection_text(quote.info.pcr_selection)
    if not banks:
        detail = (
            f"the quote does not cover PCR{IMA_PCR} (it covers {selection}): nothing "
            f"authenticates the IMA list; quote PCR{IMA_PCR} as well"
        )
        return [ima_reason("pcr_not_quoted", detail)], ()
    unquoted = [p for p in extended if not any(p in quoted[bank] for bank in banks)]
    if unquoted:
        detail = (
            f"the IMA list extends PCR {pcr_ranges(tuple(unquoted))}, which the quote does "
            f"not cover with PCR{IMA_PCR} in any bank (it covers {selection})"
        )
        return [ima_reason("pcr_not_quoted", detail)], ()
    return _replay(ima_list, banks, quoted, extended, against="quoted")


def _replay(
    ima_list: ImaList, banks: Sequence[str], expected: Pcrs, extended: list[int], *, against: str
) -> tuple[list[Reason], tuple[BankReplay, ...]]:
    """Replay the whole list in ``banks``; a reason per PCR that differs from ``expected``."""
    refused: list[BankReplay] = []
    supported: list[str] = []
    for bank in banks:
        try:
            start_state([bank])
            supported.append(bank)
        except ImaReplayError as exc:
            refused.append(
                BankReplay(bank, (), ima_reason(exc.code, f"{bank}: {exc}"), compared=True)
            )
    if not supported:
        return [b.refusal for b in refused if b.refusal is not None], tuple(refused)
    alg = ima_list.template_hash_alg
    try:
        state = replay_ima(ima_list.entries, banks=supported, template_hash_alg=alg)
    except ImaReplayError as exc:
        return [ima_reason(exc.code, str(exc))], ()
    results = tuple(
        BankReplay(
            bank,
            tuple(
                PcrReplay(p, state.value(bank, p), expected.get(bank, {}).get(p)) for p in extended
            ),
            None,
            compared=bank in expected,
        )
        for bank in supported
    )
    reasons = [b.refusal for b in refused if b.refusal is not None]
    count = len(ima_list.entries)
    for result in results:
        for pcr in result.pcrs:
            if pcr.status == "mismatch" and pcr.expected is not None:
                reasons.append(
                    ima_reason(
                        "pcr_mismatch",
                        f"{result.bank} PCR{pcr.pcr}: {against} {pcr.expected.hex()}, the whole "
                        f"list ({count} entries) replays to {pcr.replayed.hex()}",
                    )
                )
    if reasons and not refused:
        reasons[0] = Reason(reasons[0].code, reasons[0].detail + _prefix_hint(ima_list, expected))
    return reasons, (*results, *refused)


def _prefix_hint(ima_list: ImaList, expected: Pcrs) -> str:
    """Whether the first entries of the list replay to ``expected`` PCR10 (a later read)."""
    targets = {bank: {IMA_PCR: v[IMA_PCR]} for bank, v in expected.items() if IMA_PCR in v}
    try:
        state = replay_until_quote(
            start_state(targets),
            ima_list.entries,
            targets,
            template_hash_alg=ima_list.template_hash_alg,
        )
    except ImaReplayError:
        return ""
    if state.count >= len(ima_list.entries):
        return ""
    return (
        f"; its first {state.count} entries do: the list was read after the quote and the "
        "entries after them are not verified (quote again, then read the list)"
    )


def _boot_aggregate(
    entries: Sequence[ImaEntry], quoted: Pcrs, given: Pcrs, run: ReportBuilder
) -> None:
    if not entries:
        reason = ima_reason("boot_aggregate_missing", "the IMA list is empty: no boot_aggregate")
        run.check(CHECK_BOOT_AGGREGATE, STAGE_IMA_REPLAY, [reason])
        return
    first = entries[0]
    bank = _BANK_OF.get(first.digest_alg or "", first.digest_alg or "sha1")
    # Quoted values first; --pcrs only fills what the quote lacks (and says so).
    values = {**given.get(bank, {}), **quoted.get(bank, {})}
    unquoted = {i for i in values if i not in quoted.get(bank, {})}
    needed = 8 if bank == "sha1" else 10  # PCRs 8-9 only for non-SHA-1 banks (5.8+)
    try:
        rule = check_boot_aggregate(first, values, bank)
    except ImaReplayError as exc:
        missing = [i for i in range(needed) if i not in values]
        if exc.code == "boot_aggregate_mismatch" and missing:
            why = (
                f"{bank} PCR {pcr_ranges(tuple(missing))} neither quoted nor in --pcrs: "
                f"boot_aggregate not checked ({exc})"
            )
            run.skip((CHECK_BOOT_AGGREGATE,), STAGE_IMA_REPLAY, why)
            run.warnings.append(Reason(_UNCHECKED, why))
        else:
            run.check(CHECK_BOOT_AGGREGATE, STAGE_IMA_REPLAY, [ima_reason(exc.code, str(exc))])
        return
    used = tuple(range(8 if rule == "pcr0-7" else 10))
    from_file = tuple(i for i in used if i in unquoted)
    source = "quoted" if not from_file else f"PCR {pcr_ranges(from_file)} from --pcrs, not quoted"
    detail = f"{bank} PCR {pcr_ranges(used)} ({source})"
    run.check(CHECK_BOOT_AGGREGATE, STAGE_IMA_REPLAY, [], detail)
    run.claims["ima"]["boot_aggregate_check"] = {"bank": bank, "rule": rule, "source": source}
    if from_file:
        why = f"boot_aggregate matches {detail}: nothing authenticates those PCR values"
        run.warnings.append(Reason(_UNCHECKED, why))


def ima_replay_report(raw: bytes, expected: Pcrs | None) -> EvidenceReport:
    """``evidence replay --ima``: replay ``raw`` per bank and compare with ``expected``."""
    run = ReportBuilder()
    try:
        ima_list = read_ima_list(raw)
    except ParseError as exc:
        run.check(CHECK_IMA_REPLAY, STAGE_IMA_REPLAY, [ima_reason("malformed", str(exc))])
        return run.build("tpm-ima")
    run.claims["ima"] = _list_claims(ima_list)
    extended = sorted({e.pcr for e in ima_list.entries} | {IMA_PCR})
    banks = list(expected) if expected is not None else list(_DEFAULT_BANKS)
    reasons, results = _replay(ima_list, banks, expected or {}, extended, against="--pcrs has")
    run.claims["replay"] = banks_claims(results)
    compared = any(p.expected is not None for b in results for p in b.pcrs)
    if expected is None and not reasons:
        run.skip((CHECK_IMA_REPLAY,), STAGE_IMA_REPLAY, "no --pcrs to compare with")
        return run.build("tpm-ima")
    if not reasons and not compared:
        detail = f"no bank of --pcrs ({', '.join(banks)}) has PCR {pcr_ranges(tuple(extended))}"
        reasons = [ima_reason("no_bank", detail)]
    run.check(CHECK_IMA_REPLAY, STAGE_IMA_REPLAY, reasons)
    return run.build("tpm-ima")
