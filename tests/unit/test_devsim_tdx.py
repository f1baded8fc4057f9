"""The simulated Intel TDX guest (devsim.tdx) against the verifier's TDX library, real crypto.

The TEST root is trusted the one way the library allows: the root certificate
passed as ``root`` together with an explicit pin set naming its SPKI SHA-256
(``authenticate_quote(..., spki_pins=...)``, ``TdxEvidence(root_pins=...)``);
with the default pins (Intel's root only) the test root is a setup error, and
with Intel's real root the simulated chain is untrusted.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from devsim.tdx import TdxGuest, TdxGuestError, create_tdx_guest, load_tdx_guest
from devsim.tdx.__main__ import main as tdx_main
from tests.tdx_vectors import intel_root
from verifier.evidence.tdx.authenticate import AuthenticatedQuote, authenticate_quote
from verifier.evidence.tdx.collateral import check_collateral, parse_qe_identity, parse_tcb_info
from verifier.evidence.tdx.collateral_files import read_collateral_dir
from verifier.evidence.tdx.offline import TdxEvidence, verify_tdx_offline
from verifier.evidence.tdx.pck_cache import clear_pck_cache
from verifier.evidence.tdx.pki import (
    INTEL_SGX_ROOT_CA_SPKI_SHA256,
    check_crl,
    load_crl,
    parse_pem_certificates,
    spki_sha256,
    verify_chain,
)
from verifier.evidence.tdx.policy import load_policy
from verifier.evidence.tdx.quote import TEE_TYPE_TDX, parse_quote
from verifier.evidence.tdx.tcb import evaluate_qe_identity, evaluate_tcb
from verifier.verdict import Tier, VerificationError
from weightgate.cvm_binding import tdx_report_data

NOW = datetime.now(UTC)
REPORT_DATA = tdx_report_data(b"n" * 32, b"\xffTCG" + bytes(60))
TD_REPORT_DATA = 48 + 520  # REPORTDATA's offset in a v4 quote: header, then the body's 520


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> TdxGuest:
    return create_tdx_guest(tmp_path_factory.mktemp("tdx") / "guest")


@pytest.fixture(autouse=True)
def _cold_pck_cache() -> Iterator[None]:
    clear_pck_cache()
    yield
    clear_pck_cache()


def root_of(guest: TdxGuest) -> x509.Certificate:
    return x509.load_pem_x509_certificate(guest.root_pem)


def pins(guest: TdxGuest) -> frozenset[bytes]:
    """The explicit test pin: the TEST root's SPKI SHA-256, and nothing else."""
    return frozenset({guest.root_spki_sha256})


def authenticate(guest: TdxGuest, quote: bytes, *, at: datetime = NOW) -> AuthenticatedQuote:
    return authenticate_quote(parse_quote(quote), root=root_of(guest), at=at, spki_pins=pins(guest))


def evidence(guest: TdxGuest, quote: bytes, **changes: object) -> TdxEvidence:
    fields: dict[str, object] = {
        "quote": quote,
        "root": root_of(guest),
        "at": NOW,
        "collateral": read_collateral_dir(guest.collateral_dir),
        "policy": load_policy(guest.policy_path.read_bytes()),
        "expected_report_data": REPORT_DATA,
        "root_pins": pins(guest),
    }
    fields.update(changes)
    return TdxEvidence(**fields)  # type: ignore[arg-type]


def reason(guest: TdxGuest, quote: bytes, **kwargs: object) -> str:
    with pytest.raises(VerificationError) as caught:
        authenticate(guest, quote, **kwargs)  # type: ignore[arg-type]
    return caught.value.reason.code


# --- the quote -------------------------------------------------------------------------


def test_quote_parses_as_v4_with_the_guest_values(guest: TdxGuest) -> None:
    quote = parse_quote(guest.quote(REPORT_DATA))
    assert (quote.header.version, quote.header.tee_type) == (4, TEE_TYPE_TDX)
    body = quote.body
    assert body.report_data == REPORT_DATA
    assert body.mr_td == guest.mr_td
    assert body.rtmrs == guest.rtmrs
    assert body.tee_tcb_svn == guest.platform.tee_tcb_svn
    assert not body.debug
    assert body.tee_tcb_svn2 is None  # a TD 1.0 body
    assert quote.certification.pck_chain_pem == guest.pck_chain_pem.rstrip(b"\x00")


