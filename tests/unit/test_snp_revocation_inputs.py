"""AMD CRLs as inputs: ``evidence verify snp --crl`` and ``[verifier.snp] crl_dir``.

The CLI is driven in-process (exit 0 affirming, 1 rejected, 2 bad input with one
line naming it); the TEST ARK-Milan is pinned for the tests that need the CLI to
trust it. The stream's SnpVerifier reads crl_dir again every round.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from devsim.x509util import pem
from tests.snp_crl_lines import (
    ATTEST,
    NONCE,
    NOW,
    REPORT_DATA,
    Line,
    current_crl,
    forged_amd_crl,
    make_line,
    policy_doc,
)
from tests.snp_vectors import AT, VALID, snp
from verifier.cli import main
from verifier.config import ConfigError, load_config
from verifier.evidence.snp.chain import ARK_SHA256
from verifier.evidence.snp.chain_cache import clear_chain_cache
from verifier.evidence.snp.crl import CHECK_REVOCATION
from verifier.evidence.snp.host_round import SnpVerifier
from verifier.evidence.snp.policy import load_policy
from verifier.evidence.snp.tcb import ProductLine
from weightgate.v1 import attestation_pb2


@pytest.fixture(scope="module")
def milan() -> Line:
    return make_line("Milan")


@pytest.fixture(autouse=True)
def _cold() -> Iterator[None]:
    clear_chain_cache()
    yield
    clear_chain_cache()


# --- evidence verify snp --crl ---------------------------------------------------------------


def _cli(capsys: Any, *args: str) -> tuple[int, Any, str]:
    capsys.readouterr()
    code = main(["evidence", "verify", "snp", *args, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


def _test_files(tmp_path: Path, line: Line) -> list[str]:
    """The line's report, VCEK, chain and a policy they satisfy, as files."""
    (tmp_path / "report.bin").write_bytes(line.report)
    (tmp_path / "vcek.der").write_bytes(
        line.hierarchy.vcek.public_bytes(serialization.Encoding.DER)
    )
    (tmp_path / "chain.pem").write_bytes(pem(line.hierarchy.ask) + pem(line.ark.certificate))
    (tmp_path / "policy.json").write_text(json.dumps(policy_doc(line)))
    return ["--report", str(tmp_path / "report.bin"), "--vcek", str(tmp_path / "vcek.der"),
            "--chain", str(tmp_path / "chain.pem"), "--policy", str(tmp_path / "policy.json"),
            "--report-data", REPORT_DATA.hex(), "--at", NOW.isoformat()]  # fmt: skip


@pytest.fixture
def pinned_test_milan(milan: Line, monkeypatch: pytest.MonkeyPatch) -> Line:
    # The CLI trusts only pinned ARKs: pin the TEST ARK-Milan for this test alone.
    monkeypatch.setitem(ARK_SHA256, ProductLine.MILAN, milan.sha256)
    return milan


def test_cli_affirms_with_a_current_unlisted_crl(
    pinned_test_milan: Line, tmp_path: Path, capsys: Any
) -> None:
    args = _test_files(tmp_path, pinned_test_milan)
    (tmp_path / "milan.crl").write_bytes(pinned_test_milan.ark.crl(
        this_update=NOW - timedelta(hours=1), next_update=NOW + timedelta(days=7)))  # fmt: skip
    code, doc, _ = _cli(capsys, *args, "--crl", str(tmp_path / "milan.crl"))
    assert (code, doc["verdict"]) == (0, "affirming"), doc
    assert CHECK_REVOCATION in doc["checks_run"] and doc["claims"]["revocation"]["checked"]


def test_cli_rejects_a_revoked_ask(pinned_test_milan: Line, tmp_path: Path, capsys: Any) -> None:
    args = _test_files(tmp_path, pinned_test_milan)
    crl = pinned_test_milan.ark.crl(
        this_update=NOW - timedelta(hours=1),
        next_update=NOW + timedelta(days=7),
        revoked=[pinned_test_milan.hierarchy.ask.serial_number],
    )
    (tmp_path / "milan.crl").write_bytes(crl)
    code, doc, _ = _cli(capsys, *args, "--crl", str(tmp_path / "milan.crl"))
    assert code == 1 and [r["code"] for r in doc["reasons"]] == ["snp.cert.revoked"]


def test_cli_without_crl_affirms_and_says_revocation_was_not_checked(
    pinned_test_milan: Line, tmp_path: Path, capsys: Any
) -> None:
    code, doc, _ = _cli(capsys, *_test_files(tmp_path, pinned_test_milan))
    assert code == 0 and CHECK_REVOCATION not in doc["checks_run"]
    assert doc["claims"]["revocation"]["checked"] is False


