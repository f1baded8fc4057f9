"""Measured-boot references over facts: proposal, loading, appraisal.

A reference proposed from a real log appraises that log with no reasons, and
another real log with the reasons named here; the swtpm broken variants fail
their parent's reference; references that are malformed or permissive are refused.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.vectors import TPM_SWTPM_SETS, vectors_dir
from verifier.evidence.tpm.boot_facts import BootFacts, extract_boot_facts
from verifier.evidence.tpm.boot_reference import (
    BootReference,
    BootReferenceError,
    appraise_boot,
    load_boot_reference,
    reference_from_facts,
)
from verifier.evidence.tpm.event_checks import check_events
from verifier.evidence.tpm.eventlog import EventLog, parse_event_log
from verifier.evidence.tpm.replay import replay
from verifier.verdict import Reason

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _log(name: str) -> EventLog:
    return parse_event_log(vectors_dir("tpm", *name.split("/")).read_bytes())


def _evidence(name: str, bank: str = "sha256") -> tuple[BootFacts, list[Reason]]:
    log = _log(name)
    facts = extract_boot_facts(log, bank, verified_pcrs=replay(log, bank=bank))
    return facts, check_events(log, bank)


def _reference(name: str, bank: str = "sha256") -> dict[str, Any]:
    facts, checks = _evidence(name, bank)
    return reference_from_facts(facts, checks=checks)


def _codes(reasons: list[Reason]) -> list[str]:
    return [r.code for r in reasons]


SELF_APPRAISED = [
    "swtpm-rsa-sha1sha256-loc0/eventlog.bin",
    "swtpm-rsa-sha256sha384-hcrtm-sboff/eventlog.bin",
    "go-tpm-tools/eventlogs/cos-101-amd-sev.bin",
    "go-tpm-tools/eventlogs/cos-85-amd-sev.bin",  # needs shim_authority_padding
    "go-tpm-tools/eventlogs/arch-linux-workstation.bin",  # two quirks, systemd-boot
    "rust-keylime/uefi_log.bin",  # two quirks, Secure Boot off
    "python3-uefi-eventlog/rhcos__rhcos.bin",
    "tpm2-tools/event-sd-boot-fedora37.bin",  # no EFI application in PCR4
]


@pytest.mark.parametrize("name", SELF_APPRAISED)
def test_reference_from_facts_accepts_its_own_log(name: str) -> None:
    facts, checks = _evidence(name)
    doc = reference_from_facts(facts, checks=checks)
    reference = load_boot_reference(json.loads(json.dumps(doc)))  # survives JSON
    assert appraise_boot(facts, checks, reference) == []


def test_proposal_content() -> None:
    doc = _reference("swtpm-rsa-sha1sha256-loc0/eventlog.bin")
    expected = json.loads(
        vectors_dir("tpm", "swtpm-rsa-sha1sha256-loc0", "expected.json").read_text()
    )
    assert doc["secure_boot_required"] is True
    assert doc["pk"] == [expected["secure_boot"]["pk_der_sha256"]]
    assert doc["dbx_required"] == expected["secure_boot"]["dbx_sha256_entries"]
    assert doc["boot_applications"]["match"] == "sequence"
    assert len(doc["boot_applications"]["digests"]) == 3
    # The synthetic log's linux command passes fewer words than its kernel_cmdline
    # (no real GRUB does): what the command passes is proposed too (boot_commands.py).
    linux = "/vmlinuz-6.1.0-synthetic root=UUID=0fc63daf-0000-4000-8000-000000000001 ro quiet"
    assert doc["kernel_cmdlines"] == [{"exact": expected["kernel_cmdline"]}, {"exact": linux}]
    assert doc["firmware_versions"] == ["swtpm-synthetic-fw 1.00"]
    assert doc["allowed_quirks"] == [] and doc["allow_sha1_only_logs"] is False
    assert _reference("go-tpm-tools/eventlogs/arch-linux-workstation.bin")["allowed_quirks"] == [
        "pcr1_config_after_separator",
        "systemd_boot_truncated_nul",
    ]


def test_another_real_log_fails_with_named_reasons() -> None:
    reference = load_boot_reference(_reference("swtpm-rsa-sha1sha256-loc0/eventlog.bin"))
    facts, checks = _evidence("go-tpm-tools/eventlogs/cos-101-amd-sev.bin")
    assert _codes(appraise_boot(facts, checks, reference)) == [
        "tpm.boot.certificate_not_allowed",  # PK
        "tpm.boot.certificate_not_allowed",  # KEK
        "tpm.boot.certificate_not_allowed",  # db
        "tpm.boot.dbx_entry_missing",
        "tpm.boot.application_not_allowed",  # shim, grub and kernel differ...
        "tpm.boot.application_not_allowed",
        "tpm.boot.application_not_allowed",
        "tpm.boot.application_not_allowed",  # ...and COS loads one more
        "tpm.boot.kernel_cmdline_not_allowed",
        # COS's GRUB runs commands the swtpm host's never did (menuentry, setparams,
        # gptpriority, its default assignments, [ ... ]): outside the allow-list.
        *["tpm.boot.boot_command_not_allowed"] * 11,
        "tpm.boot.kernel_not_allowed",
        "tpm.boot.initrd_missing",  # COS boots without an initrd
        "tpm.boot.unexpected_boot_file",  # its grub.cfg is not the swtpm host's
        "tpm.boot.firmware_version_not_allowed",
    ]


def test_secure_boot_off_host_against_secure_boot_reference() -> None:
    reference = load_boot_reference(_reference("swtpm-rsa-sha1sha256-loc0/eventlog.bin"))
    facts, checks = _evidence("swtpm-rsa-sha256sha384-hcrtm-sboff/eventlog.bin")
    assert _codes(appraise_boot(facts, checks, reference)) == [
        "tpm.boot.secure_boot_disabled",
        "tpm.boot.certificate_not_allowed",  # each set has its own synthetic keys
        "tpm.boot.certificate_not_allowed",
        "tpm.boot.certificate_not_allowed",
        "tpm.boot.application_missing",  # with Secure Boot off shim does not load the kernel
    ]


VARIANTS = {
    "event-type-tampered": [
        "tpm.eventlog.event_after_separator",
        "tpm.boot.application_not_allowed",
        "tpm.boot.application_missing",
    ],
    "event-data-tampered": ["tpm.eventlog.ipl_digest_mismatch", "tpm.boot.kernel_cmdline_missing"],
    "post-separator-injection": [
        "tpm.eventlog.event_after_exit_boot_services",
        "tpm.eventlog.event_after_separator",
    ],
}


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_fail_their_parents_reference(name: str, variant: str) -> None:
    reference = load_boot_reference(_reference(f"{name}/eventlog.bin"))
    log = parse_event_log(
        vectors_dir("tpm", name, "variants", variant, "eventlog.bin").read_bytes()
    )
    facts = extract_boot_facts(log, "sha256", verified_pcrs=range(24))
    got = _codes(appraise_boot(facts, check_events(log, "sha256"), reference))
    expected = VARIANTS[variant]
    if variant == "event-type-tampered" and "sboff" in name:
        # Secure Boot off: grub was the last application, so nothing shifts into its slot.
        expected = ["tpm.eventlog.event_after_separator", "tpm.boot.application_missing"]
    assert got == expected


def test_quirks_must_be_allowed() -> None:
    doc = _reference("go-tpm-tools/eventlogs/cos-85-amd-sev.bin")
    facts, checks = _evidence("go-tpm-tools/eventlogs/cos-85-amd-sev.bin")
    doc["allowed_quirks"] = []
    assert _codes(appraise_boot(facts, checks, load_boot_reference(doc))) == [
        "tpm.eventlog.quirk.shim_authority_padding"
    ]


def test_sha1_only_logs_need_an_explicit_yes() -> None:
    name = "go-tpm-tools/eventlogs/debian-10.bin"
    facts, checks = _evidence(name, "sha1")
    doc = reference_from_facts(facts, checks=checks)
    assert doc["allow_sha1_only_logs"] is False
    assert _codes(appraise_boot(facts, checks, load_boot_reference(doc))) == [
        "tpm.eventlog.sha1_only"
    ]
    # Even when the caller drops the check's finding, the facts still say so.
    assert _codes(appraise_boot(facts, [], load_boot_reference(doc))) == ["tpm.eventlog.sha1_only"]
    doc["allow_sha1_only_logs"] = True
    assert appraise_boot(facts, checks, load_boot_reference(doc)) == []


def test_bank_and_unverified_pcrs() -> None:
    name = "swtpm-rsa-sha1sha256-loc0/eventlog.bin"
    reference = load_boot_reference(_reference(name))
    log = _log(name)
    facts = extract_boot_facts(log, "sha256", verified_pcrs=set(range(24)) - {7})
    codes = _codes(appraise_boot(facts, check_events(log, "sha256"), reference))
    assert codes[:2] == ["tpm.boot.pcr_unverified", "tpm.boot.secure_boot_disabled"]
    assert codes.count("tpm.boot.variable_missing") == 4  # PK, KEK, db, dbx
    sha1_facts = extract_boot_facts(log, "sha1", verified_pcrs=range(24))
    assert _codes(appraise_boot(sha1_facts, [], reference))[0] == "tpm.boot.bank_mismatch"


def test_set_matching_and_regex_cmdlines() -> None:
    name = "swtpm-rsa-sha1sha256-loc0/eventlog.bin"
    doc = _reference(name)
    digests = doc["boot_applications"]["digests"]
    doc["boot_applications"] = {"match": "set", "digests": [*reversed(digests), "ab" * 32]}
    doc["kernel_cmdlines"] = [{"regex": r"/vmlinuz-6\.1\.0-synthetic root=UUID=[0-9a-f-]+ ro .*"}]
    facts, checks = _evidence(name)
    assert appraise_boot(facts, checks, load_boot_reference(doc)) == []
    doc["kernel_cmdlines"] = [{"regex": r"/vmlinuz-6\.1\.0-synthetic"}]  # fullmatch, not search
    assert _codes(appraise_boot(facts, checks, load_boot_reference(doc))) == [
        "tpm.boot.kernel_cmdline_not_allowed",
        "tpm.boot.kernel_cmdline_mismatch",  # the linux command's line, not allowed either
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("go-attestation/sb_cert_eventlog", "findings"),  # no separators in PCR0-6
        ("python3-uefi-eventlog/intel_svr__intel_svr.bin", None),  # Secure Boot, empty dbx
    ],
)
def test_no_proposal_from_a_doubtful_host(name: str, message: str | None) -> None:
    log = _log(name)
    bank = "sha256"
    facts = extract_boot_facts(log, bank, verified_pcrs=range(24))
    checks = check_events(log, bank)
    if message is not None:
        with pytest.raises(ValueError, match=message):
            reference_from_facts(facts, checks=checks)
        return
    with pytest.raises(BootReferenceError, match="revocation"):
        load_boot_reference(reference_from_facts(facts, checks=checks))


def _valid() -> dict[str, Any]:
    return _reference("swtpm-rsa-sha1sha256-loc0/eventlog.bin")


def _without(key: str) -> dict[str, Any]:
    doc = _valid()
    del doc[key]
    return doc


def _with(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_valid())
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_without("pk"), "missing keys"),
        (_with(pk_allowed=[]), "unknown keys"),
        (_with(version=2), "version 1"),
        (_with(bank="md5"), "bank"),
        (_with(pk=["xyz"]), "hex"),
        (_with(pk=["ab" * 32, "AB" * 32]), "duplicate"),
        (_with(dbx_required=[]), "revocation"),
        (_with(boot_applications={"match": "set", "digests": []}), "empty set"),
        (_with(boot_applications={"match": "any", "digests": []}), "sequence"),
        (_with(boot_applications={"match": "sequence", "digests": ["ab" * 20]}), "32 bytes"),
        (_with(kernel_cmdlines=[{"regex": "("}]), "bad regex"),
        (_with(kernel_cmdlines=[{"exact": "a", "regex": "b"}]), "exact|regex"),
        (_with(kernel_digests=[]), "omit the key"),
        (_with(firmware_versions=[]), "non-empty"),
        (_with(firmware_versions=[1]), "strings or null"),
        (_with(allowed_quirks=["everything"]), "known ids"),
        (_with(allow_sha1_only_logs=True), "bank sha1"),
        (_with(secure_boot_required="yes"), "true or false"),
    ],
)
def test_bad_references_are_refused(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(BootReferenceError, match=message):
        load_boot_reference(doc)


def test_loaded_reference_is_frozen() -> None:
    reference = load_boot_reference(_valid())
    assert isinstance(reference, BootReference)
    with pytest.raises(AttributeError):
        reference.secure_boot_required = False  # type: ignore[misc]
