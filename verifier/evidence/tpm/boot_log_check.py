"""Tie a measured-boot event log to an authenticated quote.

The log is a claim until it replays to the PCR values the quote signed. For
each bank the quote covers and the log declares:

* every quoted PCR the log extends must equal its replayed value;
* a quoted PCR among 0-7 (the firmware's, PFP 3.3.4), 8-9 (the boot loader's:
  GRUB's commands and files) or 12 (systemd-stub's and Windows Boot Manager's)
  that the log never extends must still hold its start value: otherwise events
  were left out. Facts are read from 8, 9 and 12 (boot_facts.py), and a log
  that leaves all of a PCR's events out would leave its facts unread while
  another PCR (a forged PCR12 command line, say) speaks for them;
* PCRs the log extends but the quote does not cover are *unverified*: their
  events must not be interpreted, and :attr:`BootLogCheck.verified_pcrs` says
  which PCRs are safe to read facts from.

Other quoted PCRs that the log does not touch (PCR10 is IMA's, 11 and 13-15
belong to the OS and applications) are not the boot log's to explain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.authenticate import AuthenticatedQuote
from verifier.evidence.tpm.eventlog import EventLog, parse_event_log
from verifier.evidence.tpm.replay import ReplayError, replay, start_locality
from verifier.verdict import Reason

CHECK_BOOT_LOG_REPLAY = "tpm.eventlog.replay"
# The PCRs that only pre-OS code extends, all of it logged (module docstring): the
# ones facts are read from, which a fact-based reference has quoted (boot_appraisal).
BOOT_PCRS = (*range(10), 12)


@dataclass(frozen=True, slots=True)
class BootLogCheck:
    """What checking one log against one quote found. ``log`` is set when it parsed."""

    reasons: tuple[Reason, ...]
    checks_run: frozenset[str]
    verified_pcrs: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    log: EventLog | None = None
    # What the quote covered, per bank: a fact-based reference needs some PCRs
    # quoted whether or not the log extends them (boot_appraisal.py).
    quoted_pcrs: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.reasons and CHECK_BOOT_LOG_REPLAY in self.checks_run


def check_boot_log(raw: bytes, quote: AuthenticatedQuote) -> BootLogCheck:
    """Parse ``raw`` and replay it against every bank of ``quote`` it declares."""
    try:
        log = parse_event_log(raw)
    except ParseError as exc:
        return _failed(Reason("tpm.eventlog.malformed", str(exc)))
    banks = [bank for bank in quote.pcrs if bank in log.banks]
    if not banks:
        detail = f"the log declares {list(log.banks)}, the quote covers {sorted(quote.pcrs)}"
        return _failed(Reason("tpm.eventlog.no_common_bank", detail), log=log)
    reasons: list[Reason] = []
    verified: dict[str, tuple[int, ...]] = {}
    for bank in banks:
        try:
            replayed = replay(log, bank=bank)
        except ReplayError as exc:
            reasons.append(Reason(f"tpm.eventlog.{exc.code}", f"{bank}: {exc}"))
            continue
        quoted = quote.pcrs[bank]
        size = len(next(iter(quoted.values()))) if quoted else 0
        locality = start_locality(log)
        for pcr, value in sorted(quoted.items()):
            if pcr in replayed:
                expected = replayed[pcr]
            elif pcr in BOOT_PCRS:
                expected = (locality if pcr == 0 else 0).to_bytes(size, "big")
            else:
                continue
            if value != expected:
                reasons.append(
                    Reason(
                        "tpm.eventlog.replay_mismatch",
                        f"{bank} PCR{pcr}: quoted {value.hex()}, log replays to {expected.hex()}",
                    )
                )
        verified[bank] = tuple(sorted(set(quoted) & set(replayed)))
    if reasons:
        return _failed(*reasons, log=log)
    quoted_pcrs = {bank: tuple(sorted(values)) for bank, values in quote.pcrs.items()}
    return BootLogCheck((), frozenset({CHECK_BOOT_LOG_REPLAY}), verified, log, quoted_pcrs)


def _failed(*reasons: Reason, log: EventLog | None = None) -> BootLogCheck:
    return BootLogCheck(tuple(reasons), frozenset(), {}, log)
