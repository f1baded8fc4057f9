"""`weightgate evidence` over every shared TPM vector (issue 5, item 4).

Driven through ``verifier.cli.main`` in-process (and once as a subprocess of the
installed ``weightgate``), each vector its own test id:

* every log in manifest.json with TPM-read PCR values gives the manifest's replay
  verdict per bank through ``evidence replay --pcrs``;
* every real signed quote verifies through ``evidence verify tpm`` (or is refused
  for the reason its provenance gives: empty nonce, SHA-1 signature);
* each swtpm set verifies, and each of its 8 broken variants is rejected at the stage
  and with the reason its expected.json names (the table below maps the vectors'
  vocabulary to our codes);
* ``evidence inspect`` recognises each kind of file; bad input exits 2 (or 1 for
  rejected evidence) with a reason and no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.vectors import (
    TPM_SWTPM_SETS,
    read_pcrs_json,
    variant_file,
    vectors_dir,
)
from tests.vectors import testvectors_root as _vectors_root
from verifier.cli import main
from verifier.evidence.tpm.akfile import load_ak
from verifier.evidence.tpm.offline_replay import replay_report
from verifier.evidence.tpm.offline_verify import TpmEvidence, verify_tpm_offline


def _manifest_logs() -> list[dict[str, Any]]:
    path = _vectors_root() / "tpm" / "manifest.json"
    if not path.exists():
        return []
    logs: list[dict[str, Any]] = json.loads(path.read_text())["logs"]
    return logs


LOGS = _manifest_logs()
# (log, PCR file, manifest's replay verdict per bank). The ima-evm-utils sample log has
# TPM-read PCRs but is listed under the IMA files; every bank it shares must match.
REPLAY_CASES = [
    (e["file"], e["expected_pcrs_file"], e["replay_vs_expected"])
    for e in LOGS
    if e.get("expected_pcrs_file")
] + [
    (
        "ima-evm-utils/sample-binary_bios_measurements-pcrs-8-9",
        "ima-evm-utils/sample-binary_bios_measurements-pcrs-8-9.pcrs.json",
        {"sha1": True},
    )
]
# (log, bank) -> the PCRs that must mismatch (PROVENANCE: the firmware did not log
# the two ExitBootServices events of PCR5; we replay strictly, without go-attestation's
# workaround).
EXPECTED_MISMATCHES = {("go-attestation/ebs_event_missing_eventlog", "sha1"): ["5"]}

GCE = "go-tpm-tools/attestations/gce-cos-85-nonce9009"
GCE_NO_NONCE = "go-tpm-tools/attestations/gce-cos-85-no-nonce"
WINDOWS = "go-attestation/windows_gcp_shielded_vm"
GCE_QUOTES = ("quote_sha1", "quote_sha256", "quote_sha384")
VARIANT_NAMES = (
    "wrong-nonce",
    "signature-from-other-ak",
    "flipped-digest-in-log",
    "event-type-tampered",
    "event-data-tampered",
    "post-separator-injection",
    "ima-entry-tampered",
    "ima-truncated",
)

# expected.json's vocabulary -> ours: variant -> (failing_stage, the reason code its
# "reason" text describes). Our stage names are the vectors' (PROVENANCE: quote ->
# eventlog-replay -> eventlog-policy -> ima-replay).
EXPECTED_REJECTIONS = {
    "wrong-nonce": ("quote", "tpm.quote.nonce_mismatch"),
    "signature-from-other-ak": ("quote", "tpm.quote.signature_invalid"),
    "flipped-digest-in-log": ("eventlog-replay", "tpm.eventlog.replay_mismatch"),
    # "PCR4 contains an EV_EFI_PLATFORM_FIRMWARE_BLOB after the separator"
    "event-type-tampered": ("eventlog-policy", "tpm.eventlog.event_after_separator"),
    # "kernel_cmdline event data no longer hashes to its digest" (an EV_IPL in PCR8)
    "event-data-tampered": ("eventlog-policy", "tpm.eventlog.ipl_digest_mismatch"),
    # "a second SecureBoot EV_EFI_VARIABLE_DRIVER_CONFIG after the PCR7 separator"
    "post-separator-injection": ("eventlog-policy", "tpm.eventlog.event_after_separator"),
    # "IMA entry 3 (/usr/bin/sh): template-hash != SHA1(template data ...)" (1-based)
    "ima-entry-tampered": ("ima-replay", "tpm.ima.template_hash_mismatch"),
    # "IMA log is missing its last entry: replay of PCR10 != quoted PCR10"
    "ima-truncated": ("ima-replay", "tpm.ima.pcr_mismatch"),
}
STAGE_ORDER = (
    "quote",
    "eventlog-replay",
    "eventlog-policy",
    "ima-replay",
    "ima-policy",
    "reference",
)
IMA_CHECKS = ("tpm.ima.replay", "tpm.ima.boot_aggregate", "tpm.ima.policy")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, err = cli(capsys, *argv, "--json")
    assert not err, err
    document: dict[str, Any] = json.loads(out)
    return code, document


def codes(document: dict[str, Any]) -> list[str]:
    return [reason["code"] for reason in document["reasons"]]


def statuses(document: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["status"] for check in document["checks"]}


def tpm(*parts: str) -> str:
    return str(vectors_dir("tpm", *parts))


# --- evidence replay: the manifest's verdict for every log with TPM-read PCRs -------


@pytest.mark.parametrize(
    ("log", "pcrs", "expected"), REPLAY_CASES, ids=[case[0] for case in REPLAY_CASES]
)
def test_replay_gives_the_manifest_verdict(
    capsys: pytest.CaptureFixture[str], log: str, pcrs: str, expected: dict[str, bool]
) -> None:
    code, doc = cli_json(capsys, "evidence", "replay", "--eventlog", tpm(log), "--pcrs", tpm(pcrs))
    assert doc["kind"] == "tpm-eventlog"
    banks = doc["claims"]["replay"]
    for bank, matches in expected.items():
        assert banks[bank]["status"] == ("match" if matches else "mismatch"), bank
        if not matches:
            wrong = [p for p, v in banks[bank]["pcrs"].items() if v["status"] == "mismatch"]
            assert wrong == EXPECTED_MISMATCHES[(log, bank)]
    # Banks the manifest did not verify (no TPM values for them) are never mismatches.
    assert all(b["status"] != "mismatch" or b_name in expected for b_name, b in banks.items())
    if all(expected.values()):
        assert (code, doc["verdict"], doc["reasons"]) == (0, "affirming", [])
    else:
        assert (code, doc["verdict"]) == (1, "contraindicated")
        assert set(codes(doc)) == {"tpm.eventlog.replay_mismatch"}
        assert "sha1 PCR5" in doc["reasons"][0]["message"]


def test_replay_without_pcrs_prints_every_bank(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(
        capsys, "evidence", "replay", "--eventlog", tpm(TPM_SWTPM_SETS[0], "eventlog.bin")
    )
    assert code == 0
    assert "sha1: not_compared (11 PCRs replayed)" in out
    assert "sha256: not_compared (11 PCRs replayed)" in out
    assert "no value given" in out


def test_replay_library_matches_the_cli() -> None:
    base = vectors_dir("tpm", "swtpm-ecc-sha256-loc3")
    report = replay_report((base / "eventlog.bin").read_bytes(), read_pcrs_json(base / "pcrs.json"))
    assert report.verdict.affirms
    assert report.claims["eventlog"]["pcr0_start_locality"] == 3


# --- evidence verify tpm: every real signed quote ----------------------------------


def _quote_args(base: str, quote: str, ak: str, nonce: str, *, eventlog: bool = True) -> list[str]:
    args = [
        "evidence", "verify", "tpm",
        "--ak", tpm(base, ak),
        "--message", tpm(base, f"{quote}.attest"),
        "--signature", tpm(base, f"{quote}.sig"),
        "--nonce", nonce,
        "--pcrs", tpm(base, "pcrs.json"),
    ]  # fmt: skip
    return [*args, "--eventlog", tpm(base, "eventlog.bin")] if eventlog else args


def _nonce_hex(base: str) -> str:
    return Path(tpm(base, "nonce.hex")).read_text().strip()


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_swtpm_set_verifies(capsys: pytest.CaptureFixture[str], name: str) -> None:
    args = _quote_args(name, "quote", "ak.tpm2b_public", _nonce_hex(name))
    code, doc = cli_json(capsys, *args)
    assert (code, doc["verdict"], doc["reasons"]) == (0, "affirming", [])
    checks = statuses(doc)
    for check in ("tpm.pcr.reference", *IMA_CHECKS):
        assert checks.pop(check) == "not_run", check
    assert set(checks.values()) == {"passed"}
    expected = json.loads(Path(tpm(name, "expected.json")).read_text())
    quote = doc["claims"]["quote"]
    assert quote["authenticated"] is True
    assert quote["extra_data"] == expected["quote"]["nonce_hex"]
    assert quote["clock_info"]["clock_ms"] == expected["quote"]["clock"]
    assert doc["claims"]["eventlog"]["format"] == expected["eventlog"]["format"]
    assert doc["claims"]["eventlog"]["pcr0_start_locality"] == (
        4 if expected["eventlog"]["hcrtm"] else expected["eventlog"]["startup_locality"]
    )


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_swtpm_set_against_a_reference(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    """The set's own PCR0/4/7 as reference affirms; one changed value is named."""
    pcrs = read_pcrs_json(Path(tpm(name, "pcrs.json")))
    golden = {"sha256": {str(i): pcrs["sha256"][i].hex() for i in (0, 4, 7)}}
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"pcrs": golden}))
    golden["sha256"]["4"] = "00" * 32
    bad.write_text(json.dumps({"pcrs": golden}))
    args = _quote_args(name, "quote", "ak.tpm2b_public", _nonce_hex(name), eventlog=False)
    code, doc = cli_json(capsys, *args, "--reference", str(good))
    assert (code, doc["verdict"], statuses(doc)["tpm.pcr.reference"]) == (0, "affirming", "passed")
    code, doc = cli_json(capsys, *args, "--reference", str(bad))
    assert (code, codes(doc)) == (1, ["tpm.pcr.mismatch"])
    assert "sha256 PCR4" in doc["reasons"][0]["message"]


