"""A boot log must explain every quoted boot PCR (0-9, 12), not only those it extends.

On the real GCE COS 85 quote (sha256 PCRs 0-23) and its log: leaving out all of
PCR8's GRUB commands, or all of PCR9's files, is a replay mismatch, although each
PCR the shortened log still extends replays; the non-zero PCRs 10 (IMA) and 17-22
(DRTM, all ones), which the log never touches, are not its to explain.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.vectors import go_quote_case, vectors_dir
from verifier.evidence.tpm.authenticate import AuthenticatedQuote, authenticate_quote
from verifier.evidence.tpm.boot_log_check import check_boot_log
from verifier.evidence.tpm.eventlog import parse_event_log
from verifier.evidence.tpm.eventlog_encode import encode_event_log
from verifier.evidence.tpm.parse import parse_tpmt_public

GCE = "go-tpm-tools/attestations/gce-cos-85-nonce9009"


def _quote() -> AuthenticatedQuote:
    case = go_quote_case(GCE, "quote_sha256")
    return authenticate_quote(
        attest=case.attest,
        signature=case.signature,
        ak=parse_tpmt_public(case.ak_public),
        expected_qualifying_data=case.nonce,
        required_pcrs={"sha256": range(24)},
        reported_pcrs=case.pcrs,
        previous_clock=None,
    )


def _log_without(pcr: int) -> bytes:
    log = parse_event_log((vectors_dir("tpm", *GCE.split("/")) / "eventlog.bin").read_bytes())
    kept = tuple(e for e in log.events if e.pcr != pcr)
    assert len(kept) < len(log.events)  # the real log does extend it
    return encode_event_log(replace(log, events=kept))


def test_the_whole_log_replays() -> None:
    raw = (vectors_dir("tpm", *GCE.split("/")) / "eventlog.bin").read_bytes()
    assert check_boot_log(raw, _quote()).passed


@pytest.mark.parametrize("pcr", [8, 9])
def test_leaving_out_all_of_a_boot_pcrs_events_is_a_mismatch(pcr: int) -> None:
    result = check_boot_log(_log_without(pcr), _quote())
    assert not result.passed
    assert [r.code for r in result.reasons] == ["tpm.eventlog.replay_mismatch"]
    assert f"sha256 PCR{pcr}: quoted " in result.reasons[0].detail
    assert result.reasons[0].detail.endswith("log replays to " + "00" * 32)


def test_other_pcrs_the_log_never_touches_are_not_its_to_explain() -> None:
    quote = _quote()
    untouched = [p for p, v in quote.pcrs["sha256"].items() if p > 9 and v != bytes(32)]
    assert 10 in untouched and 17 in untouched  # IMA's, and a DRTM PCR (all ones)
    raw = (vectors_dir("tpm", *GCE.split("/")) / "eventlog.bin").read_bytes()
    result = check_boot_log(raw, quote)
    assert result.passed and not set(untouched) & set(result.verified_pcrs["sha256"])
