"""`weightgate evidence verify snp` on the shared vectors (PROVENANCE.md conclusions).

Driven through ``verifier.cli.main`` in-process, once as a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.snp_vectors import AZURE, GENOA, GOSEVGUEST, TRUSTEE_V2, VALID, VLEK, Case, snp
from verifier.cli import main

AT = "2025-06-01T00:00:00+00:00"
AFTER_VLEK = "2026-11-29T00:00:00+00:00"
MILAN_TCB = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
TRUSTEE_REPORT_DATA = "ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2"
TRUSTEE_MEASUREMENT = (
    "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c"
    "23500644e0e692e6be917f9050d3d38c"
)


def _self_signed_pem(common_name: str) -> bytes:
    """A self-signed look-alike root with AMD's ARK name but another key."""
    import datetime as dt  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _run(capsys: Any, *args: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main(["evidence", "verify", "snp", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def _args(case: Case, *extra: str, at: str = AT) -> list[str]:
    return ["--report", str(snp(case.report)), "--vcek", str(snp(case.key)),
            "--chain", str(snp(case.chain)), "--at", at, *extra]  # fmt: skip


def _policy(tmp_path: Path, **doc: Any) -> str:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"version": 1, **doc}))
    return str(path)


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_every_valid_vector_authenticates_without_policy(case: Case, capsys: Any) -> None:
    code, doc = _run(capsys, *_args(case))
    assert code == 3, doc
    assert doc["verdict"] == "warning"
    assert {r["code"] for r in doc["reasons"]} == {
        "snp.policy.not_appraised",
        "snp.report.report_data_not_checked",
    }
    assert {"snp.chain", "snp.report.signature", "snp.tcb"} <= set(doc["checks_run"])


def test_trustee_v2_affirms_with_policy_and_report_data(tmp_path: Path, capsys: Any) -> None:
    policy = _policy(tmp_path, allowed_measurements=[TRUSTEE_MEASUREMENT],
                     min_tcb={"Milan": MILAN_TCB}, allow_smt=True,
                     allow_provisional_firmware=True)  # fmt: skip
    code, doc = _run(capsys, *_args(TRUSTEE_V2, "--policy", policy,
                                    "--report-data", TRUSTEE_REPORT_DATA))  # fmt: skip
    assert (code, doc["verdict"], doc["reasons"]) == (0, "affirming", [])
    assert doc["claims"]["product"] == "Milan" and doc["claims"]["key"] == "VCEK"


def test_trustee_v2_strict_policy_flags_provisional_firmware(tmp_path: Path, capsys: Any) -> None:
    policy = _policy(tmp_path, allowed_measurements=[TRUSTEE_MEASUREMENT],
                     min_tcb={"Milan": MILAN_TCB}, allow_smt=True)  # fmt: skip
    code, doc = _run(capsys, *_args(TRUSTEE_V2, "--policy", policy,
                                    "--report-data", TRUSTEE_REPORT_DATA))  # fmt: skip
    assert code == 1
    assert [r["code"] for r in doc["reasons"]] == ["snp.policy.provisional_firmware"]


def test_wrong_report_data_rejected(tmp_path: Path, capsys: Any) -> None:
    code, doc = _run(capsys, *_args(TRUSTEE_V2, "--report-data", "00" * 32))
    assert code == 1
    assert "snp.report.report_data_mismatch" in [r["code"] for r in doc["reasons"]]


def test_gosevguest_debug_rejected_by_policy(tmp_path: Path, capsys: Any) -> None:
    measurement = "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b" + (
        "6bdf8a9ece31a5a608eb0cf2e4872b01"
    )
    tcb = {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}
    policy = _policy(tmp_path, allowed_measurements=[measurement], min_tcb={"Milan": tcb},
                     allow_smt=True)  # fmt: skip
    code, doc = _run(capsys, *_args(GOSEVGUEST, "--policy", policy, "--report-data", "0102030405"))
    assert code == 1
    assert [r["code"] for r in doc["reasons"]] == ["snp.policy.debug_allowed"]


def test_vlek_expired_at_today(capsys: Any) -> None:
    code, doc = _run(capsys, *_args(VLEK, at=AFTER_VLEK))
    assert code == 1
    assert [r["code"] for r in doc["reasons"]] == ["snp.chain.expired"]
    statuses = {c["name"]: c["status"] for c in doc["checks"]}
    assert statuses["snp.chain"] == "failed" and statuses["snp.report.signature"] == "not_run"


def test_vlek_under_ask_chain_rejected(capsys: Any) -> None:
    args = _args(VLEK)
    args[args.index("--chain") + 1] = str(snp("amd_milan_ask_ark.pem"))
    code, doc = _run(capsys, *args)
    assert code == 1 and doc["reasons"][0]["code"] == "snp.chain.key_kind_mismatch"


