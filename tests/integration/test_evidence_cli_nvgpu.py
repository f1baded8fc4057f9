"""`weightgate reference import-rim` and `weightgate evidence verify nvgpu` on the shared vectors.

Cases follow PROVENANCE.md section 3 (V1 is the one complete positive vector:
the 2.0.0 sample report with the two test_no_gpu RIMs, nonce 4cff..., at
2024-03-01) and section 4.2 (which RIMs are good, and why the incorrect-* ones
are not). Driven through ``verifier.cli.main`` in-process, once as a subprocess.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.vectors import vectors_dir
from verifier.cli import main

PYPI = "pypi_nv-local-gpu-verifier_2.7.3/samples"
SDK = "attestation-sdk/nv-attestation-sdk-cpp/unit-tests/testdata"
V1_REPORT = "pypi_nv-local-gpu-verifier_2.0.0/attestationReport.txt"
V1_CHAIN = "pypi_nv-local-gpu-verifier_2.0.0/gpuAkCertChain.txt"
V1_NONCE = "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e"
WRONG_NONCE = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
V1_RIMS = (
    f"{PYPI}/Driver_RIM_test_no_gpu.swidtag",
    f"{PYPI}/1010_0200_882_96005E0001_test_no_gpu.swidtag",
)
V1_IDS = ("NV_GPU_DRIVER_GH100_545.00", "NV_GPU_VBIOS_1010_0200_882_96005E0001")
AT_V1 = "2024-03-01T00:00:00+00:00"
MULTI_GPU = "attestation-sdk/common-test-data/serialized_test_evidence/multi_gpu_hopper.json"
MULTI_NONCE = "e97b23a1718095a0e9e35edca810768c70a6a5a389b705e753b197912bc11576"
# Inside the 550.144.03 driver RIM's and the switch BIOS RIM's windows (section 4.2).
AT_2026 = "2026-07-01T00:00:00+00:00"


def _v(rel: str) -> Path:
    return vectors_dir("nvidia") / rel


def _root(name: str) -> str:
    return str(_v(f"roots/{name}"))


def _import(store: Path, files: list[str], at: str, capsys: Any, *extra: str) -> tuple[int, Any]:
    capsys.readouterr()
    rim_root = _root("verifier_RIM_root.pem")
    code = main(
        ["reference", "import-rim", *map(str, files), "--store", str(store),
         "--rim-root", rim_root, "--at", at, "--json", *extra]
    )  # fmt: skip
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def v1_store(tmp_path: Path, capsys: Any) -> Path:
    store = tmp_path / "rims"
    code, _ = _import(store, [str(_v(f)) for f in V1_RIMS], AT_V1, capsys)
    assert code == 0
    return store


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.json"
    document = {
        "version": 1,
        "min_driver_version": "535.00",
        "min_vbios_version": "96.00.00.00.00",
        "allowed_rim_ids": [*V1_IDS, "NV_GPU_DRIVER_GH100_590.12"],
    }
    path.write_text(json.dumps(document))
    return path


def _verify_args(store: Path, policy: Path, *extra: str) -> list[str]:
    return [
        "evidence", "verify", "nvgpu",
        "--rim-store", str(store),
        "--device-root", _root("verifier_device_root.pem"),
        "--rim-root", _root("verifier_RIM_root.pem"),
        "--policy", str(policy), "--cc-state", "on", *extra,
    ]  # fmt: skip


def _v1_args(store: Path, policy: Path, nonce: str = V1_NONCE, *extra: str) -> list[str]:
    return _verify_args(
        store,
        policy,
        "--report", str(_v(V1_REPORT)), "--chain", str(_v(V1_CHAIN)),
        "--nonce", nonce, "--at", AT_V1, *extra,
    )  # fmt: skip


# --- import-rim ------------------------------------------------------------------


def test_import_rim_stores_good_rims_and_refuses_incorrect_ones(
    tmp_path: Path, capsys: Any
) -> None:
    good = [f"{SDK}/NV_GPU_DRIVER_GH100_550.144.03.xml"]
    good.append(f"{SDK}/switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml")
    bad = {
        f"{SDK}/incorrect_signature_driver_rim.xml": "nvidia.rim.signature_invalid",
        f"{SDK}/incorrect_cert_chain_driver_rim.xml": "nvidia.rim.chain_untrusted",
        # Edited after signing (section 4.2): the XML-DSig digest no longer matches.
        f"{SDK}/sample_rims/NV_GPU_DRIVER_GH100_535.86.09_measurement_mismatch.xml": (
            "nvidia.rim.signature_invalid"
        ),
        # Genuine, but its signers expired in 2025.
        V1_RIMS[0]: "nvidia.rim.expired",
    }
    store = tmp_path / "rims"
    code, out = _import(store, [str(_v(f)) for f in [*good, *bad]], AT_2026, capsys)
    assert code == 1
    by_file = {Path(f["file"]).name: f for f in out["files"]}
    assert by_file["NV_GPU_DRIVER_GH100_550.144.03.xml"]["status"] == "stored"
    assert (
        by_file["NV_GPU_DRIVER_GH100_550.144.03.xml"]["rim_id"] == "NV_GPU_DRIVER_GH100_550.144.03"
    )
    switch = by_file["switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml"]
    assert (switch["status"], switch["rim_id"]) == (
        "stored",
        "NV_SWITCH_BIOS_5612_0002_890_9610550001",
    )
    for rel, code_expected in bad.items():
        entry = by_file[Path(rel).name]
        assert entry["status"] == "refused", rel
        assert entry["reason"].startswith(code_expected), (rel, entry["reason"])
    # Importing again is idempotent, and says so.
    code, out = _import(store, [str(_v(good[0]))], AT_2026, capsys)
    assert code == 0
    assert out["files"][0]["status"] == "already present"


def test_import_rim_text_output_and_id_checks(tmp_path: Path, capsys: Any) -> None:
    store = tmp_path / "rims"
    rim_root = _root("verifier_RIM_root.pem")
    code = main(
        ["reference", "import-rim", str(_v(V1_RIMS[1])), "--store", str(store),
         "--rim-root", rim_root, "--at", AT_V1]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    assert text.startswith("stored ") and "NV_GPU_VBIOS_1010_0200_882_96005E0001 sha256 " in text
    # An id whose version disagrees with the signed content is refused.
    code, out = _import(
        store, [str(_v(V1_RIMS[0]))], AT_V1, capsys, "--rim-id", "NV_GPU_DRIVER_GH100_550.00"
    )
    assert code == 1
    assert out["files"][0]["reason"].startswith("nvidia.rim.id_mismatch")


def test_import_rim_refuses_a_root_that_is_not_nvidias(tmp_path: Path, capsys: Any) -> None:
    other = _v(f"{SDK}/incorrect_rim_root.crt")
    args = ["reference", "import-rim", str(_v(V1_RIMS[0])), "--store", str(tmp_path / "s")]
    assert main([*args, "--rim-root", str(other)]) == 2
    assert "not NVIDIA's pinned root" in capsys.readouterr().err
    assert main(args) == 2
    assert "--rim-root" in capsys.readouterr().err
    # The explicit escape hatch for test roots: accepted, then the RIM fails its chain.
    code = main([*args, "--rim-root", str(other), "--allow-other-rim-root", "--at", AT_V1])
    assert code == 1
    assert "nvidia.rim.chain_untrusted" in capsys.readouterr().out


# --- verify nvgpu ----------------------------------------------------------------


def test_v1_affirms_except_for_skipped_ocsp(v1_store: Path, policy: Path, capsys: Any) -> None:
    assert main(_v1_args(v1_store, policy, V1_NONCE, "--ocsp-skip", "--json")) == 3
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "nvgpu"
    assert out["verdict"] == "warning"
    assert [r["code"] for r in out["reasons"]] == ["nvidia.ocsp.not_checked"]
    (gpu,) = out["claims"]["devices"]
    assert gpu["name"] == "gpu0" and gpu["verdict"] == "warning"
    assert {"nvidia.chain", "nvidia.report.nonce", "nvidia.measurement.compare"} <= set(
        gpu["checks_run"]
    )
    assert {r["rim_id"] for r in out["claims"]["rims"]} == set(V1_IDS)
    # The text form names the device, the RIM chosen, and the host verdict.
    assert main(_v1_args(v1_store, policy, V1_NONCE, "--ocsp-skip")) == 3
    text = capsys.readouterr().out
    assert "gpu0: warning" in text and "host: warning" in text
    assert "rim NV_GPU_DRIVER_GH100_545.00: sha256 " in text


def test_v1_with_an_empty_ocsp_cache_is_rejected(
    v1_store: Path, policy: Path, tmp_path: Path, capsys: Any
) -> None:
    cache = tmp_path / "ocsp"
    cache.mkdir()
    assert main(_v1_args(v1_store, policy, V1_NONCE, "--ocsp", str(cache), "--json")) == 1
    out = json.loads(capsys.readouterr().out)
    assert "nvidia.ocsp.missing" in {r["code"] for r in out["reasons"]}


def test_wrong_nonce_names_gpu0(v1_store: Path, policy: Path, capsys: Any) -> None:
    assert main(_v1_args(v1_store, policy, WRONG_NONCE, "--ocsp-skip")) == 1
    text = capsys.readouterr().out
    assert "gpu0: contraindicated" in text
    assert "nvidia.report.nonce_mismatch: gpu0:" in text


def test_expired_rims_at_today_are_missing(v1_store: Path, policy: Path, capsys: Any) -> None:
    args = _v1_args(v1_store, policy, V1_NONCE, "--ocsp-skip", "--json")
    args[args.index(AT_V1)] = "2026-11-29T00:00:00+00:00"
    assert main(args) == 1
    out = json.loads(capsys.readouterr().out)
    assert all(r["digest"] is None for r in out["claims"]["rims"])
    assert "nvidia.rim.missing" in {r["code"] for r in out["reasons"]}


def test_multi_device_file_names_the_bad_device_only(
    v1_store: Path, policy: Path, tmp_path: Path, capsys: Any
) -> None:
    entries = json.loads(_v(MULTI_GPU).read_text())
    report = bytearray(base64.b64decode(entries[2]["evidence"]))
    report[60] ^= 0x01  # inside the signed bytes: the signature no longer verifies
    entries[2]["evidence"] = base64.b64encode(bytes(report)).decode()
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps(entries))
    args = _verify_args(
        v1_store, policy, "--evidence", str(evidence), "--nonce", MULTI_NONCE,
        "--at", "2025-12-01T00:00:00+00:00", "--ocsp-skip", "--json",
    )  # fmt: skip
    assert main(args) == 1
    out = json.loads(capsys.readouterr().out)
    devices = {d["name"]: d for d in out["claims"]["devices"]}
    assert list(devices) == ["gpu0", "gpu1", "gpu2", "gpu3"]
    bad = {name for name, d in devices.items() if "nvidia.report.signature" not in d["checks_run"]}
    assert bad == {"gpu2"}
    assert [r["code"] for r in devices["gpu2"]["reasons"]] == ["nvidia.report.signature_invalid"]
    # Every other device was verified to the end (no early stop): its RIMs are not here.
    for name in ("gpu0", "gpu1", "gpu3"):
        assert "nvidia.policy" in devices[name]["checks_run"]
        assert "nvidia.rim.missing" in {r["code"] for r in devices[name]["reasons"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--nonce", "zz"), "not hex"),
        (("--nonce", "00"), "an SPDM nonce is 32"),
        (("--policy", "/nonexistent/policy.json"), "cannot read policy"),
        (("--at", "yesterday"), "not an ISO 8601 time"),
        (("--device-root", "RIM_ROOT"), "not NVIDIA's pinned Device Identity CA"),
        (("--chain", "/nonexistent/chain.pem"), "cannot read certificate chain"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    v1_store: Path, policy: Path, capsys: Any, change: tuple[str, str], message: str
) -> None:
    args = _v1_args(v1_store, policy, V1_NONCE, "--ocsp-skip")
    value = _root("verifier_RIM_root.pem") if change[1] == "RIM_ROOT" else change[1]
    args[args.index(change[0]) + 1] = value
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_evidence_json_and_bad_policy_exit_2(
    v1_store: Path, policy: Path, tmp_path: Path, capsys: Any
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"not": "a list"}')
    args = _verify_args(v1_store, policy, "--evidence", str(broken), "--nonce", V1_NONCE)
    assert main([*args, "--ocsp-skip"]) == 2
    assert "evidence" in capsys.readouterr().err
    policy.write_text(json.dumps({"version": 1, "min_driver_version": "535.00"}))
    assert main(_v1_args(v1_store, policy, V1_NONCE, "--ocsp-skip")) == 2
    assert "policy" in capsys.readouterr().err


def test_ocsp_choice_is_required(v1_store: Path, policy: Path, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exited:
        main(_v1_args(v1_store, policy))
    assert exited.value.code == 2
    assert "--ocsp" in capsys.readouterr().err


def test_subprocess_run_of_v1(v1_store: Path, policy: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "verifier.cli",
            *_v1_args(v1_store, policy, V1_NONCE, "--ocsp-skip"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert "gpu0: warning" in done.stdout
    assert "Traceback" not in done.stderr


# --- --trust-dir -----------------------------------------------------------------


def _trust_args(store: Path, policy: Path, *roots: str) -> list[str]:
    return [
        "evidence", "verify", "nvgpu", "--rim-store", str(store), *roots,
        "--policy", str(policy), "--cc-state", "on",
        "--report", str(_v(V1_REPORT)), "--chain", str(_v(V1_CHAIN)),
        "--nonce", V1_NONCE, "--at", AT_V1, "--ocsp-skip", "--json",
    ]  # fmt: skip


def test_trust_dir_gives_the_same_verdict_as_the_root_files(
    v1_store: Path, policy: Path, capsys: Any
) -> None:
    capsys.readouterr()
    by_files = main(_v1_args(v1_store, policy, V1_NONCE, "--ocsp-skip", "--json"))
    from_files = json.loads(capsys.readouterr().out)
    by_dir = main(_trust_args(v1_store, policy, "--trust-dir", str(vectors_dir("nvidia", "roots"))))
    from_dir = json.loads(capsys.readouterr().out)
    assert by_files == by_dir == 3  # affirming but for OCSP, skipped: a warning
    assert from_dir["verdict"] == from_files["verdict"] == "warning"
    assert from_dir["reasons"] == from_files["reasons"]


def test_trust_dir_refuses_a_foreign_root_naming_it(
    tmp_path: Path, v1_store: Path, policy: Path, capsys: Any
) -> None:
    trust = tmp_path / "trust"
    trust.mkdir()
    for pem in vectors_dir("nvidia", "roots").glob("*.pem"):
        (trust / pem.name).write_bytes(pem.read_bytes())
    # Beside NVIDIA's two roots, a certificate that is no pinned root (the V1
    # device chain's leaf): the whole directory is refused, naming the file.
    chain = _v(V1_CHAIN).read_bytes()
    (trust / "extra.pem").write_bytes(chain[: chain.index(b"-----END CERTIFICATE-----") + 26])
    capsys.readouterr()
    code = main(_trust_args(v1_store, policy, "--trust-dir", str(trust)))
    err = capsys.readouterr().err
    assert code == 2
    assert "extra.pem" in err and "pinned" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "roots",
    [
        [],  # nothing assumed
        ["--device-root", "x.pem"],  # half of the pair
        ["--trust-dir", "DIR", "--allow-other-roots"],  # a pinned dir cannot be widened
    ],
)
def test_roots_must_be_named(v1_store: Path, policy: Path, capsys: Any, roots: list[str]) -> None:
    roots = [str(vectors_dir("nvidia", "roots")) if r == "DIR" else r for r in roots]
    capsys.readouterr()
    code = main(_trust_args(v1_store, policy, *roots))
    assert code == 2
    assert "weightgate evidence:" in capsys.readouterr().err


def test_policy_device_count_is_enforced_offline_too(
    tmp_path: Path, v1_store: Path, policy: Path, capsys: Any
) -> None:
    counted = tmp_path / "counted.json"
    counted.write_text(json.dumps(json.loads(policy.read_text()) | {"device_count": 2}))
    capsys.readouterr()
    code = main(_v1_args(v1_store, counted, V1_NONCE, "--ocsp-skip", "--json"))
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    # The count is the finding; OCSP, skipped here, stays a warning beside it.
    codes = [r["code"] for r in out["reasons"]]
    assert out["verdict"] == "contraindicated"
    assert sorted(codes) == ["nvidia.devices.count_mismatch", "nvidia.ocsp.not_checked"]
