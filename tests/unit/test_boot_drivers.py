"""PCR2 (UEFI drivers, option ROMs, firmware blobs) in measured-boot references.

Without Secure Boot nothing else refuses a driver the firmware loads from a
Driver#### variable or an option ROM, and a reference over facts never looked at
PCR2. ``driver_digests`` lists every digest PCR2 may carry. The logs are real
ones with driver events (read in place from the shared vectors); the attacks add
or change one driver event, or leave PCR2 out of the quote.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_boot_pcr8_pcr9_completeness import Log, _event
from tests.vectors import vectors_dir
from verifier.boot_reference_cli import reference_document
from verifier.cli import main
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
from verifier.evidence.tpm.event_quirks import QUIRKS
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
# Real logs with PCR2 driver events -> how many PCR2 events besides the separator
# (PROVENANCE: option ROMs, NICs, RAID).
DRIVER_LOGS = {
    "go-attestation/option_rom_eventlog": 1,  # SHA-1 only
    "python3-uefi-eventlog/inspur__inspur.bin": 7,
    "python3-uefi-eventlog/sr645__rk049-s26.bin": 8,
    "keylime/binary_bios_measurements": 3,
    # A runtime driver, and two events after the separator (a vendor type among them)
    # that its quirk permits.
    "rust-keylime/uefi_log.bin": 8,
}
RUST_KEYLIME = "rust-keylime/uefi_log.bin"
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
    """(index, digest) of each PCR2 event but the separator, read straight from the log."""
    return [
        (e.index, e.digests[bank].hex())
        for e in log.log.events
        if e.pcr == 2 and e.event_type != Ev.EV_SEPARATOR
    ]


# --- proposals -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "count"), sorted(DRIVER_LOGS.items()))
def test_a_proposal_lists_exactly_its_logs_drivers_and_affirms_it(name: str, count: int) -> None:
    log, reference = Log(name), _proposal(name)
    events = _driver_events(log, reference["bank"])
    assert len(events) == count
    assert reference["driver_digests"] == list(dict.fromkeys(digest for _, digest in events))
    assert _reasons(log.build(), reference) == []


def test_drivers_after_the_separator_and_of_a_vendor_type_are_proposed_with_their_quirk() -> None:
    log, reference = Log(RUST_KEYLIME), _proposal(RUST_KEYLIME)
    boot, runtime = Ev.EV_EFI_BOOT_SERVICES_DRIVER, Ev.EV_EFI_RUNTIME_SERVICES_DRIVER
    pcr2 = [(e.index, e.event_type) for e in log.log.events if e.pcr == 2]
    assert pcr2 == [
        *((index, boot) for index in range(13, 18)),
        (18, runtime),
        (37, Ev.EV_SEPARATOR),
        (42, 0x8401),  # a vendor's type, after the separator
        (44, boot),  # after the separator
    ]
    digests = [e.digests["sha256"].hex() for e in log.log.events if e.pcr == 2]
    assert reference["driver_digests"] == digests[:6] + digests[7:]  # all distinct
    assert reference["allowed_quirks"] == [
        "pcr1_config_after_separator",
        "pcr2_driver_after_separator",
    ]
    assert _reasons(log.build(), reference) == []
    # The quirk is what lets events 42 and 44 stand after the separator ...
    strict = {**reference, "allowed_quirks": ["pcr1_config_after_separator"]}
    assert [(r.code, r.detail.split(":")[0]) for r in _reasons(log.build(), strict)] == [
        ("tpm.eventlog.quirk.pcr2_driver_after_separator", "events 42, 44")
    ]
    # ... and the vendor-typed event is a driver like any other.
    vendor = {**reference, "driver_digests": digests[:6] + digests[8:]}
    assert [(r.code, r.detail) for r in _reasons(log.build(), vendor)] == [
        (
            "tpm.boot.unexpected_driver",
            f"event 42 (PCR2 0x00008401, the type as logged): digest {digests[7]}",
        )
    ]


def test_a_host_without_drivers_is_proposed_none() -> None:
    log, reference = Log(NO_DRIVERS), _proposal(NO_DRIVERS)
    assert [e.event_type for e in log.log.events if e.pcr == 2] == [Ev.EV_SEPARATOR]
    assert reference["driver_digests"] == []
    assert load_boot_reference(reference).driver_digests == frozenset()
    assert _codes(log.build(), reference) == []


PCR2_UNVERIFIED = (
    "PCR2 was not verified (no sha256 PCR2 value to replay it to): the proposal lists no "
    "driver_digests, so the reference will not appraise UEFI drivers"
)


def _pcrs_json(directory: Path, path: Path, *, without: int | None = None) -> Path:
    """A PCRS.json of the values ``path`` replays to in sha256 (less PCR ``without``)."""
    pcrs = replay(parse_event_log(path.read_bytes()), bank="sha256")
    values = {str(pcr): value.hex() for pcr, value in pcrs.items() if pcr != without}
    given = directory / f"pcrs-without-{without}.json"
    given.write_text(json.dumps({"pcrs": {"sha256": values}}))
    return given


def test_no_list_is_proposed_when_pcr2_is_not_verified_and_the_proposal_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --pcrs without PCR2 leaves it unread: [] would claim what nobody checked.

    An approver would then approve a reference that allows any driver: the warning
    goes where the proposal's other warnings go (stderr with --dry-run, before the
    proposal's id otherwise).
    """
    path = vectors_dir("tpm", "python3-uefi-eventlog", "sr645__rk049-s26.bin")
    without_pcr2 = _pcrs_json(tmp_path, path, without=2)
    document, warnings = reference_document(path, without_pcr2)
    assert "driver_digests" not in document
    assert warnings == [PCR2_UNVERIFIED]
    document, warnings = reference_document(path, _pcrs_json(tmp_path, path))
    assert len(document["driver_digests"]) == 3
    assert warnings == []
    argv = ["reference", "propose", "--group", "g", "--from-eventlog", str(path), "--dry-run"]
    assert main([*argv, "--pcrs", str(without_pcr2)]) == 0
    captured = capsys.readouterr()
    assert "driver_digests" not in json.loads(captured.out)
    assert captured.err == f"warning: {PCR2_UNVERIFIED}\n"


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