def test_genoa_under_milan_chain_rejected(capsys: Any) -> None:
    args = _args(GENOA)
    args[args.index("--chain") + 1] = str(snp("amd_milan_ask_ark.pem"))
    code, doc = _run(capsys, *args)
    assert code == 1 and doc["reasons"][0]["code"] == "snp.chain.product_mismatch"


@pytest.mark.parametrize(
    "name", ["trustee_synthetic_vcek_hwid_raw.der", "trustee_synthetic_vcek_hwid_octetstring.der"]
)
def test_synthetic_vceks_rejected(name: str, capsys: Any) -> None:
    args = _args(TRUSTEE_V2)
    args[args.index("--vcek") + 1] = str(snp(name))
    code, doc = _run(capsys, *args)
    assert code == 1 and doc["reasons"][0]["code"] == "snp.chain.signature_invalid"


def test_azure_hcl_report_and_runtime_claims(capsys: Any) -> None:
    # Azure's bundle carries VCEK + ASK + ARK; the ARK is used because it matches the pin.
    code, doc = _run(capsys, "--report", str(snp(AZURE.report)), "--vcek", str(snp(AZURE.key)),
                     "--at", AT)  # fmt: skip
    assert code == 3
    statuses = {c["name"]: c["status"] for c in doc["checks"]}
    assert statuses["snp.azure.runtime_claims"] == "passed"
    assert doc["claims"]["azure_runtime_claims_sha256"] == doc["claims"]["report_data"][:64]


def test_azure_hcl_tampered_claims_rejected(tmp_path: Path, capsys: Any) -> None:
    data = bytearray(snp(AZURE.report).read_bytes())
    data[0x4C0 + 20 + 10] ^= 0x01  # one byte of the runtime claims JSON
    report = tmp_path / "hcl.bin"
    report.write_bytes(bytes(data))
    code, doc = _run(capsys, "--report", str(report), "--vcek", str(snp(AZURE.key)), "--at", AT)
    assert code == 1
    assert doc["reasons"][0]["code"] == "snp.azure.runtime_claims_mismatch"


def test_trust_dir(tmp_path: Path, capsys: Any) -> None:
    trust = tmp_path / "amd"
    trust.mkdir()
    for line in ("milan", "genoa", "turin"):
        shutil.copy(snp(f"amd_{line}_ask_ark.pem"), trust / f"{line}.pem")
    code, doc = _run(capsys, "--report", str(snp(GENOA.report)), "--vcek", str(snp(GENOA.key)),
                     "--trust-dir", str(trust), "--at", AT)  # fmt: skip
    assert code == 3 and doc["claims"]["product"] == "Genoa"


def test_trust_dir_with_unpinned_root_is_bad_usage(tmp_path: Path, capsys: Any) -> None:
    trust = tmp_path / "amd"
    trust.mkdir()
    (trust / "fake.pem").write_bytes(_self_signed_pem("ARK-Milan"))
    code = main(["evidence", "verify", "snp", *_args(TRUSTEE_V2, "--trust-dir", str(trust))])
    assert code == 2
    assert "not a pinned AMD ARK" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [
        ["--report-data", "zz"],
        ["--report-data", "00" * 65],
        ["--at", "yesterday"],
    ],
)
def test_bad_usage_exits_2(extra: list[str], capsys: Any) -> None:
    assert main(["evidence", "verify", "snp", *_args(TRUSTEE_V2, *extra)]) == 2
    assert capsys.readouterr().err.startswith("weightgate evidence: ")


def test_no_chain_and_no_trust_dir_is_bad_usage(capsys: Any) -> None:
    code = main(["evidence", "verify", "snp", "--report", str(snp(TRUSTEE_V2.report)),
                 "--vcek", str(snp(TRUSTEE_V2.key))])  # fmt: skip
    assert code == 2


def test_bad_policy_is_bad_usage(tmp_path: Path, capsys: Any) -> None:
    policy = _policy(tmp_path, allowed_measurements=[], min_tcb={"Milan": MILAN_TCB})
    assert main(["evidence", "verify", "snp", *_args(TRUSTEE_V2, "--policy", policy)]) == 2


def test_malformed_report_rejected(tmp_path: Path, capsys: Any) -> None:
    short = tmp_path / "short.bin"
    short.write_bytes(snp(TRUSTEE_V2.report).read_bytes()[:-1])
    args = _args(TRUSTEE_V2)
    args[args.index("--report") + 1] = str(short)
    code, doc = _run(capsys, *args)
    assert code == 1 and doc["reasons"][0]["code"] == "snp.report.malformed"


def test_subprocess_text_output() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "verifier.cli", "evidence", "verify", "snp", *_args(GOSEVGUEST)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "verdict: warning (snp)" in result.stdout
    assert "Milan-B0" in result.stdout and "debug True" in result.stdout