def test_quote_authenticates_to_the_explicitly_pinned_test_root(guest: TdxGuest) -> None:
    authenticated = authenticate(guest, guest.quote(REPORT_DATA))
    tcb = authenticated.pck_tcb
    assert tcb.fmspc == guest.platform.fmspc
    assert tcb.pce_id == guest.platform.pce_id
    assert tcb.sgx_tcb_components == guest.platform.sgx_components
    assert tcb.pce_svn == guest.platform.pce_svn
    assert tcb.cpu_svn == guest.platform.cpu_svn
    assert authenticated.pck_path[-1] == root_of(guest)


def test_offline_verification_affirms_with_policy_and_report_data(guest: TdxGuest) -> None:
    report = verify_tdx_offline(evidence(guest, guest.quote(REPORT_DATA)))
    assert report.verdict.tier is Tier.AFFIRMING, report.verdict.reasons
    assert report.claims["tcb"]["status"] == "UpToDate"
    assert report.claims["tcb"]["module_status"] == "UpToDate"
    assert report.claims["tcb"]["qe_status"] == "UpToDate"
    passed = {c.name for c in report.checks if c.status == "passed"}
    for check in (
        "tdx.crl.root", "tdx.crl.pck", "tdx.collateral.signer", "tdx.collateral.tcb_info",
        "tdx.collateral.qe_identity", "tdx.tcb.status", "tdx.quote.report_data", "tdx.policy",
    ):  # fmt: skip
        assert check in passed


def test_every_quote_is_freshly_signed(guest: TdxGuest) -> None:
    first, second = guest.quote(REPORT_DATA), guest.quote(REPORT_DATA)
    assert first[: TD_REPORT_DATA + 64] == second[: TD_REPORT_DATA + 64]
    assert first != second  # ECDSA signatures are randomised
    authenticate(guest, second)


def test_flipped_report_data_byte_fails_the_quote_signature(guest: TdxGuest) -> None:
    quote = bytearray(guest.quote(REPORT_DATA))
    quote[TD_REPORT_DATA] ^= 1
    assert reason(guest, bytes(quote)) == "tdx.quote.signature_invalid"


def test_other_report_data_is_a_report_data_mismatch(guest: TdxGuest) -> None:
    other = tdx_report_data(b"m" * 32, b"\xffTCG" + bytes(60))
    report = verify_tdx_offline(evidence(guest, guest.quote(other)))
    assert report.verdict.tier is Tier.CONTRAINDICATED
    assert [r.code for r in report.verdict.reasons] == ["tdx.quote.report_data_mismatch"]


def test_policy_of_another_guest_refuses_the_measurements(guest: TdxGuest, tmp_path: Path) -> None:
    other = create_tdx_guest(tmp_path / "other")
    report = verify_tdx_offline(
        evidence(
            guest, guest.quote(REPORT_DATA), policy=load_policy(other.policy_path.read_bytes())
        )
    )
    codes = {r.code for r in report.verdict.reasons}
    assert codes == {"tdx.policy.mrtd_mismatch", "tdx.policy.rtmr0_mismatch",
                     "tdx.policy.rtmr1_mismatch", "tdx.policy.rtmr2_mismatch"}  # fmt: skip


# --- trust: only an explicit pin makes the test root a root ---------------------------


def test_default_pins_refuse_the_test_root(guest: TdxGuest) -> None:
    with pytest.raises(ValueError, match="is not a pinned Intel SGX Root CA"):
        authenticate_quote(parse_quote(guest.quote(REPORT_DATA)), root=root_of(guest), at=NOW)


def test_with_intels_real_root_the_chain_is_untrusted(guest: TdxGuest) -> None:
    root = intel_root()
    assert spki_sha256(root) == INTEL_SGX_ROOT_CA_SPKI_SHA256
    with pytest.raises(VerificationError) as caught:
        authenticate_quote(parse_quote(guest.quote(REPORT_DATA)), root=root, at=NOW)
    assert caught.value.reason.code == "tdx.pck.chain_untrusted"
    intel_only = frozenset({INTEL_SGX_ROOT_CA_SPKI_SHA256})
    report = verify_tdx_offline(
        evidence(guest, guest.quote(REPORT_DATA), root=root, root_pins=intel_only)
    )
    assert report.verdict.tier is Tier.CONTRAINDICATED
    assert [r.code for r in report.verdict.reasons] == ["tdx.pck.chain_untrusted"]


