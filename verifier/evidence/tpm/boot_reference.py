"""Appraise boot facts against a measured-boot reference; propose one from facts.

The reference format is documented in boot_reference_format.py. :func:`appraise_boot`
denies by default and names every mismatch: it passes on every finding of
``check_events`` except ``tpm.eventlog.sha1_only`` (when the reference allows it) and
the quirks the reference lists, then compares each fact, and requires the facts
to come from verified PCRs 0, 4 and 7, which its checks read.

PCR8, PCR9 and PCR12 are appraised deny-by-default, over every event they hold
(boot_facts.py says why: the OS extends them at any time, the log only has to
replay per PCR, and neither a GRUB string's prefix, an event's type nor a file's
name is hashed). Every reference reads command lines (PCR8/PCR12), so an event
there that facts could not account for is ``tpm.boot.uninterpreted_event``. A
reference with any PCR9 list reads PCR9: then PCR9 must be verified, each of its
events must be a file measurement (else ``tpm.boot.uninterpreted_event``) and each
file digest must be one the reference lists, whatever the file is called
(``tpm.boot.unexpected_boot_file``). GRUB commands are appraised too, since only
its Linux loaders measure a command line (boot_commands.py): another loader's
command is ``tpm.boot.boot_command_not_allowed``, and a ``linux`` command whose
words are neither a measured kernel command line's nor an allowed line is
``tpm.boot.kernel_cmdline_mismatch``. A reference with ``driver_digests`` reads
PCR2: then PCR2 must be verified and every event there but its separator must
carry a listed digest, whatever its logged type (``tpm.boot.unexpected_driver``).

:func:`reference_from_facts` proposes a reference from a known-good host (what
``weightgate reference propose --from-eventlog`` prints for approval).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from verifier.evidence.tpm.boot_commands import (
    appraise_grub_commands,
    grub_command,
    unmeasured_linux_lines,
)
from verifier.evidence.tpm.boot_facts import DRIVER_PCR, FILE_PCR, BootFacts
from verifier.evidence.tpm.boot_reference_format import (
    REFERENCE_KIND,
    REFERENCE_VERSION,
    REQUIRED_PCRS,
    BootReference,
    BootReferenceError,
    load_boot_reference,
)
from verifier.evidence.tpm.event_quirks import QUIRKS, quirk_code
from verifier.evidence.tpm.signature_db import SignatureDatabase
from verifier.verdict import Reason

__all__ = [
    "BootReference",
    "BootReferenceError",
    "appraise_boot",
    "load_boot_reference",
    "reference_from_facts",
]


def _permitted(reason: Reason, reference: BootReference) -> bool:
    if reason.code == "tpm.eventlog.sha1_only":
        return reference.allow_sha1_only_logs
    return any(reason.code == quirk_code(q) for q in reference.allowed_quirks)


def _database(
    name: str, facts: SignatureDatabase | None, certs: frozenset[str], hashes: frozenset[str]
) -> list[Reason]:
    if facts is None:
        return [Reason("tpm.boot.variable_missing", f"{name} was not measured (or is unreadable)")]
    reasons = [
        Reason("tpm.boot.certificate_not_allowed", f"{name}: {c.sha256} ({c.subject})")
        for c in facts.certificates
        if c.sha256 not in certs
    ]
    reasons += [
        Reason("tpm.boot.hash_not_allowed", f"{name}: SHA-256 entry {h}")
        for h in facts.sha256
        if h not in hashes
    ]
    reasons += [
        Reason("tpm.boot.signature_entry_not_allowed", f"{name}: entry {o}") for o in facts.other
    ]
    return reasons


def _applications(facts: BootFacts, reference: BootReference) -> list[Reason]:
    measured = tuple(app.digest for app in facts.boot_applications)
    if reference.app_match == "set":
        if not measured:
            return [Reason("tpm.boot.application_missing", "no EFI application was measured")]
        allowed = set(reference.app_digests)
        return [
            Reason("tpm.boot.application_not_allowed", f"position {i}: {digest}")
            for i, digest in enumerate(measured)
            if digest not in allowed
        ]
    reasons: list[Reason] = []
    for i in range(max(len(measured), len(reference.app_digests))):
        expected = reference.app_digests[i] if i < len(reference.app_digests) else None
        got = measured[i] if i < len(measured) else None
        if got is None:
            reasons.append(Reason("tpm.boot.application_missing", f"position {i}: {expected}"))
        elif expected is None:
            reasons.append(Reason("tpm.boot.application_not_allowed", f"position {i}: extra {got}"))
        elif got != expected:
            reasons.append(
                Reason(
                    "tpm.boot.application_not_allowed", f"position {i}: {got}, expected {expected}"
                )
            )
    return reasons


def _cmdline_allowed(cmdline: str, reference: BootReference) -> bool:
    return cmdline in reference.cmdline_exact or any(
        p.fullmatch(cmdline) for p in reference.cmdline_patterns
    )


def _files(kind: str, digests: Sequence[str], allowed: frozenset[str] | None) -> list[Reason]:
    if allowed is None:
        return []
    if not digests:
        return [
            Reason(f"tpm.boot.{kind}_missing", f"no {kind} measurement from a verified command")
        ]
    return [Reason(f"tpm.boot.{kind}_not_allowed", d) for d in digests if d not in allowed]


def _os_events(facts: BootFacts, reference: BootReference) -> list[Reason]:
    """Every PCR8/PCR12 (and, when the reference reads PCR9, PCR9) event counts."""
    allowed = reference.pcr9_digests
    reasons = [
        Reason(
            "tpm.boot.uninterpreted_event",
            f"event {event.index} (PCR{event.pcr} {event.event_type}): {event.why}",
        )
        for event in facts.uninterpreted
        if event.pcr != FILE_PCR or allowed is not None
    ]
    if allowed is None:
        return reasons
    if FILE_PCR not in facts.verified_pcrs:
        reasons.append(Reason("tpm.boot.pcr_unverified", "PCR9 did not replay to a quoted value"))
    # Files a linux/initrd command names were checked against their own list above.
    named: set[tuple[str, str]] = set()
    if reference.kernel_digests is not None:
        named.update((f.path, f.digest) for f in facts.kernels)
    if reference.initrd_digests is not None:
        named.update((f.path, f.digest) for f in facts.initrds)
    reasons += [
        Reason(
            "tpm.boot.unexpected_boot_file",
            f"event {f.index}: {f.path!r} (name as logged, not measured), digest {f.digest}",
        )
        for f in facts.boot_files
        if f.digest not in allowed and (f.path, f.digest) not in named
    ]
    return reasons


def _drivers(facts: BootFacts, reference: BootReference) -> list[Reason]:
    """PCR2, when the reference reads it: every driver, option ROM or blob is listed."""
    allowed = reference.driver_digests
    if allowed is None:
        return []
    if DRIVER_PCR not in facts.verified_pcrs:
        return [Reason("tpm.boot.pcr_unverified", "PCR2 did not replay to a quoted value")]
    return [
        Reason(
            "tpm.boot.unexpected_driver",
            f"event {d.index} (PCR2 {d.event_type}, the type as logged): digest {d.digest}",
        )
        for d in facts.drivers
        if d.digest not in allowed
    ]


def appraise_boot(
    facts: BootFacts, checks: Sequence[Reason], reference: BootReference
) -> list[Reason]:
    """Every way ``facts`` (and the ``check_events`` findings ``checks``) miss ``reference``.

    Empty means the boot matches. In order: the checks' findings the reference
    does not permit; ``tpm.eventlog.sha1_only`` for a SHA-1-only log the reference
    does not allow (even if ``checks`` omitted it); ``tpm.boot.bank_mismatch``;
    ``tpm.boot.pcr_unverified``; Secure Boot state; PK, KEK, db; dbx; PCR2
    unverified or its drivers not listed; boot applications; kernel command lines;
    GRUB's boot commands (other loaders, linux commands without their measured
    command line); kernel and initrd digests; uninterpreted
    PCR8/PCR12 (and PCR9) events, PCR9 unverified, PCR9 files not listed; firmware
    version.
    """
    reasons = [r for r in checks if not _permitted(r, reference)]
    reported = any(r.code == "tpm.eventlog.sha1_only" for r in reasons)
    if facts.sha1_only and not reference.allow_sha1_only_logs and not reported:
        reasons.append(Reason("tpm.eventlog.sha1_only", "the log has SHA-1 digests only"))
    if facts.bank != reference.bank:
        reasons.append(
            Reason("tpm.boot.bank_mismatch", f"facts {facts.bank}, reference {reference.bank}")
        )
    reasons += [
        Reason("tpm.boot.pcr_unverified", f"PCR{pcr} did not replay to a quoted value")
        for pcr in REQUIRED_PCRS
        if pcr not in facts.verified_pcrs
    ]
    if reference.secure_boot_required and facts.secure_boot != "enabled":
        reasons.append(
            Reason("tpm.boot.secure_boot_disabled", f"SecureBoot is {facts.secure_boot}")
        )
    reasons += _database("PK", facts.pk, reference.pk, frozenset())
    reasons += _database("KEK", facts.kek, reference.kek, frozenset())
    reasons += _database("db", facts.db, reference.db, reference.db_hashes)
    if facts.dbx is None:
        reasons.append(
            Reason("tpm.boot.variable_missing", "dbx was not measured (or is unreadable)")
        )
    else:
        present = set(facts.dbx.sha256) | {c.sha256 for c in facts.dbx.certificates}
        reasons += [
            Reason("tpm.boot.dbx_entry_missing", entry)
            for entry in reference.dbx_required
            if entry not in present
        ]
    reasons += _drivers(facts, reference)
    reasons += _applications(facts, reference)
    if not facts.kernel_cmdlines and (reference.cmdline_exact or reference.cmdline_patterns):
        reasons.append(Reason("tpm.boot.kernel_cmdline_missing", "no verified kernel command line"))
    reasons += [
        Reason("tpm.boot.kernel_cmdline_not_allowed", cmdline)
        for cmdline in facts.kernel_cmdlines
        if not _cmdline_allowed(cmdline, reference)
    ]
    reasons += appraise_grub_commands(
        facts.grub_commands,
        facts.kernel_cmdlines,
        allowed=lambda cmdline: _cmdline_allowed(cmdline, reference),
        verbs=reference.grub_command_verbs,
    )
    reasons += _files("kernel", [f.digest for f in facts.kernels], reference.kernel_digests)
    reasons += _files("initrd", [f.digest for f in facts.initrds], reference.initrd_digests)
    reasons += _os_events(facts, reference)
    versions = facts.firmware_versions or (None,)
    reasons += [
        Reason("tpm.boot.firmware_version_not_allowed", repr(version))
        for version in versions
        if version not in reference.firmware_versions
    ]
    return reasons


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def reference_from_facts(facts: BootFacts, *, checks: Sequence[Reason] = ()) -> dict[str, Any]:
    """A reference document that a known-good host's boot satisfies, for approval.

    ``checks`` (check_events' findings for the same log) contributes the quirks to
    allow; any other finding means the host is not known-good and ValueError is
    raised, as it is when a required fact is missing. SHA-1-only logs are never
    proposed as allowed: an operator has to decide that by hand.
    """
    quirks = sorted(q for q in QUIRKS if any(r.code == quirk_code(q) for r in checks))
    allowed_codes = {"tpm.eventlog.sha1_only", *(quirk_code(q) for q in quirks)}
    findings = [r for r in checks if r.code not in allowed_codes]
    if findings:
        raise ValueError(f"the log has findings, not a known-good boot: {findings[0]}")
    if facts.uninterpreted:
        raise ValueError(f"the log has events facts cannot account for: {facts.uninterpreted[0]}")
    missing = [name for name in ("pk", "kek", "db", "dbx") if getattr(facts, name) is None]
    if missing or not all(pcr in facts.verified_pcrs for pcr in REQUIRED_PCRS):
        raise ValueError(f"facts are incomplete (missing {missing}, PCRs {facts.verified_pcrs})")
    pk, kek, db, dbx = (getattr(facts, name) for name in ("pk", "kek", "db", "dbx"))
    for name, database in (("PK", pk), ("KEK", kek)):
        if database.sha256 or database.other:
            raise ValueError(f"{name} holds non-X.509 entries, which a reference cannot allow")
    if db.other:
        raise ValueError("db holds entries other than X.509 and SHA-256")
    dbx_entries = _unique([*dbx.sha256, *(c.sha256 for c in dbx.certificates)])
    # A linux command passes its own words (boot_commands.py); on every real GRUB
    # host they are the measured kernel_cmdline, and nothing is added.
    cmdlines = [
        *facts.kernel_cmdlines,
        *unmeasured_linux_lines(facts.grub_commands, facts.kernel_cmdlines),
    ]
    kernels = _unique([f.digest for f in facts.kernels])
    initrds = _unique([f.digest for f in facts.initrds])
    # Every other PCR9 file, so that the proposal affirms its own log (module docstring).
    files = _unique([f.digest for f in facts.boot_files if f.digest not in {*kernels, *initrds}])
    verbs = sorted({grub_command(c)[0] for c in facts.grub_commands})
    # Whenever PCR2 is verified (every UEFI log extends it, with its separator at
    # least), so that a host that loads no driver is proposed [] and a driver added
    # later is noticed; unverified, [] would claim what nobody checked.
    drivers = _unique([d.digest for d in facts.drivers])
    return {
        "kind": REFERENCE_KIND,
        "version": REFERENCE_VERSION,
        "bank": facts.bank,
        "secure_boot_required": facts.secure_boot == "enabled",
        "pk": _unique([c.sha256 for c in pk.certificates]),
        "kek": _unique([c.sha256 for c in kek.certificates]),
        "db": _unique([c.sha256 for c in db.certificates]),
        "db_hashes": _unique(db.sha256),
        "dbx_required": dbx_entries,
        "boot_applications": {
            "match": "sequence",
            "digests": [app.digest for app in facts.boot_applications],
        },
        "kernel_cmdlines": [{"exact": c} for c in _unique(cmdlines)],
        **({"kernel_digests": kernels} if kernels else {}),
        **({"initrd_digests": initrds} if initrds else {}),
        **({"boot_file_digests": files} if files else {}),
        # The commands the known-good boot ran: a deny list of GRUB's dangerous
        # ones always lags (rmmod tpm, memory writes); an allow-list does not.
        **({"grub_command_verbs": verbs} if verbs else {}),
        **({"driver_digests": drivers} if DRIVER_PCR in facts.verified_pcrs else {}),
        "firmware_versions": _unique(facts.firmware_versions) or [None],
        "allow_sha1_only_logs": False,
        "allowed_quirks": quirks,
    }