# A driver logged as PCR2's separator is not counted as a driver (boot_facts reads
# every PCR2 event *but* its separator), so the event checks must refuse it, with
# findings no reference can permit (only sha1_only and quirk findings are).
# (form, position, the real separator retyped) -> check_events' codes.
_SEPARATOR_DATA = bytes(4)
RETYPED_AS_SEPARATOR: dict[tuple[str, str, int | None], list[str]] = {
    # The driver's digest with a separator's data: the data does not hash to it.
    ("driver-digest", "before", None): [
        "tpm.eventlog.digest_mismatch",
        "tpm.eventlog.separator_duplicate",
    ],
    ("driver-digest", "after", None): [
        "tpm.eventlog.digest_mismatch",
        "tpm.eventlog.separator_duplicate",
    ],
    # No second separator either: the real one logged as something else.
    ("driver-digest", "before", Ev.EV_POST_CODE): [
        "tpm.eventlog.digest_mismatch",
        "tpm.eventlog.separator_lookalike",
        "tpm.eventlog.event_after_separator",
    ],
    # Data chosen to hash to the digest, but no separator's value.
    ("chosen-data", "before", None): [
        "tpm.eventlog.separator_lookalike",
        "tpm.eventlog.separator_duplicate",
    ],
    ("chosen-data", "after", None): ["tpm.eventlog.separator_duplicate"],
}


def _retyped_as_separator(form: str, position: str, real_type: int | None) -> tuple[bytes, str]:
    """NO_DRIVERS with a driver logged as an EV_SEPARATOR beside PCR2's real one."""
    host, donor = Log(NO_DRIVERS), Log(DONOR)
    driver = next(e for e in donor.log.events if e.pcr == 2 and e.event_type in DRIVER_TYPES)
    separator = next(e for e in host.log.events if e.pcr == 2)
    assert (separator.event_type, separator.data) == (Ev.EV_SEPARATOR, _SEPARATOR_DATA)
    if form == "driver-digest":
        digests, data = dict(driver.digests), _SEPARATOR_DATA
    else:
        data = driver.data  # its EFI_IMAGE_LOAD_EVENT: neither separator value
        digests = {bank: hashlib.new(bank, data).digest() for bank in driver.digests}
    fake = _event(2, Ev.EV_SEPARATOR, digests, data)
    real = host.chunks[separator.index]
    if real_type is not None:
        real = _event(2, real_type, dict(separator.digests), separator.data)
    chunk = fake + real if position == "before" else real + fake
    return host.build({separator.index: chunk}), digests["sha256"].hex()


@pytest.mark.parametrize(
    ("form", "position", "real_type"),
    sorted(RETYPED_AS_SEPARATOR, key=str),
    ids=lambda value: f"{value:#x}" if isinstance(value, int) else str(value),
)
def test_a_driver_logged_as_the_separator_is_refused_by_any_reference(
    form: str, position: str, real_type: int | None
) -> None:
    raw, digest = _retyped_as_separator(form, position, real_type)
    expected = RETYPED_AS_SEPARATOR[(form, position, real_type)]
    log = parse_event_log(raw)
    assert [r.code for r in check_events(log, "sha256")] == expected
    facts = extract_boot_facts(log, "sha256", verified_pcrs=replay(log, bank="sha256"))
    assert digest not in {d.digest for d in facts.drivers}  # unseen as a driver
    # The most permissive reference: every quirk, every PCR2 digest of the log.
    permissive = {
        **_proposal(NO_DRIVERS),
        "allowed_quirks": sorted(QUIRKS),
        "driver_digests": sorted({e.digests["sha256"].hex() for e in log.events if e.pcr == 2}),
    }
    assert _codes(raw, permissive) == expected
    # The proposal ([]) names the real separator too when it is logged as a driver.
    extra = ["tpm.boot.unexpected_driver"] if real_type is not None else []
    assert _codes(raw, _proposal(NO_DRIVERS)) == expected + extra


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