def test_root_is_clearly_a_test_root(guest: TdxGuest) -> None:
    root = root_of(guest)
    assert root.subject == root.issuer
    text = root.subject.rfc4514_string()
    assert "Intel SGX Root CA" in text and "TEST" in text and "simulator" in text
    assert guest.root_spki_sha256 == spki_sha256(root) != INTEL_SGX_ROOT_CA_SPKI_SHA256
    assert json.loads((guest.directory / "guest.json").read_text())["root_spki_sha256"] == (
        guest.root_spki_sha256.hex()
    )


# --- collateral -----------------------------------------------------------------------


def test_collateral_verifies_and_rates_the_platform_up_to_date(guest: TdxGuest) -> None:
    files = read_collateral_dir(guest.collateral_dir)
    assert files.tcb_signing_chain is not None and files.tcb_info is not None
    assert files.qe_identity is not None
    signer = verify_chain(
        parse_pem_certificates(files.tcb_signing_chain),
        root=root_of(guest), at=NOW, prefix="tdx.collateral.signer", spki_pins=pins(guest),
    )[0]  # fmt: skip
    key = signer.public_key()
    info = parse_tcb_info(files.tcb_info)
    identity = parse_qe_identity(files.qe_identity)
    assert check_collateral(info, signing_key=key, at=NOW, what="TCB Info") == []  # type: ignore[arg-type]
    assert check_collateral(identity, signing_key=key, at=NOW, what="QE") == []  # type: ignore[arg-type]
    quote = authenticate(guest, guest.quote(REPORT_DATA))
    result, reasons = evaluate_tcb(info, quote.pck_tcb, quote.quote.body)
    assert reasons == [] and result is not None
    assert (result.status, result.module_status, result.superseded_at) == ("UpToDate",) * 2 + (
        None,
    )
    assert evaluate_qe_identity(identity, quote.quote.certification.qe_report) == ("UpToDate", [])


def test_crls_are_signed_by_their_issuers_and_revoke_nothing(guest: TdxGuest) -> None:
    files = read_collateral_dir(guest.collateral_dir)
    assert files.root_ca_crl is not None and files.pck_crl is not None
    path = authenticate(guest, guest.quote(REPORT_DATA)).pck_path
    leaf, ca, root = path
    assert (
        check_crl(load_crl(files.root_ca_crl), issuer=root, covered=[ca], at=NOW, what="root") == []
    )
    assert check_crl(load_crl(files.pck_crl), issuer=ca, covered=[leaf], at=NOW, what="PCK") == []


def test_collateral_signed_by_another_guest_is_refused(guest: TdxGuest, tmp_path: Path) -> None:
    other = create_tdx_guest(tmp_path / "other")
    mixed = read_collateral_dir(guest.collateral_dir)
    mixed = replace(mixed, tcb_info=(other.collateral_dir / "tcb_info.json").read_bytes())
    report = verify_tdx_offline(evidence(guest, guest.quote(REPORT_DATA), collateral=mixed))
    assert "tdx.collateral.signature_invalid" in {r.code for r in report.verdict.reasons}


def test_everything_expires_after_validity_days(tmp_path: Path) -> None:
    old = create_tdx_guest(tmp_path / "old", now=NOW - timedelta(days=10), validity_days=7)
    assert old.valid_until < NOW
    report = verify_tdx_offline(evidence(old, old.quote(REPORT_DATA)))
    assert [r.code for r in report.verdict.reasons] == ["tdx.pck.expired"]
    at = NOW - timedelta(days=5)
    assert verify_tdx_offline(evidence(old, old.quote(REPORT_DATA), at=at)).verdict.tier is (
        Tier.AFFIRMING
    )


# --- the directory ----------------------------------------------------------------------


