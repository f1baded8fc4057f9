"""The simulated NVIDIA fleet against the real verifier, with real crypto and no mocks.

The fleet's evidence must affirm when (and only when) its TEST roots are pinned
explicitly; one-mutation negatives expect one named reason on the device hit and
leave the others affirming. One fleet is made per module (well under a second).
"""

from __future__ import annotations

import re
import secrets
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from agent.collectors.gpu import NvmlCallError, collect_gpu_evidence
from agent.collectors.gpu_simulated import (
    CERT_CHAIN_ARRAY_SIZE,
    REPORT_ARRAY_SIZE,
    SimulatedNvml,
    load_simulated_nvml,
)
from devsim.nvidia import Fleet, FleetError, create_fleet, load_fleet
from tests.vectors import vectors_dir
from verifier.evidence.nvidia.chain import DEVICE_ROOT_SPKI_SHA256, spki_sha256
from verifier.evidence.nvidia.gpu_policy import CcState, load_policy
from verifier.evidence.nvidia.ocsp import NOT_CHECKED, OcspPolicy
from verifier.evidence.nvidia.ocsp_cache import OcspCache
from verifier.evidence.nvidia.offline import OcspInput, rim_signing_path_for, verify_nvgpu_offline
from verifier.evidence.nvidia.offline_rims import import_rim_file
from verifier.evidence.nvidia.opaque import FieldType
from verifier.evidence.nvidia.report import parse_report
from verifier.evidence.nvidia.report_files import EvidenceEntry
from verifier.evidence.nvidia.rim_store import FileRimStore
from verifier.evidence.nvidia.verify_gpu import DevicesVerdict, RimSource, verify_devices
from verifier.verdict import Tier

GPUS = 3
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Trust:
    device_root: x509.Certificate
    rim_root: x509.Certificate


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return create_fleet(tmp_path_factory.mktemp("devsim") / "fleet", gpus=GPUS, now=NOW)


@pytest.fixture(scope="module")
def trust(fleet: Fleet) -> Trust:
    return Trust(
        x509.load_pem_x509_certificate(fleet.device_root_pem),
        x509.load_pem_x509_certificate(fleet.rim_root_pem),
    )


def nonces() -> list[bytes]:
    return [secrets.token_bytes(32) for _ in range(GPUS)]


def entries_for(fleet: Fleet, per_gpu: list[bytes]) -> list[EvidenceEntry]:
    found = []
    for position, nonce in enumerate(per_gpu):
        report, chain = fleet.attest(position, nonce)
        found.append(EvidenceEntry(fleet.model.arch, nonce, report, chain))
    return found


def rims_from(fleet: Fleet) -> RimSource:
    def source(rim_id: str) -> bytes | None:
        path = fleet.rims_dir / f"{rim_id}.xml"
        return path.read_bytes() if path.is_file() else None

    return source


def verify(
    fleet: Fleet,
    trust: Trust,
    entries: list[EvidenceEntry],
    expected: list[bytes],
    *,
    rims: RimSource | None = None,
    device_roots: list[x509.Certificate] | None = None,
    spki_pins: frozenset[bytes] | None = None,
    rim_roots: list[x509.Certificate] | None = None,
) -> DevicesVerdict:
    roots = device_roots if device_roots is not None else [trust.device_root]
    return verify_devices(
        entries,
        expected_nonce_for=lambda i: expected[i],
        rims=rims or rims_from(fleet),
        policy=load_policy(fleet.policy_path.read_bytes()),
        cc_state=CcState.ON,
        pinned_device_roots=roots,
        pinned_rim_roots=rim_roots if rim_roots is not None else [trust.rim_root],
        at=NOW,
        device_spki_pins=(
            spki_pins if spki_pins is not None else frozenset({spki_sha256(trust.device_root)})
        ),
    )


def codes(result: DevicesVerdict, name: str) -> tuple[str, ...]:
    return result.device(name).reason_codes()


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --- the fleet affirms with its roots pinned explicitly ---------------------------------


