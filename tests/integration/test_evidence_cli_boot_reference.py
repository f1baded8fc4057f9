"""`weightgate evidence verify tpm --boot-reference`, and SHA-1-only logs offline.

A real SHA-1-only log (GCE Debian 10, PROVENANCE: "reject by product policy") is
replayed into a fresh swtpm's sha1 bank, which is then quoted: the log replays to a
genuine quote, and only the reference may allow its SHA-1-only format. The
reference is the one `reference propose --dry-run` prints for that log.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tpm2_pytss import ESAPI, ESYS_TR, TPM2_ALG, TPML_DIGEST_VALUES, TPMT_HA

from agent.collectors.tpm import Tpm
from tests.integration.test_evidence_cli import cli, cli_json, codes, statuses, tpm
from verifier.demo.swtpm import SwtpmProcess
from verifier.evidence.tpm.eventlog import EV_NO_ACTION, PCR_NOT_EXTENDED, parse_event_log

LOG = ("go-tpm-tools", "eventlogs", "debian-10.bin")
LOG_PCRS = ("go-tpm-tools", "eventlogs", "debian-10.pcrs.json")
AK_HANDLE = 0x81010004
SHA1_ONLY = "tpm.eventlog.sha1_only"


@pytest.fixture
def debian_quote(
    swtpm_factory: Callable[..., SwtpmProcess], tmp_path: Path
) -> tuple[list[str], Path]:
    """The verify arguments for a quote of sha1 PCRs 0-9 and 12 after the log's extensions."""
    log = parse_event_log(Path(tpm(*LOG)).read_bytes())
    process = swtpm_factory(with_ek_certificate=False, pcr_banks=("sha1", "sha256"))
    ectx = ESAPI(process.tcti)
    try:
        for event in log.events:
            if event.event_type == EV_NO_ACTION or event.pcr == PCR_NOT_EXTENDED:
                continue
            value = TPMT_HA(hashAlg=TPM2_ALG.SHA1)
            value.digest.sha1 = event.digests["sha1"]
            ectx.pcr_extend(ESYS_TR.parse(f"PCR{event.pcr}"), TPML_DIGEST_VALUES([value]))
    finally:
        ectx.close()
    device = Tpm(process.tcti)
    ak = tmp_path / "ak.tpm2b_public"
    ak.write_bytes(device.ensure_ak(AK_HANDLE))
    nonce = secrets.token_bytes(32)
    quote = device.quote(
        ak_handle=AK_HANDLE, qualifying_data=nonce, selection={"sha1": [*range(10), 12]}
    )
    (tmp_path / "quote.attest").write_bytes(quote.attest)
    (tmp_path / "quote.sig").write_bytes(quote.signature)
    values = {str(i): v.hex() for i, v in sorted(quote.pcrs["sha1"].items())}
    (tmp_path / "pcrs.json").write_text(json.dumps({"pcrs": {"sha1": values}}))
    args = [
        "evidence", "verify", "tpm",
        "--ak", str(ak),
        "--message", str(tmp_path / "quote.attest"),
        "--signature", str(tmp_path / "quote.sig"),
        "--nonce", nonce.hex(),
        "--pcrs", str(tmp_path / "pcrs.json"),
        "--eventlog", tpm(*LOG),
    ]  # fmt: skip
    return args, tmp_path


def _proposed_reference(capsys: pytest.CaptureFixture[str], directory: Path) -> dict[str, Any]:
    code, out, _ = cli(
        capsys, "reference", "propose", "--group", "g", "--from-eventlog", tpm(*LOG),
        "--pcrs", tpm(*LOG_PCRS), "--dry-run",
    )  # fmt: skip
    assert code == 0
    document: dict[str, Any] = json.loads(out[out.index("{") :])
    return document


def _write(directory: Path, document: dict[str, Any]) -> str:
    path = directory / "boot-reference.json"
    path.write_text(json.dumps(document))
    return str(path)


@pytest.mark.swtpm
def test_a_sha1_only_log_is_refused_without_a_reference(
    capsys: pytest.CaptureFixture[str], debian_quote: tuple[list[str], Path]
) -> None:
    args, _ = debian_quote
    code, doc = cli_json(capsys, *args)
    checks = statuses(doc)
    # The log replays to the genuine quote; only its format is refused.
    assert checks["tpm.quote.pcr_digest"] == checks["tpm.eventlog.replay"] == "passed"
    assert code == 1 and doc["verdict"] == "contraindicated"
    assert SHA1_ONLY in codes(doc) and checks["tpm.eventlog.events"] == "failed"


@pytest.mark.swtpm
def test_the_boot_reference_decides_about_a_sha1_only_log(
    capsys: pytest.CaptureFixture[str], debian_quote: tuple[list[str], Path]
) -> None:
    args, directory = debian_quote
    reference = _proposed_reference(capsys, directory)
    assert reference["bank"] == "sha1" and reference["allow_sha1_only_logs"] is False

    code, doc = cli_json(capsys, *args, "--boot-reference", _write(directory, reference))
    assert (code, codes(doc)) == (1, [SHA1_ONLY])  # reported once, by the events check
    assert statuses(doc)["tpm.eventlog.events"] == "failed"
    assert statuses(doc)["tpm.boot.reference"] == "passed"

    reference["allow_sha1_only_logs"] = True
    code, doc = cli_json(capsys, *args, "--boot-reference", _write(directory, reference))
    assert (code, doc["verdict"], codes(doc)) == (0, "affirming", [])
    assert statuses(doc)["tpm.boot.reference"] == "passed"


@pytest.mark.swtpm
def test_the_boot_reference_appraises_the_facts(
    capsys: pytest.CaptureFixture[str], debian_quote: tuple[list[str], Path]
) -> None:
    args, directory = debian_quote
    reference = {**_proposed_reference(capsys, directory), "allow_sha1_only_logs": True}
    reference["db"] = ["00" * 32]  # another db certificate than those the log shows
    code, doc = cli_json(capsys, *args, "--boot-reference", _write(directory, reference))
    assert code == 1 and set(codes(doc)) == {"tpm.boot.certificate_not_allowed"}, codes(doc)


def test_boot_reference_input_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = [
        "evidence", "verify", "tpm", "--ak", "ak", "--message", "m", "--signature", "s",
        "--nonce", "00",
    ]  # fmt: skip
    code, _, err = cli(capsys, *base, "--boot-reference", str(tmp_path / "ref.json"))
    assert code == 2 and "--boot-reference needs --eventlog" in err
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    pcrs = tmp_path / "pcrs.json"
    pcrs.write_text('{"pcrs": {"sha256": {"0": "' + "00" * 32 + '"}}}')
    ak = tpm("swtpm-rsa-sha1sha256-loc0", "ak.tpm2b_public")
    args = [
        "evidence", "verify", "tpm", "--ak", ak, "--message", ak, "--signature", ak,
        "--nonce", "00", "--pcrs", str(pcrs), "--eventlog", tpm(*LOG),
    ]  # fmt: skip
    code, _, err = cli(capsys, *args, "--boot-reference", str(deep))
    assert code == 2 and "boot reference" in err and err.count("\n") == 1
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"kind": "weightgate-boot-reference"}')
    code, _, err = cli(capsys, *args, "--boot-reference", str(wrong))
    assert code == 2 and "missing keys" in err
