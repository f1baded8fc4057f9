"""A simulated Intel TDX guest on the attestation stream, end to end.

Real swtpm, real gRPC, the agent's own TDX collection code over the devsim guest (a
quote signed by its attestation key, the QE report by its PCK, collateral signed
under a TEST root that this verifier trusts only through the explicit
``insecure_test_roots`` setting). The TPM quote and the TD quote answer one
challenge: REPORTDATA is derived from the challenge nonce and the TPM quote's exact
bytes. The group's TDX policy is set by proposal (no quorum in this harness).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.collectors.tdx import tdx_evidence_message
from agent.collectors.tpm import Tpm
from devsim.tdx import create_tdx_guest, load_tdx_guest
from tests.integration.test_attestation_flow import (
    Stream,
    codes,
    enroll,
    evidence_for,
    set_reference_from,
)
from tests.verifier_harness import VerifierHarness, running_verifier
from verifier.config_tdx import TdxConfig, tdx_config
from verifier.evidence.tdx.pck_extension import read_pck_extension
from verifier.evidence.tdx.pki import parse_pem_certificates
from weightgate.cvm_binding import snp_report_data, tdx_report_data
from weightgate.v1 import attestation_pb2, common_pb2, operator_pb2

GROUP, HOST = "td", "td-host"


def _tdx_config(guest: Path) -> TdxConfig:
    # The same path as a config file's [verifier.tdx] table.
    config = tdx_config(
        guest / "verifier.toml",
        "[verifier.tdx]\n",
        {"insecure_test_roots": ["trust/root.pem"], "collateral_dir": "collateral"},
        guest,
    )
    assert config is not None and config.test_roots_trusted
    return config


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, swtpm_factory_module: Any
) -> Iterator[tuple[VerifierHarness, Tpm, Path]]:
    process = swtpm_factory_module()
    tpm = Tpm(process.tcti)
    work = tmp_path_factory.mktemp("tdx-stream")
    guest = work / "guest"
    create_tdx_guest(guest)
    state = work / "verifier"
    state.mkdir()
    with running_verifier(
        state, ek_ca_certificates=process.ek_ca_certificates, tdx=_tdx_config(guest)
    ) as verifier:
        verifier.operator.RegisterHost(operator_pb2.RegisterHostRequest(host_id=HOST, group=GROUP))
        set_reference_from(verifier, tpm, GROUP)
        change = operator_pb2.TdxPolicyChange(
            group=GROUP, policy_json=(guest / "tdx_policy.json").read_bytes()
        )
        verifier.operator.ProposeChange(
            operator_pb2.ProposeChangeRequest(change=operator_pb2.ProposedChange(tdx_policy=change))
        )
        yield verifier, tpm, guest


def _tdx(guest: Path, report_data: bytes) -> attestation_pb2.TdxEvidence:
    return tdx_evidence_message(
        source="simulator", tsm_dir=None, simulator_dir=guest, report_data=report_data
    )


def _round(
    stream: Stream, tpm: Tpm, guest: Path, report_data: Any = tdx_report_data
) -> common_pb2.Verdict:
    challenge = stream.next_challenge()
    assert challenge.HasField("tdx"), "a group with a TDX policy asks for a TD quote"
    evidence = evidence_for(tpm, challenge)
    evidence.tdx.CopyFrom(_tdx(guest, report_data(challenge.nonce, evidence.tpm.attest)))
    return stream.answer(evidence)


def test_tpm_and_td_quotes_answer_one_challenge(setup: tuple[VerifierHarness, Tpm, Path]) -> None:
    verifier, tpm, guest = setup
    stream = Stream(verifier, HOST, enroll(verifier, tpm, HOST))
    try:
        verdict = _round(stream, tpm, guest)
        assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
        assert {"tdx.attested", "tdx.quote.signature", "tdx.tcb.status", "tdx.policy"} <= set(
            verdict.checks_run
        ), sorted(verdict.checks_run)

        # REPORTDATA made for the SNP domain (same nonce and quote): another value.
        verdict = _round(stream, tpm, guest, snp_report_data)
        assert codes(verdict) == ["tdx.quote.report_data_mismatch"], codes(verdict)

        # A quote answering another TPM quote of this round: refused.
        verdict = _round(stream, tpm, guest, lambda n, a: tdx_report_data(n, bytes(a) + b"\0"))
        assert codes(verdict) == ["tdx.quote.report_data_mismatch"], codes(verdict)

        # No quote: named.
        challenge = stream.next_challenge()
        evidence = evidence_for(tpm, challenge)
        evidence.tdx.unavailable = "configfs-tsm: provider is sev_guest, not tdx_guest"
        verdict = stream.answer(evidence)
        assert codes(verdict) == ["tdx.evidence.missing"], codes(verdict)

        verdict = _round(stream, tpm, guest)
        assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
    finally:
        stream.close()


def test_a_tightened_group_policy_fails_the_same_guest(
    setup: tuple[VerifierHarness, Tpm, Path],
) -> None:
    """The policy is the group's: tightening it (another MRTD) fails the same guest."""
    verifier, tpm, guest = setup
    policy = json.loads((guest / "tdx_policy.json").read_text())
    original = json.dumps(policy).encode()
    policy["mrtd"] = ["00" * 48]

    def propose(document: bytes) -> None:
        change = operator_pb2.TdxPolicyChange(group=GROUP, policy_json=document)
        verifier.operator.ProposeChange(
            operator_pb2.ProposeChangeRequest(change=operator_pb2.ProposedChange(tdx_policy=change))
        )

    propose(json.dumps(policy).encode())
    stream = Stream(verifier, HOST, enroll(verifier, tpm, HOST))
    try:
        verdict = _round(stream, tpm, guest)
        assert codes(verdict) == ["tdx.policy.mrtd_mismatch"], codes(verdict)
    finally:
        stream.close()
        propose(original)


