"""NVIDIA appraisal: measurements against verified RIMs, policy, one verdict per device.

Cases follow PROVENANCE.md section 3 (NVIDIA's own verifier's verdicts, V1...V7)
and expected_results.json (mismatching RIM indexes per evidence and RIM).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.vectors import testvectors_root as vectors_root
from tests.vectors import vectors_dir
from verifier.evidence.nvidia import appraise
from verifier.evidence.nvidia.appraise_topology import CHECK_TOPOLOGY
from verifier.evidence.nvidia.gpu_policy import (
    CcState,
    GpuPolicy,
    PolicyError,
    load_policy,
    parse_driver_version,
    parse_firmware_version,
)
from verifier.evidence.nvidia.opaque import OpaqueData
from verifier.evidence.nvidia.report import AttestationReport, MeasurementBlock, parse_report
from verifier.evidence.nvidia.report_files import EvidenceEntry, read_evidence_json, report_from_hex
from verifier.evidence.nvidia.rim import VerifiedRim, verify_rim
from verifier.evidence.nvidia.verify_gpu import DevicesVerdict, verify_devices
from verifier.verdict import VerificationError

SDK = "attestation-sdk/nv-attestation-sdk-cpp/unit-tests/testdata"
SAMPLES = f"{SDK}/sample_attestation_data"
PYPI = "pypi_nv-local-gpu-verifier_2.7.3/samples"
V1_REPORT = "pypi_nv-local-gpu-verifier_2.0.0/attestationReport.txt"
V1_CHAIN = "pypi_nv-local-gpu-verifier_2.0.0/gpuAkCertChain.txt"
V1_NONCE = "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e"
SAMPLE_NONCE = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
V1_DRIVER_RIM = f"{PYPI}/Driver_RIM_test_no_gpu.swidtag"
V1_VBIOS_RIM = f"{PYPI}/1010_0200_882_96005E0001_test_no_gpu.swidtag"
V1_IDS = ("NV_GPU_DRIVER_GH100_545.00", "NV_GPU_VBIOS_1010_0200_882_96005E0001")
SWITCH_RIM = f"{SDK}/switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml"
SWITCH_RIM_ID = "NV_SWITCH_BIOS_5612_0002_890_9610550001"
PPCIE = "nvtrust/ppcie-verifier-sdk-cpp/tests/data"
# V1's time in PROVENANCE.md section 3: inside the test_no_gpu RIMs' signing
# windows (L4 2023-06..2025-06); device certificates run 2020..9999.
AT_V1 = datetime(2024, 3, 1, tzinfo=UTC)
# Inside the switch BIOS RIM's window (L4 2026-05-20..2028-05-19, L3 ..2027-11-02).
AT_SWITCH = datetime(2026, 7, 1, tzinfo=UTC)
AT_PPCIE = datetime(2025, 12, 1, tzinfo=UTC)  # V7's clock


def _base() -> Path:
    return vectors_dir("nvidia")


def _read(rel: str) -> bytes:
    return (_base() / rel).read_bytes()


def _roots(name: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(_read(f"roots/{name}"))


def _text_entry(report: str, chain: str, arch: str = "HOPPER") -> EvidenceEntry:
    return EvidenceEntry(arch, b"", report_from_hex(_read(report).decode()), _read(chain))


def _report(rel: str) -> AttestationReport:
    if rel.endswith("]"):
        path, _, index = rel[:-1].partition("[")
        return parse_report(read_evidence_json(_read(path))[int(index)].report)
    return parse_report(report_from_hex(_read(rel).decode()))


def _policy(*rim_ids: str, ppcie: bool = False) -> GpuPolicy:
    return GpuPolicy(
        min_driver_version=parse_driver_version("535.00"),
        min_vbios_version=parse_firmware_version("96.00.00.00.00"),
        min_switch_bios_version=parse_firmware_version("96.10.00.00.00"),
        allowed_rim_ids=frozenset(rim_ids),
        allowed_cc_states=frozenset({CcState.PPCIE if ppcie else CcState.ON}),
        require_ppcie=ppcie,
    )


def _rims(mapping: dict[str, str]) -> Callable[[str], bytes | None]:
    def lookup(rim_id: str) -> bytes | None:
        rel = mapping.get(rim_id)
        return None if rel is None else _read(rel)

    return lookup


def _verify(
    entries: list[EvidenceEntry],
    nonces: list[str],
    *,
    rims: dict[str, str] | None = None,
    policy: GpuPolicy | None = None,
    at: datetime = AT_V1,
    cc_state: CcState | None = CcState.ON,
) -> DevicesVerdict:
    return verify_devices(
        entries,
        expected_nonce_for=lambda i: bytes.fromhex(nonces[i]),
        rims=_rims(rims or {}),
        policy=policy or _policy(*V1_IDS, SWITCH_RIM_ID),
        cc_state=cc_state,
        pinned_device_roots=_roots("verifier_device_root.pem"),
        pinned_rim_roots=_roots("verifier_RIM_root.pem"),
        at=at,
    )


V1_RIMS = {V1_IDS[0]: V1_DRIVER_RIM, V1_IDS[1]: V1_VBIOS_RIM}


def _v1(**kwargs: Any) -> DevicesVerdict:
    return _verify([_text_entry(V1_REPORT, V1_CHAIN)], [V1_NONCE], **kwargs)


# --- single GPU: PROVENANCE.md section 3 -----------------------------------------


def test_v1_affirms_with_its_matching_rims() -> None:
    result = _v1(rims=V1_RIMS)
    gpu = result.device("gpu0")
    assert gpu.affirms, gpu.reasons
    assert result.host.affirms
    assert {"nvidia.chain", "nvidia.report.signature", "nvidia.report.nonce"} <= gpu.checks_run
    assert {"nvidia.rim.signature", "nvidia.measurement.compare", "nvidia.policy"} <= gpu.checks_run
    # The 2.0.0 firmware sends no FWID: there was nothing to compare, and we do not claim to.
    assert "nvidia.report.fwid" not in gpu.checks_run


@pytest.mark.parametrize(
    ("case", "kwargs", "codes"),
    [
        ("V1-now", {"at": datetime(2026, 11, 29, tzinfo=UTC)}, {"nvidia.rim.expired"}),
        ("V1-2025-07", {"at": datetime(2025, 7, 1, tzinfo=UTC)}, {"nvidia.rim.expired"}),
        ("V1-nonce", {"nonce": SAMPLE_NONCE}, {"nvidia.report.nonce_mismatch"}),
        ("V1-PROD", {"vbios": f"{PYPI}/1010_0200_882_96005E0001_PROD.swidtag"}, None),
        (
            "V1-badsig",
            {"driver": f"{SDK}/incorrect_signature_driver_rim.xml"},
            {"nvidia.rim.signature_invalid"},
        ),
        (
            "V1-badchain",
            {"driver": f"{SDK}/incorrect_cert_chain_driver_rim.xml"},
            {"nvidia.rim.chain_untrusted"},
        ),
    ],
)
def test_v1_variants_fail_like_nvidia(
    case: str, kwargs: dict[str, Any], codes: set[str] | None
) -> None:
    rims = {V1_IDS[0]: kwargs.get("driver", V1_DRIVER_RIM), V1_IDS[1]: kwargs.get("vbios")}
    rims[V1_IDS[1]] = rims[V1_IDS[1]] or V1_VBIOS_RIM
    at = kwargs.get("at", datetime(2025, 3, 1, tzinfo=UTC) if "driver" in kwargs else AT_V1)
    entry = _text_entry(V1_REPORT, V1_CHAIN)
    result = _verify([entry], [kwargs.get("nonce", V1_NONCE)], rims=rims, at=at)
    gpu = result.device("gpu0")
    assert not gpu.affirms and not result.host.affirms
    got = set(gpu.reason_codes())
    if case == "V1-PROD":
        mismatches = [r for r in gpu.reasons if r.code == "nvidia.measurement.mismatch"]
        assert [r.detail.split()[1] for r in mismatches] == ["1", "2", "3", "9"]
        assert got == {"nvidia.measurement.mismatch"}
    else:
        # NVIDIA also names 550.144.03 != 545.00 for V1-badsig: it reads the version
        # of a RIM whose signature failed. We read nothing from such a RIM.
        assert got == codes


def test_v1_with_another_gpus_chain_is_signature_invalid() -> None:
    entry = _text_entry(V1_REPORT, f"{PYPI}/hopperCertChain.txt")
    gpu = _verify([entry], [V1_NONCE], rims=V1_RIMS).device("gpu0")
    assert gpu.reason_codes() == ("nvidia.report.signature_invalid",)


def test_v2_report_against_v1_rims_names_both_version_mismatches() -> None:
    entry = _text_entry(f"{PYPI}/hopperAttestationReport.txt", f"{PYPI}/hopperCertChain.txt")
    rims = {"NV_GPU_DRIVER_GH100_550.90.07": V1_DRIVER_RIM}
    rims["NV_GPU_VBIOS_1010_0200_882_96009F0001"] = V1_VBIOS_RIM
    gpu = _verify([entry], [SAMPLE_NONCE], rims=rims, policy=_policy(*rims)).device("gpu0")
    versions = [r for r in gpu.reasons if r.code == "nvidia.rim.version_mismatch"]
    assert len(versions) == 2
    assert "nvidia.measurement.mismatch" in gpu.reason_codes()
    assert "nvidia.report.fwid" in gpu.checks_run


# --- every listed (evidence, RIM) pair: expected_results.json ---------------------


def _comparisons() -> list[Any]:
    path = vectors_root() / "nvidia" / "expected_results.json"
    if not path.exists():
        return [pytest.param(None, None, None, marks=pytest.mark.skip(reason="no vectors"))]
    doc = json.loads(path.read_text())
    rims = {r["file"]: r for r in doc["rims"]}
    cases = []
    for evidence in doc["evidence"]:
        if evidence["duplicate_of"]:
            continue
        for rim_file, found in evidence.get(
            "rim_measurement_comparisons_le4_mismatches", {}
        ).items():
            name = f"{Path(evidence['file']).name}-{Path(rim_file).name}"
            cases.append(pytest.param(evidence["file"], rims[rim_file], found, id=name))
    return cases


def _verified_at_its_time(rim: dict[str, Any]) -> VerifiedRim:
    start = max(datetime.fromisoformat(c["not_before"]) for c in rim["keyinfo_certs"])
    return verify_rim(
        _read(rim["file"]), pinned_roots=_roots("verifier_RIM_root.pem"), at=start + timedelta(1)
    )


@pytest.mark.parametrize(("evidence", "rim", "found"), _comparisons())
def test_rim_mismatches_are_exactly_the_listed_indexes(
    evidence: str, rim: dict[str, Any], found: dict[str, Any]
) -> None:
    report = _report(evidence)
    if rim["xmldsig_valid_with_keyinfo_leaf_key"] != "ok":
        # An edited RIM never becomes a VerifiedRim, so it cannot be compared at all.
        with pytest.raises(VerificationError) as raised:
            _verified_at_its_time(rim)
        assert raised.value.reason.code == "nvidia.rim.signature_invalid"
        return
    verified = _verified_at_its_time(rim)
    driver = "DRIVER" in rim["file"].upper()
    reasons = appraise.compare_measurements(
        report, verified if driver else None, None if driver else verified
    )
    listed = [r.detail.split()[1] for r in reasons if r.code == "nvidia.measurement.mismatch"]
    assert listed == [str(i) for i in found["mismatched_rim_indexes"]]
    assert sum(m.active for m in verified.measurements) == found["active_indexes_checked"]


# --- comparison rules ------------------------------------------------------------


def _v1_report(*, nvdec: int | None, block36: bytes | None = None) -> AttestationReport:
    report = _report(V1_REPORT)
    blocks = tuple(
        dataclasses.replace(b, value=block36) if b.index == 36 and block36 else b
        for b in report.blocks
    )
    opaque: OpaqueData = dataclasses.replace(report.opaque, nvdec0_status=nvdec)
    return dataclasses.replace(report, blocks=blocks, opaque=opaque)


def _v1_rims() -> tuple[VerifiedRim, VerifiedRim]:
    roots = _roots("verifier_RIM_root.pem")
    return (
        verify_rim(_read(V1_DRIVER_RIM), pinned_roots=roots, at=AT_V1),
        verify_rim(_read(V1_VBIOS_RIM), pinned_roots=roots, at=AT_V1),
    )


@pytest.mark.parametrize(
    ("nvdec", "codes"),
    [
        (0x55, []),  # NVDEC0 disabled: RIM index 35 is skipped (NVIDIA's C++ SDK)
        (0xAA, ["nvidia.measurement.mismatch"]),  # enabled: compared, and it differs
        (0x12, ["nvidia.measurement.nvdec_status_unknown"]),
        (None, ["nvidia.measurement.nvdec_status_unknown"]),
    ],
)
def test_nvdec_rule_for_index_35(nvdec: int | None, codes: list[str]) -> None:
    driver, vbios = _v1_rims()
    report = _v1_report(nvdec=nvdec, block36=b"\x01" * 48)
    reasons = appraise.compare_measurements(report, driver, vbios)
    assert [r.code for r in reasons] == codes
    if nvdec == 0xAA:
        assert reasons[0].detail.startswith("index 35 ")


def test_index_claimed_by_both_rims_is_a_conflict() -> None:
    _, vbios = _v1_rims()
    reasons = appraise.compare_measurements(_report(V1_REPORT), vbios, vbios)
    codes = [r.code for r in reasons]
    assert "nvidia.measurement.index_conflict" in codes
    assert "nvidia.measurement.mismatch" not in codes  # nothing is compared after a conflict


def test_missing_rims_are_named() -> None:
    reasons = appraise.compare_measurements(_report(V1_REPORT), None, None)
    assert [r.code for r in reasons] == ["nvidia.rim.missing", "nvidia.rim.missing"]


def test_missing_block_is_a_mismatch() -> None:
    driver, vbios = _v1_rims()
    report = _report(V1_REPORT)
    report = dataclasses.replace(report, blocks=tuple(b for b in report.blocks if b.index != 8))
    reasons = appraise.compare_measurements(report, driver, vbios)
    assert [r.detail.split()[1] for r in reasons] == ["7"]  # RIM index 7 = SPDM block 8


def test_rim_ids_follow_nvidia_naming() -> None:
    report = _report(V1_REPORT)
    assert appraise.driver_rim_id(report, "GH100 A01 GSP BROM") == V1_IDS[0]
    assert appraise.firmware_rim_id(report) == V1_IDS[1]
    assert appraise.firmware_rim_id(_report(f"{SDK}/switchAttestationReport.txt")) == SWITCH_RIM_ID
    blackwell = _report(f"{SAMPLES}/gpu/blackwellAttestationReport.txt")
    assert appraise.driver_rim_id(blackwell, "GB100 A01 GSP BROM") == (
        "NV_GPU_CC_DRIVER_GB100_575.32"
    )
    assert isinstance(report.blocks[0], MeasurementBlock)


# --- multi-device: no early stop --------------------------------------------------


def test_invalid_gpu_fails_alone_and_the_host_does_not_affirm() -> None:
    bad = _text_entry(
        f"{SAMPLES}/gpu/hopperAttestationReportInvalidSignature.txt",
        f"{SAMPLES}/gpu/hopperCertChainExpired.txt",
    )
    good = _text_entry(V1_REPORT, V1_CHAIN)
    result = _verify([bad, good], [SAMPLE_NONCE, V1_NONCE], rims=V1_RIMS)
    assert result.device("gpu0").reason_codes() == ("nvidia.report.signature_invalid",)
    assert result.device("gpu1").affirms
    assert not result.host.affirms
    assert [r.detail for r in result.host.reasons] == ["gpu0: nvidia.report.signature_invalid"]


def test_invalid_switch_fails_alone() -> None:
    good = _text_entry(f"{SDK}/switchAttestationReport.txt", f"{SDK}/switchCertChain.txt", "LS10")
    bad = _text_entry(
        f"{SAMPLES}/switch/switchAttestationReportInvalidSignature.txt",
        f"{SAMPLES}/switch/switchCertChain.txt",
        "LS10",
    )
    bad_nonce = _report(f"{SAMPLES}/switch/switchAttestationReportInvalidSignature.txt")
    nonces = [SAMPLE_NONCE, bad_nonce.request.nonce.hex()]
    result = _verify([good, bad], nonces, rims={SWITCH_RIM_ID: SWITCH_RIM}, at=AT_SWITCH)
    assert result.device("nvswitch0").affirms, result.device("nvswitch0").reasons
    assert result.device("nvswitch1").reason_codes() == ("nvidia.report.signature_invalid",)
    assert not result.host.affirms


def _file_entries(rel: str) -> list[EvidenceEntry]:
    return read_evidence_json(_read(rel))


def test_wrong_nonce_names_that_gpu() -> None:
    entries = _file_entries(
        "attestation-sdk/common-test-data/serialized_test_evidence/multi_gpu_hopper.json"
    )
    nonces = [e.nonce.hex() for e in entries]
    nonces[2] = "00" * 32
    result = _verify(entries, nonces, at=AT_PPCIE)
    for device in result.devices:
        wrong = "nvidia.report.nonce_mismatch" in device.verdict.reason_codes()
        assert wrong == (device.name == "gpu2")
    assert any(
        r.detail.startswith("gpu2: nvidia.report.nonce_mismatch") for r in result.host.reasons
    )


def test_same_switch_four_times_is_a_duplicate() -> None:
    entries = _file_entries(
        "attestation-sdk/common-test-data/serialized_test_evidence/multi_switch_ls10.json"
    )
    result = _verify(
        entries, [e.nonce.hex() for e in entries], rims={SWITCH_RIM_ID: SWITCH_RIM}, at=AT_SWITCH
    )
    assert result.device("nvswitch0").affirms
    for name in ("nvswitch1", "nvswitch2", "nvswitch3"):
        assert result.device(name).reason_codes() == ("nvidia.device.duplicate",)


# --- protected PCIe topology ------------------------------------------------------


def _ppcie(drop_switch: int | None = None) -> DevicesVerdict:
    gpus = _file_entries(f"{PPCIE}/gpu_evidence.json")
    switches = _file_entries(f"{PPCIE}/switch_evidence.json")
    if drop_switch is not None:
        del switches[drop_switch]
    entries = gpus + switches
    return _verify(
        entries,
        [e.nonce.hex() for e in entries],
        policy=_policy("any", ppcie=True),
        cc_state=CcState.PPCIE,
        at=AT_PPCIE,
    )


def test_ppcie_topology_passes_with_every_switch() -> None:
    result = _ppcie()
    assert [d.name for d in result.devices] == [f"gpu{i}" for i in range(8)] + [
        f"nvswitch{i}" for i in range(4)
    ]
    for device in result.devices:
        codes = device.verdict.reason_codes()
        # Authentication passes for all 12; only the absent 590.12 RIMs stop them.
        assert "nvidia.report.signature" in device.verdict.checks_run
        assert "nvidia.topology.switch_mismatch" not in codes
        assert "nvidia.policy.ppcie_off" not in codes
        assert "nvidia.policy.mode_mismatch" not in codes
        assert "nvidia.rim.missing" in codes
        if device.name.startswith("gpu"):
            assert CHECK_TOPOLOGY in device.verdict.checks_run


def test_ppcie_topology_fails_when_a_switch_is_missing() -> None:
    dropped = _report(f"{PPCIE}/switch_evidence.json[3]").opaque.device_pdi
    assert dropped is not None
    result = _ppcie(drop_switch=3)
    for device in result.devices:
        found = [r for r in device.verdict.reasons if r.code == "nvidia.topology.switch_mismatch"]
        if device.name.startswith("gpu"):
            assert len(found) == 1 and f"{dropped:016x}" in found[0].detail
        else:
            assert not found


# --- policy ---------------------------------------------------------------------


def test_policy_loads_and_refuses_permissive_files() -> None:
    good = {
        "version": 1,
        "min_driver_version": "550.54.15",
        "min_vbios_version": "96.00.5e.00.01",
        "allowed_rim_ids": [V1_IDS[0]],
    }
    policy = load_policy(json.dumps(good))
    assert policy.allowed_cc_states == frozenset({CcState.ON})
    assert policy.min_switch_bios_version is None and not policy.require_ppcie
    assert policy.device_count is None
    assert load_policy(json.dumps({**good, "device_count": 8})).device_count == 8
    for broken in (
        {**good, "device_count": 0},
        {**good, "device_count": 65},
        {**good, "device_count": True},
        {**good, "device_count": "8"},
        {**good, "allowed_rim_ids": []},
        {**good, "min_driver_version": None},
        {**good, "typo": True},
        {**good, "version": 2},
        {**good, "min_vbios_version": "9g.00"},
    ):
        with pytest.raises(PolicyError):
            load_policy(json.dumps(broken))


def test_versions_compare_as_numbers() -> None:
    assert parse_driver_version("550.100") > parse_driver_version("550.90.07")
    assert parse_firmware_version("96.00.a0.00.01") > parse_firmware_version("96.00.9f.00.01")


@pytest.mark.parametrize(
    ("cc_state", "code"),
    [
        (None, "nvidia.policy.cc_state_unknown"),
        (CcState.DEVTOOLS, "nvidia.policy.devtools"),
        (CcState.OFF, "nvidia.policy.cc_mode"),
    ],
)
def test_cc_state_must_be_on(cc_state: CcState | None, code: str) -> None:
    gpu = _v1(rims=V1_RIMS, cc_state=cc_state).device("gpu0")
    assert gpu.reason_codes() == (code,)


def test_default_policy_denies() -> None:
    gpu = _v1(rims=V1_RIMS, policy=GpuPolicy()).device("gpu0")
    assert set(gpu.reason_codes()) == {
        "nvidia.policy.driver_too_old",
        "nvidia.policy.vbios_too_old",
        "nvidia.policy.rim_not_allowed",
    }


def test_driver_below_minimum_is_named() -> None:
    policy = dataclasses.replace(_policy(*V1_IDS), min_driver_version=(550,))
    gpu = _v1(rims=V1_RIMS, policy=policy).device("gpu0")
    assert gpu.reason_codes() == ("nvidia.policy.driver_too_old",)
