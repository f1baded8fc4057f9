"""Replay an event log in every bank and compare it with PCR values read from a TPM.

Used by ``weightgate evidence replay`` (the log against a PCRS.json) and by
``evidence verify tpm`` (for the PCRs the quote does not cover). Replay rules are
:mod:`.replay`'s; reason codes are the verifier's (:mod:`.boot_log_check`):
``tpm.eventlog.malformed``, ``tpm.eventlog.<replay refusal>`` (``missing_digest``,
``bad_startup_locality``, ...), ``tpm.eventlog.replay_mismatch`` (one per bank and
PCR), ``tpm.eventlog.no_common_bank``.

PCR files from upstream often hold only some PCRs (go-attestation's EBS vector has
PCR5 only), so a replayed PCR without a given value is "not given", not a mismatch.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from verifier.evidence.errors import ParseError
from verifier.evidence.report import CheckOutcome, EvidenceReport, verdict_from
from verifier.evidence.tpm.eventlog import EventLog, parse_event_log
from verifier.evidence.tpm.replay import ReplayError, replay, start_locality
from verifier.verdict import Reason, Tier, Verdict

__all__ = [
    "CHECK_REPLAY",
    "STAGE_REPLAY",
    "BankReplay",
    "PcrReplay",
    "bank_reasons",
    "banks_claims",
    "log_claims",
    "replay_banks",
    "replay_report",
]

CHECK_REPLAY = "tpm.eventlog.replay"  # as boot_log_check.CHECK_BOOT_LOG_REPLAY
STAGE_REPLAY = "eventlog-replay"

PcrStatus = Literal["match", "mismatch", "not_given"]
BankStatus = Literal["match", "mismatch", "refused", "not_compared"]


@dataclass(frozen=True, slots=True)
class PcrReplay:
    pcr: int
    replayed: bytes
    expected: bytes | None  # the TPM's value, when one was given

    @property
    def status(self) -> PcrStatus:
        if self.expected is None:
            return "not_given"
        return "match" if self.expected == self.replayed else "mismatch"


@dataclass(frozen=True, slots=True)
class BankReplay:
    """One bank: its replayed PCRs, or why it could not be replayed."""

    bank: str
    pcrs: tuple[PcrReplay, ...]
    refusal: Reason | None
    compared: bool  # values for this bank were given

    @property
    def status(self) -> BankStatus:
        if self.refusal is not None:
            return "refused"
        statuses = {p.status for p in self.pcrs}
        if "mismatch" in statuses:
            return "mismatch"
        return "match" if "match" in statuses else "not_compared"


def replay_banks(
    log: EventLog, expected: Mapping[str, Mapping[int, bytes]] | None
) -> tuple[BankReplay, ...]:
    """Replay ``log`` in each bank it declares; compare with ``expected`` where given."""
    given = expected or {}
    banks: list[BankReplay] = []
    for bank in log.banks:
        values = given.get(bank)
        try:
            replayed = replay(log, bank=bank)
        except ReplayError as exc:
            refusal = Reason(f"tpm.eventlog.{exc.code}", f"{bank}: {exc}")
            banks.append(BankReplay(bank, (), refusal, compared=values is not None))
            continue
        pcrs = tuple(
            PcrReplay(pcr, value, None if values is None else values.get(pcr))
            for pcr, value in sorted(replayed.items())
        )
        banks.append(BankReplay(bank, pcrs, None, compared=values is not None))
    return tuple(banks)


def bank_reasons(
    banks: tuple[BankReplay, ...], *, skip: Mapping[str, Collection[int]] | None = None
) -> list[Reason]:
    """Refusals of compared banks and one replay_mismatch per differing PCR.

    Banks and PCRs in ``skip`` (bank -> PCRs) are left to another check (the quote's).
    """
    reasons: list[Reason] = []
    for bank in banks:
        if bank.refusal is not None and bank.compared and bank.bank not in (skip or {}):
            reasons.append(bank.refusal)
        excluded = (skip or {}).get(bank.bank, ())
        for pcr in bank.pcrs:
            if pcr.expected is not None and pcr.status == "mismatch" and pcr.pcr not in excluded:
                detail = (
                    f"{bank.bank} PCR{pcr.pcr}: TPM has {pcr.expected.hex()}, "
                    f"log replays to {pcr.replayed.hex()}"
                )
                reasons.append(Reason("tpm.eventlog.replay_mismatch", detail))
    return reasons


def log_claims(log: EventLog) -> dict[str, Any]:
    try:
        locality: int | str = start_locality(log)
    except ReplayError as exc:
        locality = f"refused: {exc}"
    return {
        "format": log.format,
        "banks": list(log.banks),
        "events": len(log.events),
        "pcr0_start_locality": locality,
    }


def banks_claims(
    banks: tuple[BankReplay, ...], quoted: Mapping[str, Mapping[int, bytes]] | None = None
) -> dict[str, Any]:
    """Per bank: status, refusal, and each PCR's replayed and given value."""
    claims: dict[str, Any] = {}
    for bank in banks:
        covered = (quoted or {}).get(bank.bank, {})
        claims[bank.bank] = {
            "status": bank.status,
            "refusal": None if bank.refusal is None else str(bank.refusal),
            "pcrs": {
                str(p.pcr): {
                    "replayed": p.replayed.hex(),
                    "expected": None if p.expected is None else p.expected.hex(),
                    "status": p.status,
                    **({} if quoted is None else {"quoted": p.pcr in covered}),
                }
                for p in bank.pcrs
            },
        }
    return claims


def replay_report(raw: bytes, expected: Mapping[str, Mapping[int, bytes]] | None) -> EvidenceReport:
    """``evidence replay``: replay ``raw`` and compare with ``expected`` (a PCRS.json)."""
    try:
        log = parse_event_log(raw)
    except ParseError as exc:
        reason = Reason("tpm.eventlog.malformed", str(exc))
        check = CheckOutcome(CHECK_REPLAY, STAGE_REPLAY, "failed", str(reason))
        return EvidenceReport("tpm-eventlog", verdict_from([reason], [], (check,)), (check,))
    banks = replay_banks(log, expected)
    claims = {"eventlog": log_claims(log), "replay": banks_claims(banks)}
    reasons = bank_reasons(banks)
    if all(b.refusal is not None for b in banks):
        reasons = [b.refusal for b in banks if b.refusal is not None]
    if expected is None and not reasons:
        check = CheckOutcome(CHECK_REPLAY, STAGE_REPLAY, "not_run", "no --pcrs to compare with")
        return EvidenceReport("tpm-eventlog", Verdict(Tier.NONE), (check,), claims)
    if expected is not None and not reasons and not any(b.status == "match" for b in banks):
        detail = f"the log declares {list(log.banks)}, the values cover {sorted(expected)}"
        reasons = [Reason("tpm.eventlog.no_common_bank", f"no PCR to compare: {detail}")]
    check = CheckOutcome(
        CHECK_REPLAY,
        STAGE_REPLAY,
        "failed" if reasons else "passed",
        "; ".join(map(str, reasons[:3])),
    )
    return EvidenceReport("tpm-eventlog", verdict_from(reasons, [], (check,)), (check,), claims)
