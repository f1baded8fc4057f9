"""A simulated SEV-SNP confidential VM on the attestation stream, end to end.

Real swtpm, real gRPC, the agent's own SNP collection code over the devsim host (a
report signed by its VCEK, under a TEST ARK that this verifier trusts only because
the test configures it explicitly, the way ``insecure_test_roots`` does). The TPM
quote and the SNP report answer one challenge: the report's REPORT_DATA is derived
from the challenge nonce and the quote's exact bytes. The group's SNP policy is set
by proposal (no quorum in this harness).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.collectors.snp import snp_evidence_message
from agent.collectors.tpm import Tpm
from devsim.snp import create_snp_host, load_snp_host
from tests.integration.test_attestation_flow import (
    Stream,
    codes,
    enroll,
    evidence_for,
    set_reference_from,
)
from tests.verifier_harness import VerifierHarness, running_verifier
from verifier.config_snp import SnpConfig, snp_config
from weightgate.cvm_binding import snp_report_data
from weightgate.v1 import attestation_pb2, common_pb2, operator_pb2

GROUP, HOST = "cvm", "cvm-host"


def _snp_config(host_dir: Path) -> SnpConfig:
    # The same path as a config file's [verifier.snp] table: the TEST ARK (and the
    # ASK beside it, kept as a known intermediate), and a directory of VCEKs filed by
    # CHIP_ID and REPORTED_TCB for hosts that send none.
    host = load_snp_host(host_dir)
    vceks = host_dir / "vceks"
    vceks.mkdir()
    (vceks / f"{host.chip_id.hex()}-{host.tcb:016x}.der").write_bytes(host.vcek_der)
    config = snp_config(
        host_dir / "verifier.toml",
        "[verifier.snp]\n",
        {"insecure_test_roots": ["cert_chain.pem"], "vcek_dir": "vceks"},
        host_dir,
    )
    assert config is not None and config.test_roots_trusted
    assert len(config.intermediates) == 1
    return config


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, swtpm_factory_module: Any
) -> Iterator[tuple[VerifierHarness, Tpm, Path]]:
    process = swtpm_factory_module()
    tpm = Tpm(process.tcti)
    work = tmp_path_factory.mktemp("snp-stream")
    host_dir = work / "snp-host"
    create_snp_host(host_dir)
    state = work / "verifier"
    state.mkdir()
    with running_verifier(
        state, ek_ca_certificates=process.ek_ca_certificates, snp=_snp_config(host_dir)
    ) as verifier:
        verifier.operator.RegisterHost(operator_pb2.RegisterHostRequest(host_id=HOST, group=GROUP))
        set_reference_from(verifier, tpm, GROUP)
        change = operator_pb2.SnpPolicyChange(
            group=GROUP, policy_json=(host_dir / "snp_policy.json").read_bytes()
        )
        verifier.operator.ProposeChange(
            operator_pb2.ProposeChangeRequest(change=operator_pb2.ProposedChange(snp_policy=change))
        )
        yield verifier, tpm, host_dir


def _snp(host_dir: Path, nonce: bytes, attest: bytes) -> attestation_pb2.SnpEvidence:
    return snp_evidence_message(
        source="simulator",
        tsm_dir=None,
        simulator_dir=host_dir,
        report_data=snp_report_data(nonce, attest),
    )


def test_tpm_and_snp_evidence_answer_one_challenge(
    setup: tuple[VerifierHarness, Tpm, Path],
) -> None:
    verifier, tpm, host_dir = setup
    stream = Stream(verifier, HOST, enroll(verifier, tpm, HOST))
    try:
        challenge = stream.next_challenge()
        assert challenge.HasField("snp"), "a group with an SNP policy asks for the report"
        evidence = evidence_for(tpm, challenge)
        evidence.snp.CopyFrom(_snp(host_dir, challenge.nonce, evidence.tpm.attest))
        verdict = stream.answer(evidence)
        assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
        assert {"snp.attested", "snp.report.signature", "snp.chain", "snp.policy"} <= set(
            verdict.checks_run
        ), sorted(verdict.checks_run)
        first = evidence.snp

        # The same report replayed into the next round: its REPORT_DATA answers the
        # last challenge and quote, not this one.
        challenge = stream.next_challenge()
        evidence = evidence_for(tpm, challenge)
        evidence.snp.CopyFrom(first)
        verdict = stream.answer(evidence)
        assert codes(verdict) == ["snp.report.report_data_mismatch"], codes(verdict)
        assert "snp.attested" not in verdict.checks_run

        # A report made for another quote (this nonce, other quote bytes): refused.
        challenge = stream.next_challenge()
        evidence = evidence_for(tpm, challenge)
        evidence.snp.CopyFrom(_snp(host_dir, challenge.nonce, bytes(evidence.tpm.attest) + b"\0"))
        verdict = stream.answer(evidence)
        assert codes(verdict) == ["snp.report.report_data_mismatch"], codes(verdict)

        # One byte of the report changed: its signature no longer verifies.
        challenge = stream.next_challenge()
        evidence = evidence_for(tpm, challenge)
        good = _snp(host_dir, challenge.nonce, evidence.tpm.attest)
        tampered = bytearray(good.report)
        tampered[0x90] ^= 1  # inside MEASUREMENT
        good.report = bytes(tampered)
        evidence.snp.CopyFrom(good)
        verdict = stream.answer(evidence)
        assert codes(verdict) == ["snp.report.signature_invalid"], codes(verdict)

        # No report: the round fails naming why; then trust comes back.
        challenge = stream.next_challenge()
        evidence = evidence_for(tpm, challenge)
        evidence.snp.unavailable = "no configfs-tsm provider"
        verdict = stream.answer(evidence)
        assert codes(verdict) == ["snp.evidence.missing"], codes(verdict)

        challenge = stream.next_challenge()
        evidence = evidence_for(tpm, challenge)
        evidence.snp.CopyFrom(_snp(host_dir, challenge.nonce, evidence.tpm.attest))
        verdict = stream.answer(evidence)
        assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
    finally:
        stream.close()


def test_a_bare_report_is_verified_with_the_verifiers_own_vcek_and_ask(
    setup: tuple[VerifierHarness, Tpm, Path],
) -> None:
    """Hosts whose firmware holds no certificates send the report alone: the VCEK comes
    from vcek_dir (by CHIP_ID and REPORTED_TCB) and the ASK from the trust files."""
    verifier, tpm, host_dir = setup
    stream = Stream(verifier, HOST, enroll(verifier, tpm, HOST))
    try:
        challenge = stream.next_challenge()
        evidence = evidence_for(tpm, challenge)
        sent = _snp(host_dir, challenge.nonce, evidence.tpm.attest)
        evidence.snp.CopyFrom(attestation_pb2.SnpEvidence(report=sent.report))
        verdict = stream.answer(evidence)
        assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
        assert "snp.attested" in verdict.checks_run

        # A report whose CHIP_ID names no filed VCEK: named, not guessed.
        challenge = stream.next_challenge()
        evidence = evidence_for(tpm, challenge)
        report = bytearray(_snp(host_dir, challenge.nonce, evidence.tpm.attest).report)
        report[0x1A0] ^= 1  # CHIP_ID (signed: it could never verify anyway)
        evidence.snp.CopyFrom(attestation_pb2.SnpEvidence(report=bytes(report)))
        verdict = stream.answer(evidence)
        assert codes(verdict) == ["snp.evidence.missing"], codes(verdict)
    finally:
        stream.close()