def test_fleet_affirms_with_test_roots_pinned(fleet: Fleet, trust: Trust) -> None:
    expected = nonces()
    result = verify(fleet, trust, entries_for(fleet, expected), expected)
    assert result.host.affirms, result.host.reasons
    assert [d.name for d in result.devices] == ["gpu0", "gpu1", "gpu2"]
    for device in result.devices:
        assert device.verdict.affirms, device.verdict.reasons
        # The report carries an FWID, so the FWID binding ran too, and both RIMs verified.
        assert {"nvidia.report.fwid", "nvidia.rim.signature", "nvidia.policy"} <= set(
            device.verdict.checks_run
        )
    assert len({d.ueid for d in result.devices}) == GPUS  # distinct devices, no duplicate


def test_reports_parse_as_hopper_v1_with_the_fleet_versions(fleet: Fleet) -> None:
    report = parse_report(fleet.attest(0, bytes(32))[0])
    opaque = report.opaque
    assert len(report.blocks) == 64
    assert all(b.is_digest and len(b.value) == 48 for b in report.blocks)
    assert opaque.opaque_data_version == 1
    assert opaque.feature_flag_name == "SPT"
    assert opaque.driver_version == fleet.model.driver_version
    assert opaque.vbios_version == fleet.model.vbios_version
    assert opaque.nvdec0_status == 0x55
    assert not opaque.unknown


def test_offline_ocsp_step_passes_with_the_fleet_cache(
    fleet: Fleet, trust: Trust, tmp_path: Path
) -> None:
    store = FileRimStore(tmp_path / "store", pinned_roots=[trust.rim_root])
    for path in sorted(fleet.rims_dir.iterdir()):
        assert import_rim_file(store, path, at=NOW).status == "stored"
    expected = nonces()
    report = verify_nvgpu_offline(
        entries_for(fleet, expected),
        expected_nonce_for=lambda i: expected[i],
        store=store,
        policy=load_policy(fleet.policy_path.read_bytes()),
        cc_state=CcState.ON,
        device_roots=[trust.device_root],
        rim_roots=[trust.rim_root],
        ocsp=OcspInput(
            source=OcspCache(directory=fleet.ocsp_dir),
            policy=OcspPolicy(max_age=timedelta(days=1)),
        ),
        at=NOW,
        device_spki_pins=frozenset({spki_sha256(trust.device_root)}),
        rim_signing_paths=rim_signing_path_for([trust.rim_root], NOW),
    )
    assert report.verdict.tier is Tier.AFFIRMING, report.verdict.reasons
    assert NOT_CHECKED not in report.verdict.reason_codes()
    statuses = {c.name: c.status for c in report.checks}
    assert statuses == {
        "gpu0": "passed",
        "gpu1": "passed",
        "gpu2": "passed",
        "nvidia.ocsp.rims": "passed",
    }
    for device in report.claims["devices"]:
        ocsp = [c for c in device["checks"] if c["name"] == "nvidia.ocsp"]
        assert [c["status"] for c in ocsp] == ["passed"]


def test_without_ocsp_answers_the_offline_verdict_is_only_a_warning(
    fleet: Fleet, trust: Trust, tmp_path: Path
) -> None:
    store = FileRimStore(tmp_path / "store", pinned_roots=[trust.rim_root])
    for path in sorted(fleet.rims_dir.iterdir()):
        import_rim_file(store, path, at=NOW)
    expected = nonces()
    report = verify_nvgpu_offline(
        entries_for(fleet, expected),
        expected_nonce_for=lambda i: expected[i],
        store=store,
        policy=load_policy(fleet.policy_path.read_bytes()),
        cc_state=CcState.ON,
        device_roots=[trust.device_root],
        rim_roots=[trust.rim_root],
        ocsp=OcspInput(
            source=OcspCache(directory=tmp_path / "empty-ocsp"),
            policy=OcspPolicy(max_age=timedelta(days=1), required=False),
        ),
        at=NOW,
        device_spki_pins=frozenset({spki_sha256(trust.device_root)}),
        rim_signing_paths=rim_signing_path_for([trust.rim_root], NOW),
    )
    assert report.verdict.tier is Tier.WARNING
    assert set(report.verdict.reason_codes()) == {NOT_CHECKED}


# --- the TEST roots are never trusted by default ------------------------------------------


