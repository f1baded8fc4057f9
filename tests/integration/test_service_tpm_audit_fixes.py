"""The verifier service's TPM round against three audit findings, on real material.

1. A boot log that replays is run through the event checks whether or not the
   group has a measured-boot reference: the swtpm vectors' ``event-type-tampered``
   and ``event-data-tampered`` logs replay to their real quotes, and the service
   (``verifier.attestation.evaluate``, the round the stream runs) must reject
   them with a PCR-only reference, as ``evidence verify tpm`` does. A vendor quirk
   no reference has decided on (a real GCE COS quote and log) withholds
   affirmation without rejecting.
2. After a reboot the verifier still asks for the IMA list from the old boot's
   entry count; the chunk the agent sends from there cannot be replayed. The
   round is a warning (``tpm.ima.full_list_needed``), keeps nothing, and the next
   round asks from entry 0 and affirms.
3. An IMA entry extending a PCR the quote does not cover is refused
   (``tpm.ima.pcr_not_quoted``, the offline code) and progress does not move.

The same scenarios on the real gRPC stream against a live swtpm are in
test_service_tpm_audit_stream.py.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from agent.collectors.ima_log import entry_offset
from tests.integration.test_boot_reference_flow import _log, _reference
from tests.live_quote import live_quote
from tests.vectors import TPM_SWTPM_SETS, QuoteCase, go_quote_case, swtpm_quote_case
from tests.vectors import vectors_dir as vectors
from verifier.attestation import Outcome, evaluate
from verifier.challenges import IssuedChallenge
from verifier.demo.swtpm import SwtpmProcess
from verifier.evidence.tpm.boot_reference import load_boot_reference
from verifier.evidence.tpm.event_findings import CHECK_EVENTS
from verifier.evidence.tpm.ima import ImaEntry, parse_binary
from verifier.evidence.tpm.ima_encode import encode_binary
from verifier.evidence.tpm.ima_policy import RuntimePolicy, load_runtime_policy
from verifier.evidence.tpm.ima_round import CHECK_IMA_POLICY, CHECK_IMA_REPLAY, ImaKept
from verifier.evidence.tpm.parse import parse_quote_attest
from verifier.store import HostRecord, HostStatus, ReferenceSet
from verifier.verdict import Tier
from weightgate.v1 import attestation_pb2, common_pb2

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TAMPERED = {
    "event-type-tampered": "tpm.eventlog.event_after_separator",
    "event-data-tampered": "tpm.eventlog.ipl_digest_mismatch",
}
GCE = "go-tpm-tools/attestations/gce-cos-85-nonce9009"
SHIM_QUIRK = "tpm.eventlog.quirk.shim_authority_padding"


# --- the service's round on the shared vectors --------------------------------------


def _round(
    case: QuoteCase,
    *,
    event_log: bytes | None = None,
    boot_reference: dict[str, Any] | None = None,
    ima: attestation_pb2.ImaLog | None = None,
    ima_policy: RuntimePolicy | None = None,
    ima_kept: ImaKept | None = None,
    reference: dict[str, dict[int, bytes]] | None = None,
) -> Outcome:
    """``evaluate`` as the stream calls it, for a host enrolled with the vector's AK and
    a group whose PCR reference is (by default) the quote's own PCRs 0-7 in each bank."""
    ak = (
        case.ak_public
        if case.ak_is_tpm2b
        else struct.pack(">H", len(case.ak_public)) + case.ak_public
    )
    selection = {s.hash_algorithm: s.pcrs for s in parse_quote_attest(case.attest).pcr_selection}
    host = HostRecord(
        host_id="h", group="g", status=HostStatus.TRUSTED, ek_public=None, ek_certificate=None,
        ak_public=ak, ak_name=None, registered_at=NOW, enrolled_at=NOW,
        last_attestation_at=None, last_clock=None, last_reasons=(),
    )  # fmt: skip
    challenge = IssuedChallenge("c", "h", case.nonce, case.nonce, selection, expires_at=0.0)
    pcrs = {bank: {p: case.pcrs[bank][p] for p in pcrs} for bank, pcrs in selection.items()}
    evidence = attestation_pb2.Evidence(
        challenge_id="c",
        tpm=attestation_pb2.TpmQuote(
            attest=case.attest,
            signature=case.signature,
            pcrs=[common_pb2.PcrBank(hash_algorithm=b, values=v) for b, v in pcrs.items()],
        ),
    )
    if event_log is not None:
        evidence.boot_log.event_log = event_log
    if ima is not None:
        evidence.ima.CopyFrom(ima)
    if reference is None:
        reference = {b: {p: v for p, v in values.items() if p < 8} for b, values in pcrs.items()}
    return evaluate(
        host=host,
        challenge=challenge,
        evidence=evidence,
        reference=ReferenceSet("g", reference, NOW),
        consumed_qualifying_data=(),
        allow_sha1_signatures=False,
        boot_reference=None if boot_reference is None else load_boot_reference(boot_reference),
        ima_policy=ima_policy,
        ima_kept=ima_kept,
    )


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_an_honest_log_is_event_checked_without_a_boot_reference(name: str) -> None:
    outcome = _round(swtpm_quote_case(name), event_log=_log(name))
    assert outcome.verdict.tier is Tier.AFFIRMING, outcome.verdict.reasons
    assert {"tpm.eventlog.replay", CHECK_EVENTS} <= outcome.verdict.checks_run