def test_a_group_policy_this_verifier_cannot_meet_is_named(
    setup: tuple[VerifierHarness, Tpm, Path], tmp_path: Path
) -> None:
    """A GPU policy for the group, but no [verifier.nvidia] trust material here."""
    verifier, tpm, _ = setup
    verifier.operator.RegisterHost(operator_pb2.RegisterHostRequest(host_id="gpu-less", group="g"))
    set_reference_from(verifier, tpm, "g")
    gpu_policy = {
        "version": 1,
        "min_driver_version": "550.54.15",
        "min_vbios_version": "96.00.5e.00.01",
        "allowed_rim_ids": ["NV_GPU_DRIVER_GH100_550.54.15"],
    }
    change = operator_pb2.GpuPolicyChange(group="g", policy_json=json.dumps(gpu_policy).encode())
    verifier.operator.ProposeChange(
        operator_pb2.ProposeChangeRequest(change=operator_pb2.ProposedChange(gpu_policy=change))
    )
    stream = Stream(verifier, "gpu-less", enroll(verifier, tpm, "gpu-less"))
    try:
        challenge = stream.next_challenge()
        assert challenge.HasField("gpu")
        verdict = stream.answer(evidence_for(tpm, challenge))
        assert codes(verdict) == ["nvidia.verifier_unconfigured"], codes(verdict)
    finally:
        stream.close()


def test_one_collateral_directory_serves_several_platforms(
    setup: tuple[VerifierHarness, Tpm, Path], tmp_path: Path
) -> None:
    """This guest's TCB Info filed under its FMSPC is used; the shared tcb_info.json
    (here another platform's, signed by another TEST root) is not."""
    verifier, tpm, guest = setup
    collateral = guest / "collateral"
    leaf = parse_pem_certificates(load_tdx_guest(guest).pck_chain_pem)[0]
    fmspc = read_pck_extension(leaf).fmspc
    own = collateral / "tcb_info.json"
    other = create_tdx_guest(tmp_path / "other")
    own.rename(collateral / f"tcb_info_{fmspc.hex()}.json")
    (collateral / "tcb_info.json").write_bytes(
        (other.collateral_dir / "tcb_info.json").read_bytes()
    )
    stream = Stream(verifier, HOST, enroll(verifier, tpm, HOST))
    try:
        verdict = _round(stream, tpm, guest)
        assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
    finally:
        stream.close()
        (collateral / f"tcb_info_{fmspc.hex()}.json").replace(own)
