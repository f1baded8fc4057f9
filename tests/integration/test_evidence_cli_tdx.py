"""`weightgate evidence verify tdx` on every TDX vector: verdict, reasons, exit status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.tdx_vectors import COLLATERAL_2023, SPR_SIGNED_END, collateral_dir, tdx_dir, tdx_file
from verifier.cli import main
from verifier.evidence.tdx.quote import parse_quote, strip_zero_padding


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["evidence", "verify", "tdx", "--trust-dir", str(tdx_dir()), "--json", *args])
    out = capsys.readouterr().out
    return code, (json.loads(out) if out.strip() else {})


def _codes(document: dict[str, Any]) -> set[str]:
    return {r["code"] for r in document["reasons"]}


def _policy(tmp_path: Path, **doc: Any) -> str:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"version": 1, **doc}))
    return str(path)


def test_debug_td_rejected_by_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quote = tdx_dir() / "trustee_v4_quote_debug_td.dat"
    collateral = collateral_dir(tmp_path / "c", **COLLATERAL_2023)
    mrtd = (
        "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b6"
        "89cac1599ccea1b7d420483a9ce5f031"
    )
    common = [
        "--quote",
        str(quote),
        "--collateral",
        str(collateral),
        "--at",
        "2023-07-01T00:00:00Z",
    ]
    code, doc = _run(capsys, *common)
    assert (code, doc["verdict"], _codes(doc)) == (3, "warning", {"tdx.policy.not_appraised"})
    assert doc["claims"]["tcb"]["status"] == "UpToDate"
    code, doc = _run(capsys, *common, "--policy", _policy(tmp_path, mrtd=[mrtd]))
    assert (code, _codes(doc)) == (1, {"tdx.policy.debug_td"})
    allow = _policy(tmp_path, mrtd=[mrtd], allow_debug=True)
    code, doc = _run(capsys, *common, "--policy", allow)
    assert (code, doc["verdict"]) == (0, "affirming")
    other = _policy(tmp_path, mrtd=["00" * 48], rtmr0=["11" * 48], allow_debug=False)
    code, doc = _run(capsys, *common, "--policy", other)
    assert _codes(doc) == {
        "tdx.policy.debug_td",
        "tdx.policy.mrtd_mismatch",
        "tdx.policy.rtmr0_mismatch",
    }
    code, doc = _run(capsys, *common, "--report-data", "00" * 64)
    assert "tdx.quote.report_data_mismatch" in _codes(doc)


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("trustee_azure_tdx_quote.dat", "tdx.policy.sept_ve_enabled"),
        ("trustee_v5_quote_td15.dat", "tdx.policy.mrservicetd_not_allowed"),
    ],
)
def test_td_fields_refused_by_default_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, refused: str
) -> None:
    quote = tdx_dir() / name
    body = parse_quote(strip_zero_padding(quote.read_bytes())[0]).body
    mrtd = [body.mr_td.hex()]
    common = ["--quote", str(quote), "--at", "2026-02-15T00:00:00Z", "--policy"]
    code, doc = _run(capsys, *common, _policy(tmp_path, mrtd=mrtd))
    assert (code, _codes(doc)) == (1, {"tdx.tcb.not_evaluated", refused})
    if body.mr_servicetd is not None and any(body.mr_servicetd):
        allowed = _policy(tmp_path, mrtd=mrtd, mrservicetd=[body.mr_servicetd.hex()])
    else:
        allowed = _policy(tmp_path, mrtd=mrtd, allow_sept_ve=True)
    code, doc = _run(capsys, *common, allowed)
    assert (code, _codes(doc)) == (3, {"tdx.tcb.not_evaluated"})


def test_collateral_stale_at_a_later_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quote = tdx_dir() / "trustee_v4_quote_debug_td.dat"
    collateral = collateral_dir(tmp_path / "c", **COLLATERAL_2023)
    code, doc = _run(capsys, "--quote", str(quote), "--collateral", str(collateral),
                     "--at", "2024-06-01T00:00:00Z")  # fmt: skip
    assert code == 1
    assert {"tdx.crl.expired", "tdx.collateral.expired"} <= _codes(doc)


def test_spr_quote_with_trailing_text_is_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = _run(capsys, "--quote", str(tdx_dir() / "gotdx_v4_quote_spr.dat"))
    assert (code, _codes(doc)) == (1, {"tdx.quote.malformed"})
    trimmed = tmp_path / "spr.dat"
    trimmed.write_bytes(tdx_file("gotdx_v4_quote_spr.dat")[:SPR_SIGNED_END])
    collateral = collateral_dir(tmp_path / "c", **COLLATERAL_2023)
    code, doc = _run(capsys, "--quote", str(trimmed), "--collateral", str(collateral),
                     "--at", "2023-07-01T00:00:00Z")  # fmt: skip
    assert (code, _codes(doc)) == (1, {"tdx.tcb.not_supported", "tdx.policy.not_appraised"})


@pytest.mark.parametrize(
    ("name", "info"),
    [
        ("gotdx_v5_quote_td15.dat", "gotdx_tcbinfo_fmspc_90c06f000000.json"),
        ("trustee_v5_quote_td15.dat", "gotdx_tcbinfo_fmspc_90c06f000000.json"),
        ("trustee_v4_quote_fmspc_00a06d080000.dat", "trustee_tcbinfo_fmspc_00a06d080000.json"),
    ],
)
def test_2025_2026_quotes_stop_at_expired_signer_and_crls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, info: str
) -> None:
    # PROVENANCE: the collateral is internally valid, but the only TCB Signing
    # certificate here expired 2025-05-21 and the CRLs earlier: no TCB status.
    files = {**COLLATERAL_2023, "tcb_info.json": info}
    collateral = collateral_dir(tmp_path / "c", **files)
    code, doc = _run(capsys, "--quote", str(tdx_dir() / name), "--collateral", str(collateral),
                     "--at", "2026-02-15T00:00:00Z")  # fmt: skip
    assert code == 1
    assert {"tdx.collateral.signer.expired", "tdx.crl.expired"} <= _codes(doc)
    assert doc["claims"]["quote"]["authenticated"] is True


def test_cos113_ccel_replay(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--quote", str(tdx_dir() / "gotdx_v4_quote_cos113.dat"), "--at", "2026-02-15T00:00:00Z"]
    code, doc = _run(capsys, *args, "--ccel", str(tdx_dir() / "gotdx_cos113_ccel_eventlog.bin"))
    assert code == 3
    assert _codes(doc) == {"tdx.tcb.not_evaluated", "tdx.policy.not_appraised"}
    replay = next(c for c in doc["checks"] if c["name"] == "tdx.ccel.replay")
    assert replay["status"] == "passed"
    assert doc["claims"]["ccel"]["events"] == 44


def test_ccel_of_another_td_mismatches(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "--quote",
        str(tdx_dir() / "trustee_azure_tdx_quote.dat"),
        "--at",
        "2026-02-15T00:00:00Z",
    ]
    code, doc = _run(capsys, *args, "--ccel", str(tdx_dir() / "gotdx_cos113_ccel_eventlog.bin"))
    assert (code, "tdx.ccel.rtmr_mismatch" in _codes(doc)) == (1, True)


@pytest.mark.parametrize(
    ("name", "code_expected"),
    [
        ("trustee_sgx_v3_quote_occlum.dat", "tdx.quote.malformed"),
        ("qvl_synthetic_v4_quote.dat", "tdx.quote.malformed"),
        ("trustee_azure_tdx_quote.dat", None),
    ],
)
def test_other_quotes(
    capsys: pytest.CaptureFixture[str], name: str, code_expected: str | None
) -> None:
    code, doc = _run(capsys, "--quote", str(tdx_dir() / name), "--at", "2026-02-15T00:00:00Z")
    if code_expected is None:
        assert (code, doc["verdict"]) == (3, "warning")
    else:
        assert (code, _codes(doc)) == (1, {code_expected})


def test_flipped_report_data_breaks_the_quote_signature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(tdx_file("gotdx_v5_quote_td15.dat"))
    data[48 + 6 + 520] ^= 0x01  # v5: header, type+size, REPORTDATA at body offset 520
    path = tmp_path / "q.dat"
    path.write_bytes(bytes(data))
    code, doc = _run(capsys, "--quote", str(path), "--at", "2026-02-15T00:00:00Z")
    assert (code, _codes(doc)) == (1, {"tdx.quote.signature_invalid"})


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quote = str(tdx_dir() / "gotdx_v5_quote_td15.dat")
    assert main(["evidence", "verify", "tdx", "--quote", quote, "--trust-dir", str(tmp_path)]) == 2
    (tmp_path / "intel_sgx_root_ca.pem").symlink_to(tdx_dir() / "qvl_synthetic_root_ca.pem")
    assert main(["evidence", "verify", "tdx", "--quote", quote, "--trust-dir", str(tmp_path)]) == 2
    code, _ = _run(capsys, "--quote", quote, "--report-data", "abcd")
    assert code == 2
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"version": 1, "mrtd": []}))
    code, _ = _run(capsys, "--quote", quote, "--policy", str(bad))
    assert code == 2
    capsys.readouterr()