@pytest.mark.parametrize("variant", sorted(TAMPERED))
@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_a_tampered_log_that_replays_is_rejected_with_a_pcr_only_reference(
    name: str, variant: str
) -> None:
    outcome = _round(swtpm_quote_case(name), event_log=_log(name, variant))
    verdict = outcome.verdict
    assert verdict.tier is Tier.CONTRAINDICATED
    assert set(verdict.reason_codes()) == {TAMPERED[variant]}
    assert "tpm.eventlog.replay" in verdict.checks_run, "it replays: only the events betray it"
    assert CHECK_EVENTS not in verdict.checks_run


def _live_case(start: Callable[..., SwtpmProcess], name: str, variant: str | None) -> QuoteCase:
    """``name``'s log (or a variant's) replayed into a swtpm and quoted over the PCRs
    the verifier asks a group with a boot reference for (0-9 and 12)."""
    live = live_quote(
        start,
        _log(name, variant),
        banks=("sha1", "sha256"),
        selection={"sha256": [*range(10), 12]},
    )
    return QuoteCase(live.attest, live.signature, live.ak, True, live.nonce, live.pcrs, {})


@pytest.mark.swtpm
@pytest.mark.parametrize("variant", sorted(TAMPERED))
def test_with_a_boot_reference_a_finding_is_reported_once(
    swtpm_factory: Callable[..., SwtpmProcess], variant: str
) -> None:
    name = "swtpm-rsa-sha1sha256-loc0"  # reproducible in a fresh swtpm (locality 0)
    honest_case = _live_case(swtpm_factory, name, None)
    honest = _round(honest_case, event_log=_log(name), boot_reference=_reference(name))
    assert honest.verdict.tier is Tier.AFFIRMING, honest.verdict.reasons
    assert {CHECK_EVENTS, "tpm.boot.reference"} <= honest.verdict.checks_run
    outcome = _round(
        _live_case(swtpm_factory, name, variant),
        event_log=_log(name, variant),
        boot_reference=_reference(name),
    )
    assert outcome.verdict.tier is Tier.CONTRAINDICATED
    assert outcome.verdict.reason_codes().count(TAMPERED[variant]) == 1, outcome.verdict.reasons


def _gce(quote: str = "quote_sha256") -> tuple[QuoteCase, bytes]:
    return go_quote_case(GCE, quote), (
        vectors("tpm", *GCE.split("/")) / "eventlog.bin"
    ).read_bytes()