def test_cli_forged_amd_crl_is_rejected(milan: Line, tmp_path: Path, capsys: Any) -> None:
    case = VALID[1]
    (tmp_path / "forged.crl").write_bytes(forged_amd_crl(milan))
    code, doc, _ = _cli(capsys, "--report", str(snp(case.report)), "--vcek", str(snp(case.key)),
                        "--chain", str(snp(case.chain)), "--at", AT.isoformat(),
                        "--crl", str(tmp_path / "forged.crl"))  # fmt: skip
    assert code == 1 and doc["reasons"][0]["code"] == "snp.crl.untrusted"


@pytest.mark.parametrize("content", [None, b"not a crl", b"\x30\x03\x02\x01\x01"])
def test_cli_unreadable_crl_is_bad_usage_naming_the_file(
    content: bytes | None, tmp_path: Path, capsys: Any
) -> None:
    case = VALID[1]
    path = tmp_path / "bad.crl"
    if content is not None:
        path.write_bytes(content)
    code, doc, err = _cli(capsys, "--report", str(snp(case.report)), "--vcek", str(snp(case.key)),
                          "--chain", str(snp(case.chain)), "--crl", str(path))  # fmt: skip
    assert (code, doc) == (2, None)
    assert str(path) in err and len(err.strip().splitlines()) == 1


# --- [verifier.snp] crl_dir and the stream ----------------------------------------------------


def _config_dir(tmp_path: Path, line: Line, crls: dict[str, bytes]) -> Path:
    (tmp_path / "cert_chain.pem").write_bytes(pem(line.hierarchy.ask) + pem(line.ark.certificate))
    (tmp_path / "crls").mkdir()
    for name, data in crls.items():
        (tmp_path / "crls" / name).write_bytes(data)
    (tmp_path / "verifier.toml").write_text(
        "[verifier]\ninsecure = true\nrequire_ek_certificate = false\n\n[verifier.snp]\n"
        'insecure_test_roots = ["cert_chain.pem"]\ncrl_dir = "crls"\n'
    )
    return tmp_path / "verifier.toml"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"good.crl": None, "bad.crl": b"\x30\x00"}, r"crl_dir: .*bad\.crl: not an X\.509 CRL"),
        ({"big.der": b"\x30" * (300 * 1024)}, r"crl_dir: .*big\.der: larger than"),
        ({"notes.txt": b"ignored"}, r"crl_dir: .* holds no CRL"),
    ],
    ids=["malformed", "too-large", "empty"],
)
def test_config_names_a_bad_crl_file(
    milan: Line, tmp_path: Path, files: dict[str, bytes | None], message: str
) -> None:
    crls = {name: current_crl(milan) if data is None else data for name, data in files.items()}
    with pytest.raises(ConfigError, match=r"verifier\.toml:\d+: \[verifier\.snp\] " + message):
        load_config(_config_dir(tmp_path, milan, crls))


def test_stream_rereads_crl_dir_every_round(milan: Line, tmp_path: Path) -> None:
    config = load_config(_config_dir(tmp_path, milan, {"milan.crl": current_crl(milan)})).snp
    assert config is not None and config.crl_dir == tmp_path / "crls"
    verifier = SnpVerifier(config)
    policy = load_policy(json.dumps(policy_doc(milan)))
    der = milan.hierarchy.vcek.public_bytes(serialization.Encoding.DER)
    evidence = attestation_pb2.SnpEvidence(report=milan.report, vcek=der)

    def round_codes() -> tuple[frozenset[str], list[str]]:
        found = verifier.verify(
            evidence, challenge_nonce=NONCE, tpm_attest=ATTEST, policy=policy, at=NOW
        )
        return found.checks_run, [f"{r.code}: {r.detail}" for r in found.reasons]

    checks, reasons = round_codes()
    assert reasons == [] and {CHECK_REVOCATION, "snp.attested"} <= checks
    revoked = current_crl(milan, revoked=[milan.hierarchy.ask.serial_number])
    (tmp_path / "crls" / "milan.crl").write_bytes(revoked)
    checks, reasons = round_codes()
    assert "snp.attested" not in checks and reasons[0].startswith("snp.cert.revoked: ")
    (tmp_path / "crls" / "milan.crl").write_bytes(current_crl(milan))
    (tmp_path / "crls" / "late.der").write_bytes(b"junk")
    _, reasons = round_codes()
    assert len(reasons) == 1 and reasons[0].startswith("snp.crl.unreadable: ")
    assert "late.der" in reasons[0]
    (tmp_path / "crls" / "late.der").unlink()
    (tmp_path / "crls" / "milan.crl").unlink()
    _, reasons = round_codes()
    assert reasons[0].startswith("snp.crl.missing: ")


def test_cli_crl_with_azure_evidence_is_bad_usage(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "a.crl").write_bytes(b"")
    evidence = snp("trustee_azure_snp_vtpm_evidence_v2.json")
    chain, crl = snp("amd_milan_ask_ark.pem"), tmp_path / "a.crl"
    args = ["--azure-evidence", str(evidence), "--chain", str(chain), "--crl", str(crl)]
    code, doc, err = _cli(capsys, *args)
    assert (code, doc) == (2, None) and "--crl" in err