def test_roots_are_clearly_test_roots(fleet: Fleet, trust: Trust) -> None:
    for root in (trust.device_root, trust.rim_root):
        subject = root.subject.rfc4514_string()
        assert "weightgate TEST" in subject
        assert "simulator" in subject
    assert spki_sha256(trust.device_root) != DEVICE_ROOT_SPKI_SHA256


def test_fleet_root_without_its_spki_pin_is_a_setup_error(fleet: Fleet, trust: Trust) -> None:
    expected = nonces()
    with pytest.raises(ValueError, match="not pinned by SPKI"):
        verify(
            fleet,
            trust,
            entries_for(fleet, expected),
            expected,
            spki_pins=frozenset({DEVICE_ROOT_SPKI_SHA256}),
        )


def test_nvidia_default_pins_reject_every_simulated_gpu(fleet: Fleet, trust: Trust) -> None:
    roots = vectors_dir("nvidia", "roots")
    nvidia_device_root = x509.load_pem_x509_certificate(
        (roots / "verifier_device_root.pem").read_bytes()
    )
    nvidia_rim_root = x509.load_pem_x509_certificate((roots / "verifier_RIM_root.pem").read_bytes())
    expected = nonces()
    entries = entries_for(fleet, expected)
    result = verify(
        fleet,
        trust,
        entries,
        expected,
        device_roots=[nvidia_device_root],
        spki_pins=frozenset({DEVICE_ROOT_SPKI_SHA256}),
    )
    assert not result.host.affirms
    for device in result.devices:
        assert device.verdict.reason_codes() == ("nvidia.chain.untrusted",)
    # The RIMs do not chain to NVIDIA's RIM root either.
    result = verify(fleet, trust, entries, expected, rim_roots=[nvidia_rim_root])
    assert not result.host.affirms
    for device in result.devices:
        assert set(device.verdict.reason_codes()) == {"nvidia.rim.chain_untrusted"}


# --- one mutation, one reason, on the device hit only --------------------------------------


def test_wrong_nonce_fails_that_gpu_only(fleet: Fleet, trust: Trust) -> None:
    expected = nonces()
    entries = entries_for(fleet, expected)
    asked = list(expected)
    asked[1] = secrets.token_bytes(32)
    result = verify(fleet, trust, entries, asked)
    assert not result.host.affirms
    assert codes(result, "gpu1") == ("nvidia.report.nonce_mismatch",)
    assert result.device("gpu0").affirms
    assert result.device("gpu2").affirms


def test_only_authenticated_devices_carry_their_verified_chain(fleet: Fleet, trust: Trust) -> None:
    """OCSP walks the path verify_devices verified; a device that failed carries none."""
    expected = nonces()
    asked = list(expected)
    asked[1] = secrets.token_bytes(32)
    result = verify(fleet, trust, entries_for(fleet, expected), asked)
    chains = {d.name: d.chain for d in result.devices}
    assert chains["gpu1"] is None
    for name in ("gpu0", "gpu2"):
        chain = chains[name]
        assert chain is not None and chain.certificates[-1] == trust.device_root
        assert chain.ueid == result.devices[int(name[-1])].ueid


def _signed_offsets(report: bytes) -> dict[str, int]:
    parsed = parse_report(report)
    fwid = next(f for f in parsed.opaque.fields if f.type == FieldType.FWID)
    opaque_start = parsed.opaque.fields[0].offset
    return {
        "request nonce": 4,
        "measurement block 10": parsed.block(10).offset + 7,
        # The responder nonce (32 bytes) and OpaqueLength (2) precede the opaque data.
        "responder nonce": opaque_start - 2 - 16,
        "opaque FWID": fwid.offset + 4,
        "signature r": len(report) - 96,
        "signature s": len(report) - 1,
    }


@pytest.mark.parametrize(
    "where",
    [
        "request nonce",
        "measurement block 10",
        "responder nonce",
        "opaque FWID",
        "signature r",
        "signature s",
    ],
)
def test_flipped_byte_in_signed_report_fails_signature(
    fleet: Fleet, trust: Trust, where: str
) -> None:
    expected = nonces()
    entries = entries_for(fleet, expected)
    target = entries[2]
    offset = _signed_offsets(target.report)[where]
    entries[2] = EvidenceEntry(
        target.arch, target.nonce, flip(target.report, offset), target.chain_pem
    )
    result = verify(fleet, trust, entries, expected)
    assert not result.host.affirms
    assert codes(result, "gpu2") == ("nvidia.report.signature_invalid",)
    assert result.device("gpu0").affirms
    assert result.device("gpu1").affirms