def test_a_quirk_no_reference_decided_on_withholds_affirmation() -> None:
    case, log = _gce()
    outcome = _round(case, event_log=log)
    assert outcome.verdict.tier is Tier.WARNING
    assert outcome.verdict.reason_codes() == (SHIM_QUIRK,)
    assert {"tpm.eventlog.replay", CHECK_EVENTS} <= outcome.verdict.checks_run
    # Without the log nothing is interpreted, so nothing is withheld: the PCRs match.
    assert _round(case).verdict.tier is Tier.AFFIRMING


def test_a_quirk_does_not_soften_a_rejection() -> None:
    case, log = _gce()
    other = {"sha256": {0: bytes(32)}}
    verdict = _round(case, event_log=log, reference=other).verdict
    assert verdict.tier is Tier.CONTRAINDICATED
    assert verdict.reason_codes() == ("tpm.pcr.mismatch", SHIM_QUIRK)


# --- IMA rounds on the vectors' real lists --------------------------------------------


def _entries(name: str) -> tuple[ImaEntry, ...]:
    return parse_binary(
        vectors("tpm", name, "ima", "binary_runtime_measurements").read_bytes()
    ).entries


def _ima_policy(entries: tuple[ImaEntry, ...]) -> RuntimePolicy:
    digests = {
        e.name: [f"{e.digest_alg}:{e.digest.hex()}"]
        for e in entries[1:]
        if not e.is_violation and e.name is not None and e.digest is not None
    }
    doc = {"version": 1, "violations": "tolerate", "digests": digests}
    return load_runtime_policy(json.dumps(doc))


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_after_a_reboot_a_chunk_from_the_old_count_is_a_warning_not_a_failure(name: str) -> None:
    case, entries = swtpm_quote_case(name), _entries(name)
    reset_count = parse_quote_attest(case.attest).clock_info.reset_count
    stale = ImaKept(reset_count - 1, 3, {"sha256": b"\x11" * 32, "sha384": b"\x11" * 48})
    raw = encode_binary(entries)
    offset = entry_offset(raw, 3)
    assert offset is not None, "the new boot's list is long enough: the agent sends from 3"
    chunk = attestation_pb2.ImaLog(entries=raw[offset:], first_entry=3)
    outcome = _round(case, ima=chunk, ima_policy=_ima_policy(entries), ima_kept=stale)
    assert outcome.verdict.tier is Tier.WARNING
    assert outcome.verdict.reason_codes() == ("tpm.ima.full_list_needed",)
    assert not {CHECK_IMA_REPLAY, CHECK_IMA_POLICY} & outcome.verdict.checks_run
    assert outcome.ima_kept is None, "nothing was replayed, so nothing is kept"
    # The same boot's whole list, as the next round asks for it, affirms.
    whole = attestation_pb2.ImaLog(entries=raw, first_entry=0)
    again = _round(case, ima=whole, ima_policy=_ima_policy(entries), ima_kept=stale)
    assert again.verdict.tier is Tier.AFFIRMING, again.verdict.reasons
    assert again.ima_kept is not None and again.ima_kept.reset_count == reset_count


@pytest.mark.parametrize(
    ("pcr", "code"), [(11, "tpm.ima.pcr_not_quoted"), (14, "tpm.ima.pcr_unsupported")]
)
def test_an_ima_entry_outside_pcr10_is_refused(pcr: int, code: str) -> None:
    name = "swtpm-ecc-sha256-loc3"
    case, entries = swtpm_quote_case(name), _entries(name)
    made_up = [*entries[:3], replace(entries[2], pcr=pcr), *entries[3:]]
    listed = encode_binary([replace(e, index=i) for i, e in enumerate(made_up)])
    ima = attestation_pb2.ImaLog(entries=listed, first_entry=0)
    outcome = _round(case, ima=ima, ima_policy=_ima_policy(entries))
    assert outcome.verdict.tier is Tier.CONTRAINDICATED
    assert outcome.verdict.reason_codes() == (code,)
    assert f"PCR {pcr} (first at entry 3)" in outcome.verdict.reasons[0].detail
    assert outcome.ima_kept is None
