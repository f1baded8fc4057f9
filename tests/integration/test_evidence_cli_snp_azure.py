"""`weightgate evidence verify snp --azure-evidence` on the real Azure vTPM vector.

PROVENANCE.md: valid chain TPM quote -> HCLAkPub -> SNP REPORT_DATA -> VCEK ->
ARK-Milan, quote nonce 982f5c6e... (48 bytes). Driven through
``verifier.cli.main`` in-process, once as a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.snp_vectors import snp
from verifier.cli import main

AT = "2025-06-01T00:00:00+00:00"
EVIDENCE = "trustee_azure_snp_vtpm_evidence_v2.json"
NONCE = (
    "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9a"
    "a398f647caa2338748cd0fd9f5f819ef"
)
MEASUREMENT = (
    "5b0ce64ad1c1f6375dbda5f760b98526ca1bcf91b8195091afc28e7b024251d6"
    "8fe32e05af34048d6607678cd23283ff"
)


def _run(capsys: Any, *args: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main(["evidence", "verify", "snp", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def _args(*extra: str, evidence: Path | None = None) -> list[str]:
    path = evidence if evidence is not None else snp(EVIDENCE)
    return ["--azure-evidence", str(path), "--chain", str(snp("amd_milan_ask_ark.pem")),
            "--at", AT, *extra]  # fmt: skip


def _policy(tmp_path: Path) -> str:
    path = tmp_path / "policy.json"
    tcb = {"bootloader": 4, "tee": 0, "snp": 24, "microcode": 219}
    doc = {"version": 1, "allowed_measurements": [MEASUREMENT], "min_tcb": {"Milan": tcb}}
    path.write_text(json.dumps({**doc, "allow_smt": True}))
    return str(path)


def _codes(doc: Any) -> list[str]:
    return [r["code"] for r in doc["reasons"]]


def test_vector_with_nonce_and_policy_affirms(tmp_path: Path, capsys: Any) -> None:
    code, doc = _run(capsys, *_args("--nonce", NONCE, "--policy", _policy(tmp_path)))
    assert code == 0, doc
    assert doc["verdict"] == "affirming"
    assert doc["claims"]["azure"]["tpm_nonce"] == NONCE
    assert {c["name"] for c in doc["checks"] if c["status"] == "passed"} >= {
        "snp.chain",
        "snp.azure.runtime_claims",
        "snp.azure.quote.signature",
        "snp.azure.quote.nonce",
        "snp.azure.quote.pcr_digest",
        "snp.policy",
    }


def test_vector_without_nonce_or_policy_warns(capsys: Any) -> None:
    code, doc = _run(capsys, *_args())
    assert code == 3
    assert _codes(doc) == ["snp.azure.nonce_not_checked", "snp.policy.not_appraised"]


def test_trust_dir(tmp_path: Path, capsys: Any) -> None:
    trust = tmp_path / "amd"
    trust.mkdir()
    shutil.copy(snp("amd_milan_ask_ark.pem"), trust / "milan.pem")
    code, doc = _run(capsys, "--azure-evidence", str(snp(EVIDENCE)), "--trust-dir", str(trust),
                     "--nonce", NONCE, "--at", AT)  # fmt: skip
    assert code == 3
    assert _codes(doc) == ["snp.policy.not_appraised"]


def test_wrong_nonce(capsys: Any) -> None:
    code, doc = _run(capsys, *_args("--nonce", "00" * 48))
    assert code == 1
    assert _codes(doc) == ["snp.azure.nonce_mismatch", "snp.policy.not_appraised"]


def test_flipped_quote_byte(tmp_path: Path, capsys: Any) -> None:
    doc = json.loads(snp(EVIDENCE).read_bytes())
    message = bytearray.fromhex(doc["tpm_quote"]["message"])
    message[-1] ^= 0x01  # the last byte of pcrDigest
    doc["tpm_quote"]["message"] = message.hex()
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps(doc))
    code, out = _run(capsys, *_args("--nonce", NONCE, evidence=path))
    assert code == 1
    assert _codes(out) == ["snp.azure.quote_signature_invalid", "snp.policy.not_appraised"]


def test_flipped_runtime_claims_byte(tmp_path: Path, capsys: Any) -> None:
    import base64  # noqa: PLC0415

    doc = json.loads(snp(EVIDENCE).read_bytes())
    hcl = bytearray(base64.urlsafe_b64decode(doc["hcl_report"]))
    hcl[0x4C0 + 20 + 100] ^= 0x01
    doc["hcl_report"] = base64.urlsafe_b64encode(bytes(hcl)).decode()
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps(doc))
    code, out = _run(capsys, *_args("--nonce", NONCE, evidence=path))
    assert code == 1
    assert _codes(out) == ["snp.azure.runtime_claims_mismatch", "snp.policy.not_appraised"]


def test_malformed_evidence_is_a_report_not_a_usage_error(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "evidence.json"
    path.write_text('{"version": 3}')
    code, doc = _run(capsys, *_args(evidence=path))
    assert code == 1
    assert _codes(doc) == ["snp.azure.malformed"]


@pytest.mark.parametrize(
    "args",
    [
        ["--azure-evidence", "E", "--report", "R"],
        ["--azure-evidence", "{evidence}", "--vcek", "V", "--chain", "{chain}"],
        ["--azure-evidence", "{evidence}", "--report-data", "00", "--chain", "{chain}"],
        ["--azure-evidence", "{evidence}"],
        ["--azure-evidence", "{evidence}", "--chain", "{chain}", "--nonce", "zz"],
        ["--report", "{evidence}", "--vcek", "{chain}", "--chain", "{chain}", "--nonce", "00"],
        ["--report", "{evidence}", "--chain", "{chain}"],
    ],
)
def test_usage_errors(args: list[str], capsys: Any) -> None:
    values = {"evidence": str(snp(EVIDENCE)), "chain": str(snp("amd_milan_ask_ark.pem"))}
    argv = ["evidence", "verify", "snp", *(a.format(**values) for a in args)]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: mutually exclusive options
        code = int(exc.code or 0)
    assert code == 2
    assert capsys.readouterr().out == ""


def test_human_output_as_subprocess() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "verifier.cli",
            "evidence",
            "verify",
            "snp",
            *_args("--nonce", NONCE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "snp.azure.quote.signature" in result.stdout
    assert f"azure TPM quote nonce: {NONCE}" in result.stdout