@pytest.mark.parametrize("quote", GCE_QUOTES)
def test_gce_quotes_verify(capsys: pytest.CaptureFixture[str], quote: str) -> None:
    code, doc = cli_json(capsys, *_quote_args(GCE, quote, "ak_pub.tpmt", "9009", eventlog=False))
    assert (code, doc["verdict"], doc["reasons"]) == (0, "affirming", [])
    # With its boot log: replay matches in every bank; the only findings are the named
    # vendor quirks (old shim's authority padding) that a reference must allow, so the
    # offline tool accepts with a warning.
    code, doc = cli_json(capsys, *_quote_args(GCE, quote, "ak_pub.tpmt", "9009"))
    assert (code, doc["verdict"]) == (3, "warning")
    assert codes(doc)
    assert all(c.startswith("tpm.eventlog.quirk.") for c in codes(doc))
    checks = statuses(doc)
    assert checks["tpm.eventlog.replay"] == checks["tpm.eventlog.events"] == "passed"
    assert {b["status"] for b in doc["claims"]["eventlog"]["replay"].values()} == {"match"}


@pytest.mark.parametrize("quote", GCE_QUOTES)
def test_gce_quotes_without_nonce_are_refused(
    capsys: pytest.CaptureFixture[str], quote: str
) -> None:
    """Genuine signatures over an empty nonce prove no freshness (PROVENANCE 1)."""
    code, doc = cli_json(capsys, *_quote_args(GCE_NO_NONCE, quote, "ak_pub.tpmt", "9009"))
    assert (code, codes(doc)) == (1, ["tpm.quote.nonce_mismatch"])
    assert statuses(doc)["tpm.quote.signature"] == "passed"
    code, _, err = cli(capsys, *_quote_args(GCE_NO_NONCE, quote, "ak_pub.tpmt", ""))
    assert code == 2
    assert "--nonce: empty" in err


