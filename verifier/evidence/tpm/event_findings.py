"""The event checks on a replayed boot log, and which findings a reference may permit.

Replay binds digests, not event types or data (event_checks.py): a log that
replays can still lie about what was measured. Every log that replays to the
quote is therefore run through :func:`check_events`, whether or not its group
has a measured-boot reference, in each bank in which it extended a quoted PCR
(structural findings repeat per bank and are reported once; data findings may
differ per bank).

Findings fall in two classes:

* those a measured-boot reference may permit (``allowed_quirks``: the named
  vendor quirks, ``tpm.eventlog.quirk.<id>``; ``allow_sha1_only_logs``:
  ``tpm.eventlog.sha1_only``). With a reference that permits them they are
  silent; with one that does not they reject. Without a reference nobody has
  decided on a quirk: it is a warning, never an affirmation; a SHA-1-only log
  rejects, since only a reference may allow one (``evidence verify tpm`` does
  the same);
* everything else (tampered data, rewritten types, events after a separator, a
  missing separator): no reference can permit them, so they always reject.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from verifier.evidence.tpm.boot_appraisal import appraise_boot_log
from verifier.evidence.tpm.boot_log_check import BootLogCheck
from verifier.evidence.tpm.boot_reference_format import BootReference
from verifier.evidence.tpm.event_checks import check_events
from verifier.evidence.tpm.event_quirks import quirk_code
from verifier.evidence.tpm.eventlog import EventLog
from verifier.verdict import Reason

__all__ = [
    "CHECK_EVENTS",
    "EVENT_BANKS",
    "EventFindings",
    "appraise_events",
    "appraise_reference",
    "checked_banks",
    "event_findings",
    "permittable",
]

CHECK_EVENTS = "tpm.eventlog.events"
# The banks whose data checks count, strongest first (hashlib computes all of them).
EVENT_BANKS = ("sha256", "sha384", "sha512", "sha1")
_QUIRK_PREFIX = quirk_code("")
_SHA1_ONLY = "tpm.eventlog.sha1_only"


def permittable(code: str) -> bool:
    """Whether some measured-boot reference could permit a finding with ``code``."""
    return code.startswith(_QUIRK_PREFIX) or code == _SHA1_ONLY


def checked_banks(verified_pcrs: Mapping[str, Iterable[int]]) -> list[str]:
    """The banks to check, strongest first: those in which the log extended a quoted PCR."""
    return [bank for bank in EVENT_BANKS if tuple(verified_pcrs.get(bank, ()))]


def event_findings(log: EventLog, banks: Iterable[str]) -> list[Reason]:
    """``check_events`` in each of ``banks``, each finding once, in bank then log order."""
    return _merged({bank: tuple(check_events(log, bank)) for bank in banks})


def _merged(by_bank: Mapping[str, Sequence[Reason]]) -> list[Reason]:
    findings: list[Reason] = []
    for bank_findings in by_bank.values():
        findings.extend(r for r in bank_findings if r not in findings)
    return findings


@dataclass(frozen=True, slots=True)
class EventFindings:
    """What the event checks found on one replayed log, sorted for a verdict.

    ``reasons`` reject; ``warnings`` keep the round from affirming without
    rejecting it; ``checks_run`` holds :data:`CHECK_EVENTS` when the checks ran
    and nothing rejects (as the offline report records a passed check beside
    its warnings). ``by_bank`` keeps each checked bank's own findings, so that a
    measured-boot appraisal of the same log need not run the checks again
    (:func:`appraise_reference`).
    """

    checks_run: frozenset[str]
    reasons: tuple[Reason, ...]
    warnings: tuple[Reason, ...]
    banks: tuple[str, ...]
    by_bank: Mapping[str, tuple[Reason, ...]] = field(default_factory=dict)


def appraise_events(check: BootLogCheck, reference: BootReference | None) -> EventFindings:
    """The event checks on a log that replayed (``check.passed``), sorted by ``reference``.

    A log that did not replay is not interpreted (its events are claims nobody
    signed): nothing runs, and the replay's own reasons already reject it. A log
    that extends no quoted PCR has nothing to check either.
    """
    banks = checked_banks(check.verified_pcrs)
    if check.log is None or not check.passed or not banks:
        return EventFindings(frozenset(), (), (), ())
    by_bank = {bank: tuple(check_events(check.log, bank)) for bank in banks}
    reasons: list[Reason] = []
    warnings: list[Reason] = []
    for finding in _merged(by_bank):
        if not permittable(finding.code):
            reasons.append(finding)
        elif reference is None:
            (reasons if finding.code == _SHA1_ONLY else warnings).append(finding)
        elif not _permitted(finding, reference):
            reasons.append(finding)
    done = frozenset() if reasons else frozenset({CHECK_EVENTS})
    return EventFindings(done, tuple(reasons), tuple(warnings), tuple(banks), by_bank)


def appraise_reference(
    check: BootLogCheck, reference: BootReference, events: EventFindings
) -> tuple[frozenset[str], tuple[Reason, ...]]:
    """:func:`appraise_boot_log` of a log :func:`appraise_events` has checked:
    (checks run, the reasons ``events`` did not already give).

    The event checks (milliseconds on a real log) are not run again in the
    reference's bank when ``events`` ran them there.
    """
    checks, reasons = appraise_boot_log(
        check, reference, findings=events.by_bank.get(reference.bank)
    )
    return checks, tuple(r for r in reasons if r not in events.reasons)


def _permitted(finding: Reason, reference: BootReference) -> bool:
    if finding.code == _SHA1_ONLY:
        return reference.allow_sha1_only_logs
    return any(finding.code == quirk_code(q) for q in reference.allowed_quirks)
