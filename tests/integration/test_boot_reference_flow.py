"""Measured-boot references end to end on real swtpm vector sets.

The flow the verifier runs each round: authenticate the quote, replay the boot
log against it, then appraise the facts from verified PCRs against the group's
reference. The reference is the one `weightgate reference propose
--from-eventlog` builds from a known-good host; proposed through the operator
API, it is what the verifier then holds the group's hosts to.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.live_quote import live_quote
from tests.vectors import TPM_SWTPM_SETS, swtpm_quote_case, variant_file, vectors_dir
from tests.verifier_harness import InsecureCli, running_verifier
from verifier.boot_reference_cli import reference_document
from verifier.demo.swtpm import SwtpmProcess
from verifier.evidence.tpm.authenticate import AuthenticatedQuote, authenticate_quote
from verifier.evidence.tpm.boot_appraisal import CHECK_BOOT_REFERENCE, appraise_boot_log
from verifier.evidence.tpm.boot_facts import extract_boot_facts
from verifier.evidence.tpm.boot_log_check import check_boot_log
from verifier.evidence.tpm.boot_reference import load_boot_reference
from verifier.evidence.tpm.event_checks import check_events
from verifier.evidence.tpm.event_types import EventType as Ev
from verifier.evidence.tpm.eventlog import parse_event_log
from verifier.evidence.tpm.parse import parse_quote_attest, parse_tpm2b_public
from verifier.evidence.tpm.replay import replay
from verifier.operator_cli import CliError
from weightgate.v1 import operator_pb2


def _quote(name: str, variant: str | None = None) -> AuthenticatedQuote:
    case = swtpm_quote_case(name, variant)
    selection = {s.hash_algorithm: s.pcrs for s in parse_quote_attest(case.attest).pcr_selection}
    return authenticate_quote(
        attest=case.attest,
        signature=case.signature,
        ak=parse_tpm2b_public(case.ak_public),
        expected_qualifying_data=case.nonce,
        required_pcrs=selection,
        reported_pcrs=case.pcrs,
        previous_clock=None,
    )


def _log(name: str, variant: str | None = None) -> bytes:
    return variant_file(vectors_dir("tpm", name), "eventlog.bin", variant).read_bytes()


def _reference(name: str) -> dict[str, Any]:
    base = vectors_dir("tpm", name)
    document, warnings = reference_document(base / "eventlog.bin", base / "pcrs.json")
    # The swtpm sets' synthetic GRUB strings measure two more kernel_cmdline words
    # than their linux command has: the proposal allows that line too, and says so.
    assert [w.split(":")[0] for w in warnings] == [
        "linux command line allowed although no measured kernel_cmdline spells it"
    ]
    return document


# The set a fresh swtpm reproduces (locality 0, no H-CRTM), and the selection the
# verifier asks for when a group has a boot reference (boot_appraisal.reference_pcrs).
LIVE = "swtpm-rsa-sha1sha256-loc0"
REFERENCE_SELECTION = {"sha256": [*range(10), 12]}


def _live(start: Callable[..., SwtpmProcess], variant: str | None = None) -> AuthenticatedQuote:
    """The LIVE set's log (or a variant's) replayed into a swtpm and quoted over 0-9, 12."""
    quote = live_quote(
        start, _log(LIVE, variant), banks=("sha1", "sha256"), selection=REFERENCE_SELECTION
    )
    return quote.authenticated()


@pytest.mark.swtpm
def test_a_host_matches_the_reference_proposed_from_its_own_log(
    swtpm_factory: Callable[..., SwtpmProcess],
) -> None:
    quote = _live(swtpm_factory)
    # The live TPM holds exactly the PCRs the vector's own TPM reported.
    assert quote.pcrs["sha256"][7] == swtpm_quote_case(LIVE).pcrs["sha256"][7]
    check = check_boot_log(_log(LIVE), quote)
    assert check.passed, check.reasons
    checks, reasons = appraise_boot_log(check, load_boot_reference(_reference(LIVE)))
    assert reasons == ()
    assert checks == {CHECK_BOOT_REFERENCE}


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_a_quote_without_pcr12_cannot_vouch_for_the_command_line(name: str) -> None:
    # The vectors' own quotes cover sha256 0-10 and 14: the log replays, but PCR12
    # (systemd-stub's command line) is not quoted, so the facts are not appraised.
    check = check_boot_log(_log(name), _quote(name))
    assert check.passed, check.reasons
    checks, reasons = appraise_boot_log(check, load_boot_reference(_reference(name)))
    assert checks == frozenset()
    assert [r.code for r in reasons] == ["tpm.boot.pcr_not_quoted"]
    assert "PCR 12" in reasons[0].detail


@pytest.mark.swtpm
def test_another_hosts_boot_is_named_against_a_reference(
    swtpm_factory: Callable[..., SwtpmProcess],
) -> None:
    reference = load_boot_reference(_reference("swtpm-rsa-sha256sha384-hcrtm-sboff"))
    check = check_boot_log(_log(LIVE), _live(swtpm_factory))
    assert check.passed
    checks, reasons = appraise_boot_log(check, reference)
    assert checks == frozenset()
    assert {r.code for r in reasons} >= {"tpm.boot.certificate_not_allowed"}, reasons


@pytest.mark.swtpm
@pytest.mark.parametrize(
    ("variant", "code"),
    [
        ("event-data-tampered", "tpm.eventlog.ipl_digest_mismatch"),
        ("post-separator-injection", "tpm.eventlog.event_after_separator"),
    ],
)
def test_a_log_that_replays_but_breaks_the_rules_fails_the_reference(
    swtpm_factory: Callable[..., SwtpmProcess], variant: str, code: str
) -> None:
    check = check_boot_log(_log(LIVE, variant), _live(swtpm_factory, variant))
    assert check.passed, "these variants replay: only the event checks catch them"
    _, reasons = appraise_boot_log(check, load_boot_reference(_reference(LIVE)))
    assert code in {r.code for r in reasons}


def test_propose_refuses_a_log_that_does_not_match_its_pcrs(tmp_path: Path) -> None:
    base = vectors_dir("tpm", "swtpm-rsa-sha1sha256-loc0")
    other = vectors_dir("tpm", "swtpm-ecc-sha256-loc3")
    with pytest.raises(CliError, match="does not replay to"):
        reference_document(base / "eventlog.bin", other / "pcrs.json")
    _, warnings = reference_document(base / "eventlog.bin", None)
    assert warnings[0] == "no --pcrs: the log was not checked against a TPM's PCR values"
    assert [w.split(":")[0] for w in warnings[1:]] == [
        "linux command line allowed although no measured kernel_cmdline spells it"
    ]


def test_propose_through_the_api_and_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = vectors_dir("tpm", "swtpm-rsa-sha1sha256-loc0")
    with running_verifier(tmp_path, ek_ca_certificates=()) as verifier:
        cli = InsecureCli(verifier, capsys)
        code, out, err = cli(
            "reference", "propose", "--group", "gpu", "--from-eventlog",
            str(base / "eventlog.bin"), "--pcrs", str(base / "pcrs.json"),
        )  # fmt: skip
        assert code == 0, err
        # The plaintext harness needs no quorum; the proposal's warning comes first.
        assert out.startswith("warning: linux command line allowed"), out
        assert "\napplied at once" in out, out
        code, out, _ = cli("reference", "show-boot", "--group", "gpu")
        assert code == 0
        assert json.loads(out) == _reference("swtpm-rsa-sha1sha256-loc0")
        record = verifier.store.get_boot_reference("gpu")
        assert record is not None and record.proposal_id
        bad = operator_pb2.ProposeChangeRequest(
            change=operator_pb2.ProposedChange(
                boot_reference=operator_pb2.BootReferenceChange(
                    group="gpu", reference_json=b'{"kind": "something else"}'
                )
            )
        )
        with pytest.raises(grpc.RpcError) as refused:
            verifier.operator.ProposeChange(bad, timeout=10)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith("boot_reference.reference_json:")
        code, _, err = cli("reference", "show-boot", "--group", "nobody")
        assert code == 1 and "NOT_FOUND" in err


def test_propose_an_ima_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "policy.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"version": 1, "digests": {"/usr/bin/a": ["sha256:" + "ab" * 32]}}))
    bad.write_text(json.dumps({"version": 1, "digest": {}}))
    with running_verifier(tmp_path / "state", ek_ca_certificates=()) as verifier:
        cli = InsecureCli(verifier, capsys)
        code, _, err = cli("reference", "propose-ima", "--group", "gpu", "--policy", str(bad))
        assert code == 2 and "unknown keys" in err
        assert verifier.store.get_ima_policy("gpu") is None
        code, out, err = cli("reference", "propose-ima", "--group", "gpu", "--policy", str(good))
        assert code == 0, err
        assert "IMA runtime policy of group gpu replaced" in out
        record = verifier.store.get_ima_policy("gpu")
        assert record is not None and record.document == json.loads(good.read_text())


# --- PCR2: UEFI drivers (driver_digests) through a real quote ---------------------

# A real server log with 8 option-ROM driver events (3 digests), locality 0: a fresh
# swtpm reproduces its PCRs.
DRIVER_HOST = ("python3-uefi-eventlog", "sr645__rk049-s26.bin")


@pytest.fixture(scope="module")
def driver_host(
    swtpm_factory_module: Callable[..., SwtpmProcess], tmp_path_factory: pytest.TempPathFactory
) -> tuple[bytes, AuthenticatedQuote, dict[str, Any]]:
    """The log, its quote over 0-9 and 12, and the reference proposed from both."""
    path = vectors_dir("tpm", *DRIVER_HOST)
    raw = path.read_bytes()
    quote = live_quote(
        swtpm_factory_module, raw, banks=("sha1", "sha256"), selection=REFERENCE_SELECTION
    )
    directory = tmp_path_factory.mktemp("driver-host")
    quote.files(directory)
    document, _ = reference_document(path, directory / "pcrs.json")
    return raw, quote.authenticated(), document


@pytest.mark.swtpm
def test_a_host_with_drivers_matches_its_proposal(
    driver_host: tuple[bytes, AuthenticatedQuote, dict[str, Any]],
) -> None:
    raw, quote, document = driver_host
    assert len(document["driver_digests"]) == 3
    check = check_boot_log(raw, quote)
    assert check.passed, check.reasons
    assert 2 in check.verified_pcrs["sha256"]
    assert appraise_boot_log(check, load_boot_reference(document)) == (
        frozenset({CHECK_BOOT_REFERENCE}),
        (),
    )


@pytest.mark.swtpm
def test_a_driver_the_reference_does_not_list_fails_the_round(
    driver_host: tuple[bytes, AuthenticatedQuote, dict[str, Any]],
) -> None:
    raw, quote, document = driver_host
    removed = document["driver_digests"][-1]
    reference = {**document, "driver_digests": document["driver_digests"][:-1]}
    checks, reasons = appraise_boot_log(check_boot_log(raw, quote), load_boot_reference(reference))
    assert checks == frozenset()
    # The digest is loaded by four of the log's driver events (14, 15 and 16 too).
    assert [r.code for r in reasons] == ["tpm.boot.unexpected_driver"] * 4
    assert all(r.detail.endswith(f"digest {removed}") for r in reasons)
    assert reasons[0].detail.startswith("event 13 (PCR2 EV_EFI_BOOT_SERVICES_DRIVER")


@pytest.mark.swtpm
def test_driver_digests_need_pcr2_in_the_quote(
    swtpm_factory: Callable[..., SwtpmProcess],
    driver_host: tuple[bytes, AuthenticatedQuote, dict[str, Any]],
) -> None:
    raw, _, document = driver_host
    selection = {"sha256": [pcr for pcr in REFERENCE_SELECTION["sha256"] if pcr != 2]}
    quote = live_quote(swtpm_factory, raw, banks=("sha1", "sha256"), selection=selection)
    check = check_boot_log(raw, quote.authenticated())
    assert check.passed, check.reasons  # PCR2 replays, unquoted: nobody signed its drivers
    checks, reasons = appraise_boot_log(check, load_boot_reference(document))
    assert (checks, [r.code for r in reasons]) == (frozenset(), ["tpm.boot.pcr_not_quoted"])
    assert "sha256 PCR 2:" in reasons[0].detail
    without = {key: value for key, value in document.items() if key != "driver_digests"}
    assert appraise_boot_log(check, load_boot_reference(without)) == (
        frozenset({CHECK_BOOT_REFERENCE}),
        (),
    )


@pytest.mark.swtpm
def test_a_driver_logged_as_not_extended_fails_replay_against_the_true_pcr2(
    driver_host: tuple[bytes, AuthenticatedQuote, dict[str, Any]],
) -> None:
    """EV_NO_ACTION is never extended: hidden that way, a driver leaves PCR2 short."""
    raw, quote, document = driver_host
    log = parse_event_log(raw)
    driver = next(e for e in log.events if e.pcr == 2)
    assert (driver.index, driver.event_type) == (9, Ev.EV_EFI_BOOT_SERVICES_DRIVER)
    # TCG_PCR_EVENT2 starts with PCRIndex then EventType (both UINT32, little-endian).
    start = driver.offset + 4
    hidden = raw[:start] + struct.pack("<I", Ev.EV_NO_ACTION) + raw[start + 4 :]
    hidden_log = parse_event_log(hidden)
    assert hidden_log.events[driver.index].event_type == Ev.EV_NO_ACTION
    # Neither the event checks nor the facts see it any more: only replay can.
    assert check_events(hidden_log, "sha256") == check_events(log, "sha256")
    replayed = replay(hidden_log, bank="sha256")
    facts = extract_boot_facts(hidden_log, "sha256", verified_pcrs=replayed)
    assert [d.index for d in facts.drivers] == list(range(10, 17))
    check = check_boot_log(hidden, quote)
    assert [r.code for r in check.reasons] == ["tpm.eventlog.replay_mismatch"]
    detail = check.reasons[0].detail
    assert detail is not None
    assert detail.startswith(
        f"sha256 PCR2: quoted {quote.pcrs['sha256'][2].hex()}, log replays to "
    )
    assert not check.passed and check.verified_pcrs == {}
    # Nothing read from the log counts then: the reference is not even consulted.
    checks, reasons = appraise_boot_log(check, load_boot_reference(document))
    assert (checks, [r.code for r in reasons]) == (frozenset(), ["tpm.boot.log_unverified"])