def test_windows_sha1_quote_is_weak(capsys: pytest.CaptureFixture[str]) -> None:
    args = _quote_args(WINDOWS, "quote", "ak_pub.tpmt", "01" * 32)
    code, doc = cli_json(capsys, *args)
    assert (code, codes(doc)) == (1, ["tpm.quote.weak_hash"])
    code, doc = cli_json(capsys, *args, "--allow-sha1")
    # The SHA-1 signature verifies; the quote's extraData is empty.
    assert (code, codes(doc)) == (1, ["tpm.quote.nonce_mismatch"])
    assert statuses(doc)["tpm.quote.signature"] == "passed"


@pytest.mark.parametrize(
    ("base", "quote", "pem"),
    [(name, "quote", "ak.pub.pem") for name in TPM_SWTPM_SETS]
    + [(GCE, "quote_sha256", "ak_pub.pem")],
)
def test_pem_ak_is_a_warning(
    capsys: pytest.CaptureFixture[str], base: str, quote: str, pem: str
) -> None:
    nonce = "9009" if base == GCE else _nonce_hex(base)
    code, doc = cli_json(capsys, *_quote_args(base, quote, pem, nonce, eventlog=False))
    assert (code, doc["verdict"], codes(doc)) == (3, "warning", ["tpm.ak.attributes_unknown"])
    checks = statuses(doc)
    assert checks["tpm.ak.attributes"] == "not_run"
    assert checks["tpm.quote.signature"] == checks["tpm.quote.pcr_digest"] == "passed"
    assert doc["claims"]["ak"]["attributes"] == "unknown (PEM key)"


