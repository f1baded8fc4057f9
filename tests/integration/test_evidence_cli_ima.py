"""`weightgate evidence` with IMA lists (issue 5, item 4): verify --ima, replay, inspect.

The swtpm sets' IMA lists (binary and ASCII, 6 ima-ng entries, one violation) against
their real quotes; a policy built here from the list itself (by reading its lines,
not with our parser); one fresh swtpm whose PCR10 is extended with that list, to
quote without PCR10, and PCR10 without PCRs 0-9.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI, ESYS_TR, TPM2_ALG, TPML_DIGEST_VALUES, TPMT_HA

from agent.collectors.tpm import Tpm
from tests.integration.test_evidence_cli import (
    _nonce_hex,
    _quote_args,
    cli,
    cli_json,
    codes,
    statuses,
    tpm,
)
from tests.vectors import TPM_SWTPM_SETS, read_pcrs_json, vectors_dir
from verifier.demo.swtpm import SwtpmProcess
from verifier.evidence.tpm.ima_ascii import parse_ascii

FORMATS = ("ascii", "binary")
CASES = [(name, fmt) for name in TPM_SWTPM_SETS for fmt in FORMATS]
ASCII = "ima/ascii_runtime_measurements"
AK_HANDLE = 0x81010003


def _ima(name: str, fmt: str = "ascii") -> str:
    return tpm(name, f"ima/{fmt}_runtime_measurements")


def _verify_args(name: str, *extra: str) -> list[str]:
    return [*_quote_args(name, "quote", "ak.tpm2b_public", _nonce_hex(name)), *extra]


def _policy_from_list(ascii_list: Path, *, leave_out: str | None = None) -> dict[str, object]:
    """Allow exactly the list's file digests (ima-ng lines: PCR, hash, template, d-ng, name)."""
    digests: dict[str, list[str]] = {}
    for line in ascii_list.read_text().splitlines():
        _pcr, template_hash, _template, digest, path = line.split(" ", 4)
        violation = set(template_hash) == {"0"}
        if path not in ("boot_aggregate", leave_out) and not violation:
            digests.setdefault(path, []).append(digest)
    return {"version": 1, "digests": digests}


# --- verify tpm --ima on the good swtpm sets ---------------------------------------