def test_chain_of_another_gpu_fails_signature(fleet: Fleet, trust: Trust) -> None:
    expected = nonces()
    entries = entries_for(fleet, expected)
    entries[0] = EvidenceEntry("HOPPER", expected[0], entries[0].report, entries[1].chain_pem)
    result = verify(fleet, trust, entries, expected)
    assert codes(result, "gpu0") == ("nvidia.report.signature_invalid",)


def test_rim_edited_after_signing_fails_rim_signature(fleet: Fleet, trust: Trust) -> None:
    driver_id, _ = fleet.rim_ids
    original = (fleet.rims_dir / f"{driver_id}.xml").read_bytes()
    # Index 7 is active in the driver RIM: allow one more value there, as an
    # attacker widening the golden values would.
    golden = fleet.model.golden(7)[0].hex()
    edited = original.replace(golden.encode(), ("ff" * 48).encode(), 1)
    assert edited != original
    source = rims_from(fleet)

    def rims(rim_id: str) -> bytes | None:
        return edited if rim_id == driver_id else source(rim_id)

    expected = nonces()
    result = verify(fleet, trust, entries_for(fleet, expected), expected, rims=rims)
    assert not result.host.affirms
    for device in result.devices:
        assert device.verdict.reason_codes() == ("nvidia.rim.signature_invalid",)


# --- the agent's collector over the simulated NVML -----------------------------------------


def test_collector_over_simulated_nvml_gives_verifiable_evidence(
    fleet: Fleet, trust: Trust
) -> None:
    expected = nonces()
    collection = collect_gpu_evidence(lambda i: expected[i], nvml=SimulatedNvml(fleet))
    assert collection.unavailable is None
    assert collection.reasons == ()
    assert collection.driver_version == fleet.model.driver_version
    assert collection.cc_state == "cc=on devtools=off environment=sim"
    assert collection.multi_gpu_mode == "none"
    assert len(collection.gpus) == GPUS
    assert all(gpu.complete and not gpu.reasons for gpu in collection.gpus)
    entries = [
        EvidenceEntry("HOPPER", gpu.nonce, gpu.report or b"", gpu.cert_chain or b"")
        for gpu in collection.gpus
    ]
    result = verify(fleet, trust, entries, expected)
    assert result.host.affirms, result.host.reasons


def test_simulated_nvml_pads_like_nvml_and_needs_init(fleet: Fleet) -> None:
    nvml = SimulatedNvml(fleet)
    with pytest.raises(NvmlCallError, match="Uninitialized"):
        nvml.device_count()
    nvml.init()
    handle = nvml.device_handle(0)
    report = nvml.attestation_report(handle, bytes(32))
    chain = nvml.attestation_cert_chain(handle)
    assert len(report.data) == REPORT_ARRAY_SIZE and 0 < report.size < REPORT_ARRAY_SIZE
    assert len(chain.data) == CERT_CHAIN_ARRAY_SIZE and 0 < chain.size < CERT_CHAIN_ARRAY_SIZE
    assert chain.data[: chain.size] == fleet.chain_pem(0)
    assert not any(report.data[report.size :])
    with pytest.raises(NvmlCallError, match="no GPU 3"):
        nvml.device_handle(GPUS)
    nvml.shutdown()


def test_load_simulated_nvml(fleet: Fleet, tmp_path: Path) -> None:
    assert isinstance(load_simulated_nvml(fleet.directory), SimulatedNvml)
    why = load_simulated_nvml(tmp_path / "nowhere")
    assert isinstance(why, str)
    assert "fleet.json" in why


# --- the fleet on disk ---------------------------------------------------------------------