def test_without_pcrs_the_digest_is_unchecked(capsys: pytest.CaptureFixture[str]) -> None:
    name = TPM_SWTPM_SETS[1]
    args = _quote_args(name, "quote", "ak.tpm2b_public", _nonce_hex(name), eventlog=False)
    code, doc = cli_json(capsys, *args[: args.index("--pcrs")])
    assert (code, codes(doc)) == (3, ["tpm.quote.pcr_digest_unchecked"])
    assert statuses(doc)["tpm.quote.pcr_digest"] == "not_run"


def test_verify_library_directly() -> None:
    base = vectors_dir("tpm", TPM_SWTPM_SETS[2])
    report = verify_tpm_offline(
        TpmEvidence(
            ak=load_ak((base / "ak.tpm2b_public").read_bytes()),
            attest=(base / "quote.attest").read_bytes(),
            signature=(base / "quote.sig").read_bytes(),
            nonce=(base / "nonce.bin").read_bytes(),
            pcrs=read_pcrs_json(base / "pcrs.json"),
            event_log=(base / "eventlog.bin").read_bytes(),
        )
    )
    assert report.verdict.affirms
    assert report.failed_stages() == ()


# --- the swtpm sets' broken variants ----------------------------------------------

VARIANTS = [(name, variant) for name in TPM_SWTPM_SETS for variant in VARIANT_NAMES]


@pytest.mark.parametrize(("name", "variant"), VARIANTS, ids=[f"{n}/{v}" for n, v in VARIANTS])
def test_broken_variant_is_rejected_as_expected(
    capsys: pytest.CaptureFixture[str], name: str, variant: str
) -> None:
    base = vectors_dir("tpm", name)
    expected = json.loads(variant_file(base, "expected.json", variant).read_text())
    assert expected["verdict"] == "REJECT"
    stage, code = EXPECTED_REJECTIONS[variant]
    assert expected["failing_stage"] == stage
    ima: list[str] = []
    if stage == "ima-replay":
        ima = ["--ima", str(variant_file(base, "ima/ascii_runtime_measurements", variant))]

    def file(file_name: str) -> str:
        return str(variant_file(base, file_name, variant))

    nonce = Path(file("nonce.hex")).read_text().strip()
    code_, doc = cli_json(
        capsys,
        "evidence", "verify", "tpm",
        "--ak", str(base / "ak.tpm2b_public"),
        "--message", file("quote.attest"),
        "--signature", file("quote.sig"),
        "--nonce", nonce,
        "--pcrs", file("pcrs.json"),
        "--eventlog", file("eventlog.bin"),
        *ima,
    )  # fmt: skip
    assert (code_, doc["verdict"]) == (1, "contraindicated")
    assert code in codes(doc)
    failed = [c["stage"] for c in doc["checks"] if c["status"] == "failed"]
    assert failed and failed[0] == stage
    earlier = STAGE_ORDER[: STAGE_ORDER.index(stage)]
    checks = [
        c for c in doc["checks"] if c["stage"] in earlier and c["name"] != "tpm.ak.attributes"
    ]
    assert all(c["status"] == "passed" for c in checks)
    assert bool(checks) == (stage != "quote")
    if expected.get("replay_should_match") or expected.get("quote_should_verify"):
        assert statuses(doc)["tpm.eventlog.replay"] == "passed"
    messages = [r["message"] for r in doc["reasons"]]
    if "pcr" in expected:
        assert all(f"PCR{expected['pcr']}:" in m for m in messages), messages
    if variant == "ima-entry-tampered":
        assert messages == [
            "entry 2 ('/usr/bin/sh'): template hash is not the sha1 of its template data"
        ]
    if variant == "ima-truncated":
        assert len(messages) == 1 and messages[0].startswith("sha256 PCR10: quoted "), messages
        assert "the whole list (5 entries)" in messages[0]
    if stage == "ima-replay":
        assert statuses(doc)["tpm.ima.boot_aggregate"] == "not_run"


