"""Hostile or careless input files get one clear line, never a traceback or a silent
guess: nesting bombs, repeated or non-canonical PCR indices, IMA excludes that would
switch appraisal off or cannot be combined, and output cut short by its reader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vectors import vectors_dir
from verifier.boot_reference_cli import reference_document
from verifier.cli import main
from verifier.evidence.tdx.tcb_policy import load_tcb_policy
from verifier.evidence.tpm.boot_reference_format import BootReferenceError, load_boot_reference
from verifier.evidence.tpm.ima_policy import RuntimePolicyError, load_runtime_policy
from verifier.group_document_kinds import GROUP_DOCUMENT_KINDS, DocumentError
from verifier.operator_cli import CliError, parse_pcrs_json

DEEP = "[" * 100_000
ZERO = "00" * 32


def _policy(excludes: list[str]) -> str:
    return json.dumps({"version": 1, "digests": {"/usr/bin/a": [ZERO]}, "excludes": excludes})


@pytest.mark.parametrize("kind", sorted(GROUP_DOCUMENT_KINDS))
def test_every_group_document_refuses_a_nesting_bomb(kind: str) -> None:
    # What the verifier runs on a proposal: DocumentError is INVALID_ARGUMENT there.
    with pytest.raises(DocumentError, match="JSON"):
        GROUP_DOCUMENT_KINDS[kind].check(DEEP.encode())


def test_ima_policy_refuses_a_nesting_bomb() -> None:
    with pytest.raises(RuntimePolicyError, match="nested too deeply"):
        load_runtime_policy(DEEP)


@pytest.mark.parametrize(
    ("excludes", "says"),
    [
        (["/.+"], "matches /bin/sh"),
        (["/usr/.*"], "matches /usr/bin/bash"),
        (["/lib/x86_64-linux-gnu/.*"], "libc.so.6"),
        (["/.*\\.ko"], "ext4.ko"),
        (["(?s)/tmp/.*"], "scoped"),
        (["/tmp/.*", "(?i)/var/log/.*"], "scoped"),
    ],
)
def test_excludes_that_switch_appraisal_off_or_cannot_combine(
    excludes: list[str], says: str
) -> None:
    with pytest.raises(RuntimePolicyError, match="exclude") as caught:
        load_runtime_policy(_policy(excludes))
    assert says in str(caught.value)


def test_ordinary_and_scoped_excludes_load() -> None:
    policy = load_runtime_policy(_policy(["/tmp/.*", "(?s:/var/log/.*)", "/root/\\.cache/.*"]))
    assert policy.excluded("/tmp/x") and policy.excluded("/var/log/a\nb")
    assert not policy.excluded("/usr/bin/bash")


def _pcrs(sha256: str) -> str:
    """A PCRS.json text whose sha256 object is ``sha256`` (Z: a zero digest)."""
    return '{"pcrs": {"sha256": {' + sha256.replace("Z", ZERO) + "}}}"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (_pcrs('"0": "Z", "00": "Z"'), "'00'"),
        (_pcrs('"+7": "Z"'), "'+7'"),
        (_pcrs('"0_7": "Z"'), "'0_7'"),
        (_pcrs('"7": "Z", "7": "Z"'), "duplicate JSON member '7'"),
        ('{"pcrs": {"sha256": {}}, "pcrs": {}}', "duplicate JSON member 'pcrs'"),
        (DEEP, "nested too deeply"),
    ],
)
def test_pcrs_json_refuses_ambiguity(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "pcrs.json"
    path.write_text(text)
    with pytest.raises(CliError) as caught:
        parse_pcrs_json(path)
    assert says in str(caught.value)


def test_pcrs_json_canonical_indices_load(tmp_path: Path) -> None:
    path = tmp_path / "pcrs.json"
    path.write_text(json.dumps({"pcrs": {"sha256": {"0": ZERO, "10": ZERO, "23": ZERO}}}))
    assert sorted(parse_pcrs_json(path)["sha256"]) == [0, 10, 23]


def test_reference_dry_run_needs_no_verifier(capsys: pytest.CaptureFixture[str]) -> None:
    log = vectors_dir("tpm", "swtpm-rsa-sha1sha256-loc0", "eventlog.bin")
    pcrs = vectors_dir("tpm", "swtpm-rsa-sha1sha256-loc0", "pcrs.json")
    # No --ca/--cert/--key and no --insecure: nothing is contacted.
    argv = ["reference", "propose", "--group", "g", "--from-eventlog", str(log), "--dry-run"]
    code = main([*argv, "--pcrs", str(pcrs)])
    out = capsys.readouterr().out
    assert code == 0
    assert json.loads(out)["kind"] == "weightgate.boot-reference"  # stdout is the document
    assert main(argv) == 0  # without --pcrs: a warning, on stderr only
    captured = capsys.readouterr()
    assert json.loads(captured.out)["kind"] == "weightgate.boot-reference"
    assert captured.err.startswith("warning: no --pcrs")
    assert main([*argv, "--pcrs", str(log)]) == 2  # a bad input: one line, exit 2
    assert "Traceback" not in capsys.readouterr().err


def test_output_cut_short_by_its_reader_is_not_a_traceback() -> None:
    log = vectors_dir("tpm", "swtpm-rsa-sha1sha256-loc0", "eventlog.bin")
    # `weightgate evidence inspect LOG | head -1`: the reader closes the pipe early.
    command = [sys.executable, "-m", "verifier.cli", "evidence", "inspect", str(log)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.readline()
        process.stdout.close()
        err = process.stderr.read().decode()
        process.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("bank", [], "bank"),
        ("bank", {}, "bank"),
        ("allowed_quirks", [[1]], "allowed_quirks"),
        ("allowed_quirks", [{}], "allowed_quirks"),
        ("version", True, "version 1"),
        ("version", 1.0, "version 1"),
    ],
)
def test_boot_reference_values_of_the_wrong_type_are_named(
    key: str, value: object, says: str
) -> None:
    base = vectors_dir("tpm", "swtpm-rsa-sha1sha256-loc0")
    document, _ = reference_document(base / "eventlog.bin", base / "pcrs.json")
    load_boot_reference(document)  # as proposed, it loads
    with pytest.raises(BootReferenceError, match=says):
        load_boot_reference({**document, key: value})


@pytest.mark.parametrize("statuses", [[["UpToDate"]], [{}], [1]])
def test_tdx_tcb_statuses_of_the_wrong_type_are_named(statuses: list[object]) -> None:
    with pytest.raises(ValueError, match="accepted_tcb_statuses"):
        load_tcb_policy({"accepted_tcb_statuses": statuses}, ValueError)
