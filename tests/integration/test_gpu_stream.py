"""NVIDIA GPUs on the attestation stream: several simulated GPUs, end to end.

Real swtpm, real gRPC, the agent's own GPU collection code over the devsim fleet
(reports signed by the simulator's device keys, RIMs and OCSP responses by its test
roots), and a verifier that trusts those roots only because this test configures
``insecure_test_roots``-equivalent trust explicitly. The group's GPU policy is set
by proposal (no quorum in this harness).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from agent.collectors.gpu_evidence import gpu_evidence_message
from agent.collectors.tpm import Tpm
from devsim.nvidia import create_fleet
from tests.integration.test_attestation_flow import (
    Stream,
    codes,
    enroll,
    evidence_for,
    set_reference_from,
)
from tests.verifier_harness import VerifierHarness, running_verifier
from verifier.config_nvidia import NvidiaConfig
from verifier.evidence.nvidia.chain import spki_sha256
from verifier.evidence.nvidia.rim_store import FileRimStore
from weightgate.v1 import attestation_pb2, common_pb2, operator_pb2

GROUP, HOST = "gpu", "gpu-host"
GPUS = 3


def _nvidia_config(fleet: Path, work: Path) -> NvidiaConfig:
    device_root = x509.load_pem_x509_certificate((fleet / "trust" / "device_root.pem").read_bytes())
    rim_root = x509.load_pem_x509_certificate((fleet / "trust" / "rim_root.pem").read_bytes())
    store_dir = work / "rim-store"
    store_dir.mkdir(mode=0o700)
    store = FileRimStore(store_dir, pinned_roots=[rim_root])
    for xml in sorted((fleet / "rims").glob("*.xml")):
        store.import_bytes(xml.read_bytes(), at=datetime.now(UTC), rim_id=xml.stem)
    return NvidiaConfig(
        device_roots=(device_root,),
        device_spki_pins=frozenset({spki_sha256(device_root)}),
        rim_roots=(rim_root,),
        rim_store=store_dir,
        ocsp_dir=fleet / "ocsp",
        ocsp_max_age=timedelta(days=7),
        ocsp_stale_grace=timedelta(0),
        test_roots_trusted=True,
    )


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, swtpm_factory_module: Any
) -> Iterator[tuple[VerifierHarness, Tpm, Path]]:
    process = swtpm_factory_module()
    tpm = Tpm(process.tcti)
    work = tmp_path_factory.mktemp("gpu-stream")
    fleet = work / "fleet"
    create_fleet(fleet, gpus=GPUS)
    nvidia = _nvidia_config(fleet, work)
    state = work / "verifier"
    state.mkdir()
    with running_verifier(
        state, ek_ca_certificates=process.ek_ca_certificates, nvidia=nvidia
    ) as verifier:
        verifier.operator.RegisterHost(operator_pb2.RegisterHostRequest(host_id=HOST, group=GROUP))
        set_reference_from(verifier, tpm, GROUP)
        change = operator_pb2.GpuPolicyChange(
            group=GROUP, policy_json=(fleet / "gpu_policy.json").read_bytes()
        )
        verifier.operator.ProposeChange(
            operator_pb2.ProposeChangeRequest(change=operator_pb2.ProposedChange(gpu_policy=change))
        )
        yield verifier, tpm, fleet


def _gpu(fleet: Path, challenge: attestation_pb2.Challenge, attest: bytes) -> Any:
    return gpu_evidence_message(
        source="simulator",
        simulator_dir=fleet,
        challenge_nonce=bytes(challenge.nonce),
        tpm_attest=attest,
    )


def _answer(
    stream: Stream, tpm: Tpm, fleet: Path, *, gpu: attestation_pb2.GpuEvidence | None = None
) -> tuple[common_pb2.Verdict, attestation_pb2.Evidence]:
    challenge = stream.next_challenge()
    assert challenge.HasField("gpu"), "a group with a GPU policy asks for GPU evidence"
    evidence = evidence_for(tpm, challenge)
    evidence.gpu.CopyFrom(gpu if gpu is not None else _gpu(fleet, challenge, evidence.tpm.attest))
    return stream.answer(evidence), evidence


def test_every_simulated_gpu_attests_through_the_stream(
    setup: tuple[VerifierHarness, Tpm, Path],
) -> None:
    verifier, tpm, fleet = setup
    stream = Stream(verifier, HOST, enroll(verifier, tpm, HOST))
    try:
        verdict, evidence = _answer(stream, tpm, fleet)
        assert len(evidence.gpu.devices) == GPUS
        assert evidence.gpu.cc_state == "on"
        assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
        checks = set(verdict.checks_run)
        assert {"nvidia.gpu.attested", "nvidia.report.nonce", "nvidia.chain", "nvidia.ocsp"} <= (
            checks
        ), sorted(checks)

        # The same GPU reports replayed into the next round: their nonces were
        # derived from the last challenge and quote, so every GPU fails, by name.
        verdict, _ = _answer(stream, tpm, fleet, gpu=evidence.gpu)
        assert verdict.tier == common_pb2.TIER_CONTRAINDICATED
        assert codes(verdict).count("nvidia.report.nonce_mismatch") == GPUS, codes(verdict)
        assert "nvidia.gpu.attested" not in verdict.checks_run

        # Two GPUs' evidence swapped: each answers the other position's nonce.
        challenge = stream.next_challenge()
        fresh = evidence_for(tpm, challenge)
        gpu = _gpu(fleet, challenge, fresh.tpm.attest)
        first, second = (attestation_pb2.GpuDevice(), attestation_pb2.GpuDevice())
        first.CopyFrom(gpu.devices[0])
        second.CopyFrom(gpu.devices[1])
        gpu.devices[0].CopyFrom(second)
        gpu.devices[1].CopyFrom(first)
        fresh.gpu.CopyFrom(gpu)
        verdict = stream.answer(fresh)
        assert codes(verdict).count("nvidia.report.nonce_mismatch") == 2, codes(verdict)

        # GPU evidence made for another quote (same nonce, another attest): refused.
        challenge = stream.next_challenge()
        fresh = evidence_for(tpm, challenge)
        other_quote = bytes(fresh.tpm.attest) + b"\x00"
        fresh.gpu.CopyFrom(_gpu(fleet, challenge, other_quote))
        verdict = stream.answer(fresh)
        assert codes(verdict).count("nvidia.report.nonce_mismatch") == GPUS, codes(verdict)

        # No GPU evidence: the round fails naming why, and trust comes back after.
        challenge = stream.next_challenge()
        fresh = evidence_for(tpm, challenge)
        fresh.gpu.unavailable = "no NVIDIA GPU: nvmlDeviceGetCount returned 0"
        verdict = stream.answer(fresh)
        assert codes(verdict) == ["nvidia.evidence.missing"], codes(verdict)

        verdict, _ = _answer(stream, tpm, fleet)
        assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
    finally:
        stream.close()


def test_a_group_without_gpu_policy_is_not_asked(
    setup: tuple[VerifierHarness, Tpm, Path],
) -> None:
    verifier, tpm, _ = setup
    verifier.operator.RegisterHost(
        operator_pb2.RegisterHostRequest(host_id="cpu-host", group="cpu")
    )
    set_reference_from(verifier, tpm, "cpu")
    stream = Stream(verifier, "cpu-host", enroll(verifier, tpm, "cpu-host"))
    try:
        challenge = stream.next_challenge()
        assert not challenge.HasField("gpu")
        verdict = stream.answer(evidence_for(tpm, challenge))
        assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
        assert "nvidia.gpu.attested" not in verdict.checks_run
    finally:
        stream.close()


def test_the_fleet_policy_is_stored_as_proposed(setup: tuple[VerifierHarness, Tpm, Path]) -> None:
    verifier, _, fleet = setup
    stored = verifier.store.get_gpu_policy(GROUP)
    assert stored is not None
    assert dict(stored.document) == json.loads((fleet / "gpu_policy.json").read_text())


def test_a_gpu_left_out_fails_the_device_count(setup: tuple[VerifierHarness, Tpm, Path]) -> None:
    verifier, tpm, fleet = setup
    original = (fleet / "gpu_policy.json").read_bytes()

    def propose(document: bytes) -> None:
        change = operator_pb2.GpuPolicyChange(group=GROUP, policy_json=document)
        verifier.operator.ProposeChange(
            operator_pb2.ProposeChangeRequest(change=operator_pb2.ProposedChange(gpu_policy=change))
        )

    propose(json.dumps(json.loads(original) | {"device_count": GPUS}).encode())
    stream = Stream(verifier, HOST, enroll(verifier, tpm, HOST))
    try:
        verdict, _ = _answer(stream, tpm, fleet)
        assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
        challenge = stream.next_challenge()
        evidence = evidence_for(tpm, challenge)
        gpu = _gpu(fleet, challenge, evidence.tpm.attest)
        del gpu.devices[GPUS - 1]  # the last GPU left out: the others still verify
        evidence.gpu.CopyFrom(gpu)
        verdict = stream.answer(evidence)
        assert codes(verdict) == ["nvidia.devices.count_mismatch"], codes(verdict)
    finally:
        stream.close()
        propose(original)