# --- evidence inspect ---------------------------------------------------------------

INSPECT_CASES = [
    ("swtpm-rsa-sha1sha256-loc0/quote.attest", "tpms_attest_quote"),
    ("swtpm-ecc-sha256-loc3/quote.sig", "tpmt_signature"),
    ("swtpm-rsa-sha1sha256-loc0/quote.sig", "tpmt_signature"),
    ("swtpm-ecc-sha256-loc3/ak.tpm2b_public", "tpm2b_public"),
    (f"{GCE}/ak_pub.tpmt", "tpmt_public"),
    ("swtpm-ecc-sha256-loc3/ak.pub.pem", "pem_public_key"),
    (f"{GCE}/ak_cert.der", "x509_certificate"),
    ("go-tpm-tools/ca-certs/gcp_ek_ak_ca_root.crt", "x509_certificate"),
    ("swtpm-rsa-sha256sha384-hcrtm-sboff/eventlog.bin", "uefi_event_log"),
    ("go-tpm-tools/eventlogs/debian-10.bin", "uefi_event_log"),
    ("swtpm-rsa-sha1sha256-loc0/pcrs.json", "pcrs_json"),
    ("swtpm-ecc-sha256-loc3/ima/ascii_runtime_measurements", "ima_runtime_list"),
    ("swtpm-ecc-sha256-loc3/ima/binary_runtime_measurements", "ima_runtime_list"),
    ("keylime/ima-sig/ima-sig-measurements.txt", "ima_runtime_list"),
]


@pytest.mark.parametrize(("path", "kind"), INSPECT_CASES, ids=[c[0] for c in INSPECT_CASES])
def test_inspect_recognises(capsys: pytest.CaptureFixture[str], path: str, kind: str) -> None:
    code, doc = cli_json(capsys, "evidence", "inspect", tpm(path))
    assert (code, doc["kind"], doc["error"]) == (0, kind, None)
    code, out, _ = cli(capsys, "evidence", "inspect", tpm(path))
    assert code == 0
    assert out.startswith(f"{tpm(path)}: {kind}")


def test_inspect_quote_fields(capsys: pytest.CaptureFixture[str]) -> None:
    name = TPM_SWTPM_SETS[2]
    _, doc = cli_json(capsys, "evidence", "inspect", tpm(name, "quote.attest"))
    expected = json.loads(Path(tpm(name, "expected.json")).read_text())["quote"]
    fields = doc["fields"]
    assert fields["magic"].startswith("0xff544347")
    assert fields["type"].startswith("0x8018")
    assert fields["extra_data"] == expected["nonce_hex"]
    assert fields["clock_info"]["reset_count"] == expected["resetCount"]
    assert fields["pcr_selection_text"] == "sha256:0-10,14+sha384:0,4,7"
    assert {"qualified_signer", "firmware_version", "pcr_digest"} <= set(fields)


