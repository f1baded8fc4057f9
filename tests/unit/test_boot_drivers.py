"""PCR2 (UEFI drivers, option ROMs, firmware blobs) in measured-boot references.

Without Secure Boot nothing else refuses a driver the firmware loads from a
Driver#### variable or an option ROM, and a reference over facts never looked at
PCR2. ``driver_digests`` lists every digest PCR2 may carry. The logs are real
ones with driver events (read in place from the shared vectors); the attacks add
or change one driver event, or leave PCR2 out of the quote.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_boot_pcr8_pcr9_completeness import Log, _event
from tests.vectors import vectors_dir
from verifier.boot_reference_cli import reference_document
from verifier.evidence.tpm.boot_appraisal import (
    CHECK_BOOT_REFERENCE,
    appraise_boot_log,
    reference_pcrs,
)
from verifier.evidence.tpm.boot_facts import extract_boot_facts
from verifier.evidence.tpm.boot_log_check import CHECK_BOOT_LOG_REPLAY, BootLogCheck
from verifier.evidence.tpm.boot_reference import (
    BootReferenceError,
    appraise_boot,
    load_boot_reference,
)
from verifier.evidence.tpm.event_checks import check_events
from verifier.evidence.tpm.event_types import EventType as Ev
from verifier.evidence.tpm.eventlog import parse_event_log
from verifier.evidence.tpm.replay import replay
from verifier.verdict import Reason

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DRIVER_TYPES = frozenset(
    {
        Ev.EV_EFI_BOOT_SERVICES_DRIVER,
        Ev.EV_EFI_RUNTIME_SERVICES_DRIVER,
        Ev.EV_EFI_PLATFORM_FIRMWARE_BLOB,
        Ev.EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    }
)
# Real logs with PCR2 driver events -> how many (PROVENANCE: option ROMs, NICs, RAID).
DRIVER_LOGS = {
    "go-attestation/option_rom_eventlog": 1,  # SHA-1 only
    "python3-uefi-eventlog/inspur__inspur.bin": 7,
    "python3-uefi-eventlog/sr645__rk049-s26.bin": 8,
    "keylime/binary_bios_measurements": 3,
}
NO_DRIVERS = "swtpm-rsa-sha1sha256-loc0/eventlog.bin"  # PCR2 holds its separator only
DONOR = "python3-uefi-eventlog/inspur__inspur.bin"  # same banks as NO_DRIVERS


def _proposal(name: str) -> dict[str, Any]:
    """What `reference propose --from-eventlog` prints for the log."""
    document, _ = reference_document(vectors_dir("tpm", *name.split("/")), None)
    # An operator's call the proposal never makes; the SHA-1-only log needs it.
    document["allow_sha1_only_logs"] = document["bank"] == "sha1"
    return document


def _reasons(raw: bytes, reference: dict[str, Any], *, without: int | None = None) -> list[Reason]:
    log = parse_event_log(raw)
    bank = reference["bank"]
    verified = [pcr for pcr in replay(log, bank=bank) if pcr != without]
    facts = extract_boot_facts(log, bank, verified_pcrs=verified)
    return appraise_boot(facts, check_events(log, bank), load_boot_reference(reference))


def _codes(raw: bytes, reference: dict[str, Any], *, without: int | None = None) -> list[str]:
    return [r.code for r in _reasons(raw, reference, without=without)]


def _driver_events(log: Log, bank: str) -> list[tuple[int, str]]:
    """(index, digest) of each PCR2 driver/blob event, read straight from the log."""
    return [
        (e.index, e.digests[bank].hex())
        for e in log.log.events
        if e.pcr == 2 and e.event_type in DRIVER_TYPES
    ]


# --- proposals -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "count"), sorted(DRIVER_LOGS.items()))
def test_a_proposal_lists_exactly_its_logs_drivers_and_affirms_it(name: str, count: int) -> None:
    log, reference = Log(name), _proposal(name)
    events = _driver_events(log, reference["bank"])
    assert len(events) == count
    assert reference["driver_digests"] == list(dict.fromkeys(digest for _, digest in events))
    assert _reasons(log.build(), reference) == []


def test_a_host_without_drivers_is_proposed_none() -> None:
    log, reference = Log(NO_DRIVERS), _proposal(NO_DRIVERS)
    assert [e.event_type for e in log.log.events if e.pcr == 2] == [Ev.EV_SEPARATOR]
    assert reference["driver_digests"] == []
    assert load_boot_reference(reference).driver_digests == frozenset()
    assert _codes(log.build(), reference) == []


def test_no_list_is_proposed_when_pcr2_is_not_verified(tmp_path: Path) -> None:
    """A --pcrs without PCR2 leaves it unread: [] would claim what nobody checked."""
    name = "python3-uefi-eventlog/sr645__rk049-s26.bin"
    path = vectors_dir("tpm", *name.split("/"))
    pcrs = replay(parse_event_log(path.read_bytes()), bank="sha256")
    values = {str(pcr): value.hex() for pcr, value in pcrs.items() if pcr != 2}
    given = tmp_path / "pcrs.json"
    given.write_text(json.dumps({"pcrs": {"sha256": values}}))
    document, _ = reference_document(path, given)
    assert "driver_digests" not in document
    assert "driver_digests" in reference_document(path, None)[0]


# --- appraisal -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DRIVER_LOGS))
def test_a_driver_the_reference_does_not_list_is_named(name: str) -> None:
    log, reference = Log(name), _proposal(name)
    removed = reference["driver_digests"].pop()
    reasons = _reasons(log.build(), reference)
    loaded = [i for i, digest in _driver_events(log, reference["bank"]) if digest == removed]
    assert [r.code for r in reasons] == ["tpm.boot.unexpected_driver"] * len(loaded)
    for reason, index in zip(reasons, loaded, strict=True):
        assert reason.detail.startswith(f"event {index} (PCR2 EV_EFI_BOOT_SERVICES_DRIVER")
        assert reason.detail.endswith(f"digest {removed}")


@pytest.mark.parametrize("name", sorted(DRIVER_LOGS))
def test_an_empty_list_refuses_every_driver(name: str) -> None:
    log = Log(name)
    reference = {**_proposal(name), "driver_digests": []}
    expected = ["tpm.boot.unexpected_driver"] * DRIVER_LOGS[name]
    assert _codes(log.build(), reference) == expected


def _with_driver(kind: int = Ev.EV_EFI_BOOT_SERVICES_DRIVER) -> bytes:
    """NO_DRIVERS with a real driver (DONOR's first) loaded before PCR2's separator."""
    host, donor = Log(NO_DRIVERS), Log(DONOR)
    driver = next(e for e in donor.log.events if e.pcr == 2 and e.event_type in DRIVER_TYPES)
    separator = next(e for e in host.log.events if e.pcr == 2)
    assert separator.event_type == Ev.EV_SEPARATOR
    event = _event(2, kind, dict(driver.digests), driver.data)
    return host.build({separator.index: event + host.chunks[separator.index]})


def test_a_driver_on_a_host_without_drivers_is_refused() -> None:
    reference = _proposal(NO_DRIVERS)  # driver_digests: []
    assert _codes(_with_driver(), reference) == ["tpm.boot.unexpected_driver"]


def test_without_the_key_pcr2_is_not_read_as_before() -> None:
    """Old references keep working: the gap the key closes is still there without it."""
    reference = _proposal(NO_DRIVERS)
    del reference["driver_digests"]
    assert load_boot_reference(reference).driver_digests is None
    assert _codes(Log(NO_DRIVERS).build(), reference) == []
    assert _codes(_with_driver(), reference) == []
    # Nor is PCR2 needed: unverified, it is not a reason.
    assert _codes(Log(NO_DRIVERS).build(), reference, without=2) == []


@pytest.mark.parametrize(
    "kind",
    [
        Ev.EV_EFI_RUNTIME_SERVICES_DRIVER,
        Ev.EV_EFI_PLATFORM_FIRMWARE_BLOB,
        Ev.EV_EFI_PLATFORM_FIRMWARE_BLOB2,
        Ev.EV_POST_CODE,  # the type is not hashed: a retyped driver still counts
        Ev.EV_NONHOST_INFO,
    ],
    ids=lambda kind: f"{kind:#x}",
)
def test_a_driver_is_refused_whatever_type_the_log_gives_it(kind: int) -> None:
    assert _codes(_with_driver(kind), _proposal(NO_DRIVERS)) == ["tpm.boot.unexpected_driver"]


def test_pcr2_must_be_verified_with_the_key() -> None:
    log, reference = Log(NO_DRIVERS), _proposal(NO_DRIVERS)
    reasons = _reasons(log.build(), reference, without=2)
    assert [(r.code, r.detail) for r in reasons] == [
        ("tpm.boot.pcr_unverified", "PCR2 did not replay to a quoted value")
    ]


# --- quoting: PCR2 must be signed for ---------------------------------------------------


def _replayed_check(raw: bytes, bank: str, quoted: tuple[int, ...]) -> BootLogCheck:
    """What check_boot_log returns for a quote of ``quoted`` that the log replays to."""
    log = parse_event_log(raw)
    replayed = replay(log, bank=bank)
    verified = tuple(sorted(set(quoted) & set(replayed)))
    return BootLogCheck(
        (), frozenset({CHECK_BOOT_LOG_REPLAY}), {bank: verified}, log, {bank: quoted}
    )


ALL_BUT_PCR2 = (0, 1, 3, 4, 5, 6, 7, 8, 9, 12)


@pytest.mark.parametrize("name", ["python3-uefi-eventlog/sr645__rk049-s26.bin", NO_DRIVERS])
def test_the_key_needs_pcr2_quoted(name: str) -> None:
    log, reference = Log(name), _proposal(name)
    loaded = load_boot_reference(reference)
    assert 2 in reference_pcrs(loaded)["sha256"]  # what a group's hosts are asked for
    quoted = tuple(sorted((*ALL_BUT_PCR2, 2)))
    assert appraise_boot_log(_replayed_check(log.build(), "sha256", quoted), loaded) == (
        frozenset({CHECK_BOOT_REFERENCE}),
        (),
    )
    checks, reasons = appraise_boot_log(
        _replayed_check(log.build(), "sha256", ALL_BUT_PCR2), loaded
    )
    assert checks == frozenset()
    assert [r.code for r in reasons] == ["tpm.boot.pcr_not_quoted"]
    assert "sha256 PCR 2:" in reasons[0].detail
    del reference["driver_digests"]  # as before: PCR2 need not be quoted
    without = load_boot_reference(reference)
    check = _replayed_check(log.build(), "sha256", ALL_BUT_PCR2)
    assert appraise_boot_log(check, without) == (frozenset({CHECK_BOOT_REFERENCE}), ())


# --- the document --------------------------------------------------------------------------


def _valid() -> dict[str, Any]:
    return _proposal(NO_DRIVERS)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ab" * 32, "driver_digests: expected a list"),
        (None, "driver_digests: expected a list"),
        ({"ab" * 32: True}, "driver_digests: expected a list"),
        ([1], "driver_digests: 1 is not 32 bytes of hex"),
        ([None], "driver_digests: None is not 32 bytes of hex"),
        (["xyz"], "driver_digests: 'xyz' is not 32 bytes of hex"),
        (["zz" * 32], f"driver_digests: '{'zz' * 32}' is not 32 bytes of hex"),
        (["ab" * 20], f"driver_digests: '{'ab' * 20}' is not 32 bytes of hex"),
        (["ab" * 33], f"driver_digests: '{'ab' * 33}' is not 32 bytes of hex"),
        (["ab" * 32, "AB" * 32], "driver_digests: duplicate entries"),
    ],
)
def test_bad_driver_digests_are_refused(value: object, message: str) -> None:
    doc = copy.deepcopy(_valid())
    doc["driver_digests"] = value
    with pytest.raises(BootReferenceError, match="^" + re.escape(message) + "$"):
        load_boot_reference(doc)


def test_driver_digests_are_in_the_references_bank() -> None:
    sha1 = _proposal("go-attestation/option_rom_eventlog")
    assert sha1["bank"] == "sha1" and len(sha1["driver_digests"][0]) == 40
    with pytest.raises(BootReferenceError, match=r"driver_digests: .* is not 20 bytes of hex"):
        load_boot_reference({**sha1, "driver_digests": ["ab" * 32]})
    loaded = load_boot_reference({**_valid(), "driver_digests": ["AB" * 32]})
    assert loaded.driver_digests == frozenset({"ab" * 32})  # lowercased, as the facts are