def test_fleet_files_and_modes(fleet: Fleet) -> None:
    root = fleet.directory
    for directory in (root, root / "trust", root / "rims", root / "ocsp", root / "gpus"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for position in range(GPUS):
        key = root / "gpus" / str(position) / "key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert len(x509.load_pem_x509_certificates(fleet.chain_pem(position))) == 5
    assert sorted(p.name for p in fleet.rims_dir.iterdir()) == sorted(
        f"{rim_id}.xml" for rim_id in fleet.rim_ids
    )
    # Identity CA + provisioner ICA + 3 RIM-chain certificates + (BROM, leaf) per GPU.
    assert len(list(fleet.ocsp_dir.iterdir())) == 5 + 2 * GPUS
    policy = load_policy(fleet.policy_path.read_bytes())
    assert policy.allowed_rim_ids == frozenset(fleet.rim_ids)
    assert policy.allowed_cc_states == frozenset({CcState.ON})
    assert load_fleet(root).gpu_count == GPUS


def test_attest_rejects_bad_arguments(fleet: Fleet) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        fleet.attest(0, bytes(31))
    with pytest.raises(IndexError):
        fleet.attest(GPUS, bytes(32))
    first, second = fleet.attest(0, bytes(32))[0], fleet.attest(0, bytes(32))[0]
    assert first != second  # fresh responder nonce and signature each time


def test_create_fleet_refuses_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="--gpus"):
        create_fleet(tmp_path / "a", gpus=0)
    with pytest.raises(FleetError, match="--validity-days"):
        create_fleet(tmp_path / "b", gpus=1, validity_days=0)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("")
    with pytest.raises(FleetError, match="not an empty directory"):
        create_fleet(tmp_path / "c", gpus=1)


def _copy(fleet: Fleet, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(fleet.directory, target)
    return target


def test_load_fleet_refuses_readable_key(fleet: Fleet, tmp_path: Path) -> None:
    copy = _copy(fleet, tmp_path)
    key = copy / "gpus" / "1" / "key.pem"
    key.chmod(0o640)
    with pytest.raises(FleetError, match=r"gpus/1/key.pem: readable by group or others"):
        load_fleet(copy)


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        ("fleet.json", "fleet.json: missing"),
        ("trust/device_root.pem", "device_root.pem: missing"),
        ("gpus/2/chain.pem", "gpus/2/chain.pem: missing"),
        ("gpus/0/key.pem", "gpus/0/key.pem: missing"),
    ],
)
def test_load_fleet_names_the_missing_file(
    fleet: Fleet, tmp_path: Path, remove: str, named: str
) -> None:
    copy = _copy(fleet, tmp_path)
    (copy / remove).unlink()
    with pytest.raises(FleetError, match=re.escape(named)):
        load_fleet(copy)


def test_load_fleet_names_bad_files(fleet: Fleet, tmp_path: Path) -> None:
    copy = _copy(fleet, tmp_path)
    (copy / "gpus" / "0" / "chain.pem").write_bytes(fleet.chain_pem(1))
    with pytest.raises(FleetError, match=r"gpus/0/chain.pem: the leaf is not for"):
        load_fleet(copy)
    (copy / "fleet.json").write_text("[]")
    with pytest.raises(FleetError, match=r"fleet\.json: not a JSON object"):
        load_fleet(copy)


# --- the CLI -------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devsim.nvidia", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_cli_init_writes_a_loadable_fleet(tmp_path: Path) -> None:
    target = tmp_path / "cli-fleet"
    done = _cli("init", str(target), "--gpus", "2", "--validity-days", "3")
    assert done.returncode == 0, done.stderr
    assert "TEST roots" in done.stdout
    fleet = load_fleet(target)
    assert fleet.gpu_count == 2
    assert fleet.valid_until - fleet.created_at == timedelta(days=3)
    for position in range(2):
        key = target / "gpus" / str(position) / "key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_cli_help_explains() -> None:
    done = _cli("init", "--help")
    assert done.returncode == 0
    assert "TEST roots" in done.stdout
    assert "--validity-days" in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("init", "{dir}", "--gpus", "0"),
        ("init", "{dir}", "--gpus", "many"),
        ("init", "{dir}"),
        ("init", "{dir}", "--gpus", "1", "--validity-days", "-1"),
        ("frobnicate",),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = _cli(*(a.format(dir=tmp_path / "f") for a in args))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "error" in done.stderr
    assert not (tmp_path / "f").exists()