def test_inspect_event_log_fields(capsys: pytest.CaptureFixture[str]) -> None:
    entry = next(e for e in LOGS if e["file"] == "go-tpm-tools/eventlogs/glinux-alex.bin")
    _, doc = cli_json(capsys, "evidence", "inspect", tpm(entry["file"]))
    fields = doc["fields"]
    assert (fields["format"], fields["banks"]) == (entry["format"], entry["banks"])
    assert fields["event_count"] == len(fields["events"]) == entry["events"]
    assert fields["pcr0_start_locality"] == 3
    first = fields["events"][1]
    assert {"index", "pcr", "type", "digests", "data"} <= set(first)
    assert set(first["digests"]) == {"sha1", "sha256"}


@pytest.mark.parametrize(
    ("path", "hint"),
    [
        ("swtpm-ecc-sha256-loc3/nonce.bin", "32 raw bytes"),
        ("swtpm-ecc-sha256-loc3/nonce.hex", "hex text"),
        ("manifest.json", "not PCRS.json"),
        ("keylime/binary_bios_measurements-empty", "empty"),
    ],
)
def test_inspect_unrecognised_gives_a_hint(
    capsys: pytest.CaptureFixture[str], path: str, hint: str
) -> None:
    code, doc = cli_json(capsys, "evidence", "inspect", tpm(path))
    assert (code, doc["kind"]) == (1, "unrecognised")
    assert hint in doc["hint"]


def test_inspect_malformed_event_log(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = cli_json(capsys, "evidence", "inspect", tpm("tpm2-tools/specid-vendordata.bin"))
    assert (code, doc["kind"]) == (1, "uefi_event_log")
    assert "vendorInfoSize" in doc["error"]


# --- bad input: exit 2 (or 1 for rejected evidence), one line, no traceback --------


def test_bad_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    name = TPM_SWTPM_SETS[0]
    good = _quote_args(name, "quote", "ak.tpm2b_public", _nonce_hex(name))
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x01\x02 not evidence at all \xff" * 3)
    missing = str(tmp_path / "missing.attest")

    def swap(option: str, value: str) -> list[str]:
        args = list(good)
        args[args.index(option) + 1] = value
        return args

    for args, needle in [
        (swap("--message", missing), "cannot read quote message"),
        (swap("--ak", str(garbage)), f"AK {garbage}"),
        (swap("--nonce", "zz"), "not hex"),
        (swap("--pcrs", str(garbage)), "cannot read PCR values"),
        ([*good[: good.index("--pcrs")], "--eventlog", str(garbage)], "need --pcrs"),
        (["evidence", "replay", "--eventlog", missing], "cannot read event log"),
        (["evidence", "inspect", missing], "cannot read file"),
    ]:
        code, out, err = cli(capsys, *args)
        assert code == 2, args
        assert needle in err, err
        assert not out and err.count("\n") == 1
    for args, reason in [
        (swap("--message", str(garbage)), "tpm.quote.bad_magic"),
        (swap("--signature", str(garbage)), "tpm.quote.signature_malformed"),
        (swap("--eventlog", str(garbage)), "tpm.eventlog.malformed"),
        (["evidence", "replay", "--eventlog", str(garbage)], "tpm.eventlog.malformed"),
    ]:
        code, doc = cli_json(capsys, *args)
        assert (code, codes(doc)) == (1, [reason]), args


def test_help_explains_inputs_and_formats(capsys: pytest.CaptureFixture[str]) -> None:
    for command, words in [
        (
            ["evidence", "verify", "tpm"],
            ["TPM2B_PUBLIC", "TPMS_ATTEST", "TPMT_SIGNATURE", "PCRS.json"],
        ),
        (["evidence", "replay"], ["StartupLocality", "PCRS.json", "exit status"]),
        (["evidence", "inspect"], ["TPMS_ATTEST", "unrecognised", "PCRS.json"]),
    ]:
        with pytest.raises(SystemExit) as info:
            main([*command, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert all(word in out for word in words), (command, out)


# --- the installed console script ---------------------------------------------------


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("weightgate")
    if not script.exists():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    name = TPM_SWTPM_SETS[1]
    args = _quote_args(name, "quote", "ak.tpm2b_public", _nonce_hex(name))
    done = subprocess.run(
        [str(script), *args, "--json"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verdict"] == "affirming"
    done = subprocess.run(
        [str(script), *args[:-1], str(tmp_path / "nope.bin")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("weightgate evidence: cannot read event log")
    assert "Traceback" not in done.stderr