@pytest.mark.parametrize(("name", "fmt"), CASES, ids=[f"{n}/{f}" for n, f in CASES])
def test_good_set_verifies_with_its_ima_list(
    capsys: pytest.CaptureFixture[str], name: str, fmt: str
) -> None:
    code, doc = cli_json(capsys, *_verify_args(name, "--ima", _ima(name, fmt)))
    assert (code, doc["verdict"], doc["reasons"]) == (0, "affirming", [])
    checks = statuses(doc)
    assert checks["tpm.ima.replay"] == checks["tpm.ima.boot_aggregate"] == "passed"
    assert checks["tpm.ima.policy"] == "not_run"
    expected = json.loads(Path(tpm(name, "expected.json")).read_text())["ima"]
    ima = doc["claims"]["ima"]
    assert (ima["format"], ima["entry_count"], ima["violations"]) == (
        fmt,
        expected["entries"],
        expected["violations"],
    )
    assert ima["templates"] == {expected["template"]: expected["entries"]}
    assert ima["boot_aggregate"] == expected["boot_aggregate"]
    assert ima["boot_aggregate_check"] == {"bank": "sha256", "rule": "pcr0-9", "source": "quoted"}
    # Only the sha256 bank quotes PCR10 in every set (sha384 quotes 0,4,7 only).
    pcr10 = read_pcrs_json(Path(tpm(name, "pcrs.json")))["sha256"][10].hex()
    assert ima["replay"] == {
        "sha256": {
            "status": "match",
            "refusal": None,
            "pcrs": {
                "10": {"replayed": pcr10, "expected": pcr10, "status": "match", "quoted": True}
            },
        }
    }


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_policy_built_from_the_list(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    """Its own digests pass; the violation is the one finding (a warning); one path
    missing from the policy is named."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(_policy_from_list(Path(tpm(name, ASCII)))))
    args = _verify_args(name, "--ima", _ima(name, "binary"), "--ima-policy", str(policy))
    code, doc = cli_json(capsys, *args)
    assert (code, doc["verdict"], codes(doc)) == (3, "warning", ["tpm.ima.violation"])
    assert "/var/log/ima-tomtou.log" in doc["reasons"][0]["message"]
    assert statuses(doc)["tpm.ima.policy"] == "passed"
    assert doc["claims"]["ima"]["policy_findings"] == 1

    policy.write_text(json.dumps(_policy_from_list(Path(tpm(name, ASCII)), leave_out="/init")))
    code, doc = cli_json(capsys, *args)
    assert (code, doc["verdict"]) == (1, "contraindicated")
    assert codes(doc) == ["tpm.ima.path_unknown", "tpm.ima.violation"]
    assert doc["reasons"][0]["message"] == "entry 1 '/init': not in the policy"
    assert statuses(doc)["tpm.ima.policy"] == "failed"


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_policy_that_tolerates_violations(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    """One mutation of the policy above ("violations": "tolerate"): the violation is
    counted, not a finding; a violation line the TPM never saw still fails the replay."""
    policy = tmp_path / "policy.json"
    document = _policy_from_list(Path(tpm(name, ASCII)))
    policy.write_text(json.dumps({**document, "violations": "deny"}))
    args = _verify_args(name, "--ima", _ima(name, "binary"), "--ima-policy", str(policy))
    code, doc = cli_json(capsys, *args)
    assert (code, doc["verdict"], codes(doc)) == (3, "warning", ["tpm.ima.violation"])
    ima = doc["claims"]["ima"]
    assert (ima["policy_violations"], ima["violations_tolerated"]) == ("deny", 0)

    policy.write_text(json.dumps({**document, "violations": "tolerate"}))
    code, doc = cli_json(capsys, *args)
    assert (code, doc["verdict"], doc["reasons"]) == (0, "affirming", [])
    ima = doc["claims"]["ima"]
    assert (ima["violations"], ima["policy_findings"]) == (1, 0)
    assert (ima["policy_violations"], ima["violations_tolerated"]) == ("tolerate", 1)
    check = next(c for c in doc["checks"] if c["name"] == "tpm.ima.policy")
    assert (check["status"], check["detail"]) == (
        "passed",
        "1 violation(s) tolerated by the policy",
    )

    lines = Path(tpm(name, ASCII)).read_text().splitlines(keepends=True)
    (violation,) = [line for line in lines if set(line.split(" ")[1]) == {"0"}]
    injected = tmp_path / "ascii_runtime_measurements"
    injected.write_text("".join([*lines[:2], violation, *lines[2:]]))
    args = _verify_args(name, "--ima", str(injected), "--ima-policy", str(policy))
    code, doc = cli_json(capsys, *args)
    assert (code, codes(doc)) == (1, ["tpm.ima.pcr_mismatch"])
    assert statuses(doc)["tpm.ima.policy"] == "not_run"
    assert "violations_tolerated" not in doc["claims"]["ima"]


def test_text_output_counts_tolerated_violations(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name = TPM_SWTPM_SETS[0]
    policy = tmp_path / "policy.json"
    document = _policy_from_list(Path(tpm(name, ASCII)))
    policy.write_text(json.dumps({**document, "violations": "tolerate"}))
    args = _verify_args(name, "--ima", _ima(name, "binary"), "--ima-policy", str(policy))
    code, out, _ = cli(capsys, *args)
    assert code == 0
    assert "runtime policy: 0 finding(s), 1 violation(s) tolerated" in out


def test_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    name = TPM_SWTPM_SETS[0]
    code, out, _ = cli(capsys, *_verify_args(name, "--ima", _ima(name, "binary")))
    assert code == 0
    assert "passed   ima-replay       tpm.ima.replay" in out
    assert "not run  ima-policy       tpm.ima.policy           (no --ima-policy)" in out
    assert "ima list: binary (little-endian), 6 entries (1 violations), templates ima-ng x6" in out
    assert "boot_aggregate sha256:6e2ebe7f" in out


def test_list_read_after_the_quote_is_refused_with_a_hint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A longer list (one more line, a valid entry) does not replay to the quote."""
    name = TPM_SWTPM_SETS[1]
    lines = Path(tpm(name, ASCII)).read_text().splitlines(keepends=True)
    longer = tmp_path / "ascii_runtime_measurements"
    longer.write_text("".join([*lines, lines[1]]))
    code, doc = cli_json(capsys, *_verify_args(name, "--ima", str(longer)))
    assert (code, codes(doc)) == (1, ["tpm.ima.pcr_mismatch"])
    message = doc["reasons"][0]["message"]
    assert "the whole list (7 entries)" in message
    assert "its first 6 entries do: the list was read after the quote" in message
    checks = statuses(doc)
    assert checks["tpm.ima.boot_aggregate"] == checks["tpm.ima.policy"] == "not_run"


def test_failed_quote_runs_no_ima_stage(capsys: pytest.CaptureFixture[str]) -> None:
    name = TPM_SWTPM_SETS[0]
    args = _verify_args(name, "--ima", _ima(name))
    args[args.index("--nonce") + 1] = "00" * 32
    code, doc = cli_json(capsys, *args)
    assert (code, codes(doc)) == (1, ["tpm.quote.nonce_mismatch"])
    not_run = [c for c in doc["checks"] if c["stage"].startswith("ima-")]
    assert {c["status"] for c in not_run} == {"not_run"}
    assert [c["detail"] for c in not_run] == [
        "the quote was not authenticated",
        "the quote was not authenticated",
        "no --ima-policy",
    ]


# --- a fresh swtpm whose PCR10 holds the sets' IMA list ----------------------------


@dataclass(frozen=True)
class ImaTpm:
    tpm: Tpm
    ak: Path  # TPM2B_PUBLIC


@pytest.fixture(scope="module")
def ima_tpm(
    swtpm_factory_module: Callable[..., SwtpmProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ImaTpm]:
    """Extend sha256 PCR10 as the kernel did for the sets' list (they share it)."""
    base = vectors_dir("tpm", TPM_SWTPM_SETS[1])
    process = swtpm_factory_module()
    ectx = ESAPI(process.tcti)
    try:
        for entry in parse_ascii((base / ASCII).read_bytes()).entries:
            value = TPMT_HA(hashAlg=TPM2_ALG.SHA256)
            data = entry.hashed_data()
            value.digest.sha256 = (
                b"\xff" * 32 if entry.is_violation else hashlib.sha256(data).digest()
            )
            ectx.pcr_extend(ESYS_TR.PCR10, TPML_DIGEST_VALUES([value]))
    finally:
        ectx.close()
    device = Tpm(process.tcti)
    # The same list gives the same PCR10 as on the machine that made the vectors.
    pcr10 = device.read_pcrs({"sha256": [10]})["sha256"][10]
    assert pcr10 == read_pcrs_json(base / "pcrs.json")["sha256"][10]
    ak = tmp_path_factory.mktemp("ima-tpm") / "ak.tpm2b_public"
    ak.write_bytes(device.ensure_ak(AK_HANDLE))
    yield ImaTpm(device, ak)


def _quote_files(
    ima_tpm: ImaTpm, directory: Path, pcrs: list[int], *, extra: dict[int, bytes] | None = None
) -> list[str]:
    """Quote sha256 ``pcrs``; PCRS.json holds the quoted values and ``extra`` ones."""
    nonce = secrets.token_bytes(32)
    quote = ima_tpm.tpm.quote(
        ak_handle=AK_HANDLE, qualifying_data=nonce, selection={"sha256": pcrs}
    )
    values = {**(extra or {}), **quote.pcrs["sha256"]}
    (directory / "quote.attest").write_bytes(quote.attest)
    (directory / "quote.sig").write_bytes(quote.signature)
    document = {"pcrs": {"sha256": {str(i): v.hex() for i, v in sorted(values.items())}}}
    (directory / "pcrs.json").write_text(json.dumps(document))
    return [
        "evidence", "verify", "tpm",
        "--ak", str(ima_tpm.ak),
        "--message", str(directory / "quote.attest"),
        "--signature", str(directory / "quote.sig"),
        "--nonce", nonce.hex(),
        "--pcrs", str(directory / "pcrs.json"),
        "--ima", tpm(TPM_SWTPM_SETS[1], ASCII),
    ]  # fmt: skip


@pytest.mark.swtpm
def test_quote_without_pcr10_cannot_authenticate_the_list(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, ima_tpm: ImaTpm
) -> None:
    code, doc = cli_json(capsys, *_quote_files(ima_tpm, tmp_path, list(range(10))))
    assert (code, codes(doc)) == (1, ["tpm.ima.pcr_not_quoted"])
    assert doc["reasons"][0]["message"] == (
        "the quote does not cover PCR10 (it covers sha256:0-9): nothing authenticates "
        "the IMA list; quote PCR10 as well"
    )
    checks = statuses(doc)
    assert checks["tpm.quote.pcr_digest"] == "passed"
    assert (checks["tpm.ima.replay"], checks["tpm.ima.boot_aggregate"]) == ("failed", "not_run")


@pytest.mark.swtpm
def test_boot_aggregate_needs_quoted_pcrs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, ima_tpm: ImaTpm
) -> None:
    """PCR10 quoted alone: the list replays; boot_aggregate is not checked, or only
    against --pcrs values nothing authenticates: a warning either way."""
    code, doc = cli_json(capsys, *_quote_files(ima_tpm, tmp_path, [10]))
    assert (code, codes(doc)) == (3, ["tpm.ima.boot_aggregate_unchecked"])
    checks = statuses(doc)
    assert (checks["tpm.ima.replay"], checks["tpm.ima.boot_aggregate"]) == ("passed", "not_run")
    assert doc["reasons"][0]["message"].startswith("sha256 PCR 0-9 neither quoted nor in --pcrs")

    # The vector machine's PCR0-9 (the boot_aggregate is over them) given, not quoted.
    boot = read_pcrs_json(Path(tpm(TPM_SWTPM_SETS[1], "pcrs.json")))["sha256"]
    extra = {i: boot[i] for i in range(10)}
    code, doc = cli_json(capsys, *_quote_files(ima_tpm, tmp_path, [10], extra=extra))
    assert (code, codes(doc)) == (3, ["tpm.ima.boot_aggregate_unchecked"])
    assert statuses(doc)["tpm.ima.boot_aggregate"] == "passed"
    assert "PCR 0-9 from --pcrs, not quoted" in doc["reasons"][0]["message"]

    extra[4] = bytes(32)
    code, doc = cli_json(capsys, *_quote_files(ima_tpm, tmp_path, [10], extra=extra))
    assert (code, codes(doc)) == (1, ["tpm.ima.boot_aggregate_mismatch"])


# --- evidence replay --ima ---------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt"), CASES, ids=[f"{n}/{f}" for n, f in CASES])
def test_replay_ima_against_pcrs(capsys: pytest.CaptureFixture[str], name: str, fmt: str) -> None:
    pcrs = tpm(name, "pcrs.json")
    code, doc = cli_json(capsys, "evidence", "replay", "--ima", _ima(name, fmt), "--pcrs", pcrs)
    assert (code, doc["kind"], doc["verdict"]) == (0, "tpm-ima", "affirming")
    # Every bank the TPM allocated (sha1 too: there the logged template hash is extended).
    expected = read_pcrs_json(Path(pcrs))
    assert set(doc["claims"]["replay"]) == set(expected)
    for bank, values in expected.items():
        pcr10 = doc["claims"]["replay"][bank]["pcrs"]["10"]
        assert (pcr10["status"], pcr10["replayed"]) == ("match", values[10].hex())


def test_replay_ima_mismatch_and_without_pcrs(capsys: pytest.CaptureFixture[str]) -> None:
    name = TPM_SWTPM_SETS[0]
    truncated = str(vectors_dir("tpm", name, "variants", "ima-truncated", ASCII))
    pcrs = tpm(name, "pcrs.json")
    code, doc = cli_json(capsys, "evidence", "replay", "--ima", truncated, "--pcrs", pcrs)
    assert (code, codes(doc)) == (1, ["tpm.ima.pcr_mismatch"] * 2)
    messages = [r["message"] for r in doc["reasons"]]
    assert messages[0].startswith("sha1 PCR10: --pcrs has ")
    assert messages[1].startswith("sha256 PCR10: --pcrs has ")

    code, doc = cli_json(capsys, "evidence", "replay", "--ima", _ima(name))
    assert (code, doc["verdict"], doc["reasons"]) == (0, "none", [])
    code, out, _ = cli(capsys, "evidence", "replay", "--ima", _ima(name))
    assert code == 0
    for bank in ("sha1", "sha256", "sha384", "sha512"):
        assert f"  {bank}: not_compared (1 PCRs replayed)" in out
    assert "no --pcrs to compare with" in out


# --- evidence inspect ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_inspect_ima_list(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    name = TPM_SWTPM_SETS[2]
    code, doc = cli_json(capsys, "evidence", "inspect", _ima(name, fmt))
    assert (code, doc["kind"], doc["error"]) == (0, "ima_runtime_list", None)
    fields = doc["fields"]
    expected = json.loads(Path(tpm(name, "expected.json")).read_text())["ima"]
    assert (fields["format"], fields["byte_order"], fields["template_hash_alg"]) == (
        fmt,
        "little",
        "sha1",
    )
    assert (fields["entry_count"], fields["violations"]) == (6, expected["violations"])
    assert fields["templates"] == {"ima-ng": 6}
    assert fields["boot_aggregate"] == expected["boot_aggregate"]
    first = fields["entries"][0]
    assert (first["index"], first["pcr"], first["name"]) == (0, 10, "boot_aggregate")
    assert [e["violation"] for e in fields["entries"]].count(True) == 1
    code, out, _ = cli(capsys, "evidence", "inspect", _ima(name, fmt))
    assert code == 0
    assert "entry_count: 6" in out
    assert "/var/log/ima-tomtou.log  (violation)" in out


def test_inspect_malformed_ima_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = cli_json(capsys, "evidence", "inspect", tpm("tpm2-tss/sml-ima-ng-sha1.bin"))
    assert (code, doc["kind"]) == (1, "ima_runtime_list")
    assert "IMA list:" in doc["error"]


# --- bad input -----------------------------------------------------------------------


def test_bad_ima_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    name = TPM_SWTPM_SETS[0]
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"10 not an ima list at all\n\x00\xff")
    bad_policy = tmp_path / "policy.json"
    bad_policy.write_text(json.dumps({"version": 1, "digests": {}}))
    missing = str(tmp_path / "missing")
    no_pcrs = _verify_args(name)[: _verify_args(name).index("--pcrs")]
    for args, needle in [
        (_verify_args(name, "--ima", missing), "cannot read IMA list"),
        ([*no_pcrs, "--ima", _ima(name)], "--ima and --reference need --pcrs"),
        (_verify_args(name, "--ima-policy", str(bad_policy)), "--ima-policy needs --ima"),
        (
            _verify_args(name, "--ima", _ima(name), "--ima-policy", str(bad_policy)),
            "the policy allows nothing",
        ),
        (
            _verify_args(name, "--ima", _ima(name), "--ima-policy", str(garbage)),
            "IMA policy",
        ),
        (["evidence", "replay", "--ima", missing], "cannot read IMA list"),
    ]:
        code, out, err = cli(capsys, *args)
        assert code == 2, args
        assert needle in err, err
        assert not out and err.count("\n") == 1
    for args in (
        _verify_args(name, "--ima", str(garbage)),
        ["evidence", "replay", "--ima", str(garbage)],
        ["evidence", "replay", "--ima", tpm("tpm2-tss/sml-ima-sha1.bin")],
    ):
        code, doc = cli_json(capsys, *args)
        assert (code, codes(doc)) == (1, ["tpm.ima.malformed"]), args
    with pytest.raises(SystemExit) as info:
        cli(capsys, "evidence", "replay", "--ima", _ima(name), "--eventlog", _ima(name))
    assert info.value.code == 2


def test_help_explains_ima(capsys: pytest.CaptureFixture[str]) -> None:
    from verifier.cli import main  # noqa: PLC0415

    with pytest.raises(SystemExit):
        main(["evidence", "verify", "tpm", "--help"])
    out = capsys.readouterr().out
    for word in ("--ima IMA_LOG", "--ima-policy", "WHOLE list", "boot_aggregate", "ima-replay"):
        assert word in out, word
