"""Appraise a verified boot log against a host group's measured-boot reference.

Runs only on a log that replayed to the quote (:class:`BootLogCheck.passed`),
and reads facts only from PCRs the quote covered in the reference's bank:
events anywhere else are claims nobody signed.
"""

from __future__ import annotations

from verifier.evidence.tpm.boot_facts import extract_boot_facts
from verifier.evidence.tpm.boot_log_check import BootLogCheck
from verifier.evidence.tpm.boot_reference import BootReference, appraise_boot
from verifier.evidence.tpm.event_checks import check_events
from verifier.verdict import Reason

CHECK_BOOT_REFERENCE = "tpm.boot.reference"


def appraise_boot_log(
    check: BootLogCheck, reference: BootReference
) -> tuple[frozenset[str], tuple[Reason, ...]]:
    """(checks run, reasons); no reasons and ``tpm.boot.reference`` run means it matches."""
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
    findings = check_events(check.log, reference.bank)
    facts = extract_boot_facts(check.log, reference.bank, verified_pcrs=verified)
    reasons = tuple(appraise_boot(facts, findings, reference))
    return (frozenset() if reasons else frozenset({CHECK_BOOT_REFERENCE})), reasons
