"""A measured-boot log replayed against a real swtpm quote (verifier.evidence.tpm.boot_log_check).

The TPM measures with TPM2_PCR_Event; the log is what a firmware would have
written for those measurements (verifier.demo.boot_log). Each mutation of the
log, or a measurement it leaves out, must be named.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from agent.collectors.tpm import Tpm
from verifier.demo.boot_log import build_event_log
from verifier.evidence.tpm.authenticate import AuthenticatedQuote, authenticate_quote
from verifier.evidence.tpm.boot_log_check import CHECK_BOOT_LOG_REPLAY, check_boot_log
from verifier.evidence.tpm.parse import parse_tpm2b_public

AK_HANDLE = 0x81010002
MEASUREMENTS = ((0, b"firmware: test UEFI"), (4, b"bootloader: shimx64.efi"), (7, b"db=test"))
SELECTION = {"sha256": list(range(11))}


@pytest.fixture(scope="module")
def tpm(swtpm_factory_module: Any) -> Tpm:
    tpm = Tpm(swtpm_factory_module().tcti)
    for pcr, data in MEASUREMENTS:
        tpm.extend_pcr(pcr, data)
    tpm.extend_pcr(10, b"an IMA measurement: not the boot log's to explain")
    return tpm


def _quote(tpm: Tpm) -> AuthenticatedQuote:
    ak = parse_tpm2b_public(tpm.ensure_ak(AK_HANDLE))
    nonce = secrets.token_bytes(32)
    quote = tpm.quote(ak_handle=AK_HANDLE, qualifying_data=nonce, selection=SELECTION)
    return authenticate_quote(
        attest=quote.attest,
        signature=quote.signature,
        ak=ak,
        expected_qualifying_data=nonce,
        required_pcrs=SELECTION,
        reported_pcrs=quote.pcrs,
        previous_clock=None,
    )


def test_the_log_of_what_was_measured_replays(tpm: Tpm) -> None:
    result = check_boot_log(build_event_log(MEASUREMENTS), _quote(tpm))
    assert result.reasons == ()
    assert result.checks_run == {CHECK_BOOT_LOG_REPLAY} and result.passed
    assert result.verified_pcrs == {"sha256": (0, 4, 7)}


@pytest.mark.parametrize(
    ("measurements", "mismatched"),
    [
        pytest.param(MEASUREMENTS[:2], "PCR7", id="a measurement left out"),
        pytest.param((*MEASUREMENTS, (4, b"grubx64.efi")), "PCR4", id="an event never measured"),
        pytest.param(
            ((0, b"firmware: test UEFI"), (4, b"bootloader: evil.efi"), (7, b"db=test")),
            "PCR4",
            id="another digest",
        ),
        pytest.param(tuple(reversed(MEASUREMENTS[:2])) + MEASUREMENTS[2:], None, id="reordered"),
    ],
)
def test_a_log_that_does_not_match_the_quote_is_named(
    tpm: Tpm, measurements: tuple[tuple[int, bytes], ...], mismatched: str | None
) -> None:
    result = check_boot_log(build_event_log(measurements), _quote(tpm))
    if mismatched is None:
        # Events of different PCRs may come in any order: replay is per PCR.
        assert result.passed
        return
    assert [r.code for r in result.reasons] == ["tpm.eventlog.replay_mismatch"]
    assert f"sha256 {mismatched}:" in result.reasons[0].detail
    assert not result.passed


def test_events_in_pcrs_the_quote_does_not_cover_are_unverified(tpm: Tpm) -> None:
    log = build_event_log((*MEASUREMENTS, (14, b"MokList: not quoted")))
    result = check_boot_log(log, _quote(tpm))
    assert result.passed
    assert 14 not in result.verified_pcrs["sha256"]


def test_garbage_is_named(tpm: Tpm) -> None:
    garbage = check_boot_log(b"\x00" * 40, _quote(tpm))
    assert [r.code for r in garbage.reasons] == ["tpm.eventlog.malformed"]
    truncated = check_boot_log(build_event_log(MEASUREMENTS)[:-3], _quote(tpm))
    assert [r.code for r in truncated.reasons] == ["tpm.eventlog.malformed"]