def test_layout_and_modes(guest: TdxGuest) -> None:
    d = guest.directory
    names = {p.relative_to(d).as_posix() for p in d.rglob("*")}
    assert names == {
        "guest.json", "trust", "trust/root.pem", "pck_chain.pem", "pck_key.pem",
        "attestation_key.pem", "tdx_policy.json", "collateral", "collateral/tcb_info.json",
        "collateral/qe_identity.json", "collateral/tcb_signing_chain.pem",
        "collateral/root_ca_crl.der", "collateral/pck_crl.der",
    }  # fmt: skip
    for private in ("pck_key.pem", "attestation_key.pem"):
        assert stat.S_IMODE((d / private).stat().st_mode) == 0o600
    for directory in (d, d / "trust", d / "collateral"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    # CA keys are never kept: the only private keys are the PCK's and the QE's.
    keys = [p for p in d.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert sorted(p.name for p in keys) == ["attestation_key.pem", "pck_key.pem"]
    chain = x509.load_pem_x509_certificates(guest.pck_chain_pem)
    assert len(chain) == 3 and chain[2] == root_of(guest)


def test_load_round_trips(guest: TdxGuest) -> None:
    loaded = load_tdx_guest(guest.directory)
    assert (loaded.mr_td, loaded.rtmrs) == (guest.mr_td, guest.rtmrs)
    assert loaded.root_spki_sha256 == guest.root_spki_sha256
    authenticate(guest, loaded.quote(REPORT_DATA))


def _copy(guest: TdxGuest, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(guest.directory, copy)
    return copy


@pytest.mark.parametrize("name", ["attestation_key.pem", "pck_key.pem"])
def test_readable_key_is_refused(guest: TdxGuest, tmp_path: Path, name: str) -> None:
    copy = _copy(guest, tmp_path)
    (copy / name).chmod(0o640)
    with pytest.raises(TdxGuestError, match=rf"{name}: readable by group or others"):
        load_tdx_guest(copy)


def test_missing_guest_json_is_named(tmp_path: Path) -> None:
    with pytest.raises(TdxGuestError, match=r"guest\.json: missing"):
        load_tdx_guest(tmp_path)


def test_ppid_that_is_not_the_pcks_is_refused(guest: TdxGuest, tmp_path: Path) -> None:
    copy = _copy(guest, tmp_path)
    meta = copy / "guest.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "ppid": "00" * 16}))
    with pytest.raises(TdxGuestError, match=r"pck_chain\.pem: the PCK's SGX extension does not"):
        load_tdx_guest(copy)


def test_another_root_is_refused(guest: TdxGuest, tmp_path: Path) -> None:
    copy = _copy(guest, tmp_path)
    other = create_tdx_guest(tmp_path / "other")
    (copy / "trust" / "root.pem").write_bytes(other.root_pem)
    with pytest.raises(TdxGuestError, match=r"root_spki_sha256 is not the SPKI SHA-256"):
        load_tdx_guest(copy)


def test_unknown_guest_json_key_is_refused(guest: TdxGuest, tmp_path: Path) -> None:
    copy = _copy(guest, tmp_path)
    meta = copy / "guest.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "debug": True}))
    with pytest.raises(TdxGuestError, match=r"guest\.json: unknown keys \['debug'\]"):
        load_tdx_guest(copy)


def test_create_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    with pytest.raises(TdxGuestError, match="not an empty directory"):
        create_tdx_guest(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"validity_days": 0}, "--validity-days must be 1..3650"),
        ({"validity_days": True}, "--validity-days must be 1..3650"),
        ({"now": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TdxGuestError, match=message):
        create_tdx_guest(tmp_path / "g", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "g").exists()


def test_report_data_must_be_64_bytes(guest: TdxGuest) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        guest.quote(b"short")


# --- the CLI ----------------------------------------------------------------------------


def test_cli_help_names_the_files() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devsim.tdx", "init", "--help"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0
    assert "trust/root.pem" in done.stdout and "collateral/" in done.stdout
    assert "--validity-days" in done.stdout


def test_cli_init_makes_a_loadable_guest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tdx_main(["init", str(tmp_path / "g"), "--validity-days", "7"]) == 0
    out = capsys.readouterr().out
    assert "simulated TDX guest" in out and "TEST root" in out
    loaded = load_tdx_guest(tmp_path / "g")
    assert loaded.valid_until - loaded.created_at == timedelta(days=7)
    assert loaded.root_spki_sha256.hex() in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--validity-days", "0"], "--validity-days must be 1..3650"),
        (["--validity-days", "x"], "invalid int value"),
        (["--product", "SPR"], "unrecognized arguments: --product SPR"),
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devsim.tdx", "init", str(tmp_path / "g"), *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert done.stderr.startswith("python -m devsim.tdx")
