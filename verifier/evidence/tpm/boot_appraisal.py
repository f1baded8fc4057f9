"""Appraise a verified boot log against a host group's measured-boot reference.

Runs only on a log that replayed to the quote (:class:`BootLogCheck.passed`),
and reads facts only from PCRs the quote covered in the reference's bank:
events anywhere else are claims nobody signed.

Facts are read from PCRs the log need not extend: a kernel command line sits in
PCR8 (GRUB) or PCR12 (systemd-stub), kernel and initrd files in PCR9. If one of
them were left out of the quote, what the OS later extends into the other could
speak for the real boot unopposed. So the quote must cover PCRs 8 and 12 (and 9
when the reference lists PCR9 files, 2 when it lists ``driver_digests``: a driver
in an unquoted PCR2 is a claim nobody signed, and its absence one too) in the
reference's bank (``tpm.boot.pcr_not_quoted``); the verifier asks for
:func:`reference_pcrs`, which covers all of them, and check_boot_log holds a
quoted PCR the log does not extend to its start value.
"""

from __future__ import annotations

from collections.abc import Sequence

from verifier.evidence.tpm.boot_facts import extract_boot_facts
from verifier.evidence.tpm.boot_log_check import BOOT_PCRS, BootLogCheck
from verifier.evidence.tpm.boot_reference import BootReference, appraise_boot
from verifier.evidence.tpm.event_checks import check_events
from verifier.verdict import Reason

CHECK_BOOT_REFERENCE = "tpm.boot.reference"
_PCR9_LISTS = ("kernel_digests", "initrd_digests", "boot_file_digests")


def reference_pcrs(reference: BootReference) -> dict[str, tuple[int, ...]]:
    """The PCRs to quote for ``reference``: every PCR its facts are read from
    (boot_facts.py): firmware, drivers (2), Secure Boot and boot applications
    (0-7), the boot loader's commands, files and command lines (8, 9) and
    systemd-stub's command line (12), which check_boot_log holds to their start
    values when the log leaves them untouched."""
    return {reference.bank: BOOT_PCRS}


def _must_be_quoted(reference: BootReference) -> tuple[int, ...]:
    pcr9 = any(getattr(reference, name) is not None for name in _PCR9_LISTS)
    pcr2 = reference.driver_digests is not None
    return (*((2,) if pcr2 else ()), 8, *((9,) if pcr9 else ()), 12)


def appraise_boot_log(
    check: BootLogCheck,
    reference: BootReference,
    *,
    findings: Sequence[Reason] | None = None,
) -> tuple[frozenset[str], tuple[Reason, ...]]:
    """(checks run, reasons); no reasons and ``tpm.boot.reference`` run means it matches.

    ``findings``: ``check_events`` of this log in the reference's bank, when the
    caller has them already (event_findings.appraise_reference); else they are run.
    """
    if check.log is None or not check.passed:
        return frozenset(), (
            Reason("tpm.boot.log_unverified", "the boot log did not replay to the quote"),
        )
    verified = check.verified_pcrs.get(reference.bank)
    if verified is None:
        detail = (
            f"the reference is over {reference.bank}; the quote and log share "
            f"{sorted(check.verified_pcrs) or 'no bank'}"
        )
        return frozenset(), (Reason("tpm.boot.bank_mismatch", detail),)
    quoted = check.quoted_pcrs.get(reference.bank, ())
    unquoted = [pcr for pcr in _must_be_quoted(reference) if pcr not in quoted]
    if unquoted:
        detail = (
            f"the quote does not cover {reference.bank} PCR "
            f"{', '.join(map(str, unquoted))}: the boot's drivers, command lines and "
            "files are read from them, and a PCR left out could not contradict a forged one"
        )
        return frozenset(), (Reason("tpm.boot.pcr_not_quoted", detail),)
    if findings is None:
        findings = check_events(check.log, reference.bank)
    facts = extract_boot_facts(check.log, reference.bank, verified_pcrs=verified)
    reasons = tuple(appraise_boot(facts, findings, reference))
    return (frozenset() if reasons else frozenset({CHECK_BOOT_REFERENCE})), reasons
