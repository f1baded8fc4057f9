"""The simulated SEV-SNP guest (devsim.snp) against the verifier's SNP library, real crypto.

The TEST ARK is trusted the one way the library allows: ``load_amd_roots`` given
the ARK certificate and an explicit ``pins`` mapping {product line: its SHA-256};
with AMD's pins (the default) nothing the simulator makes is trusted.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from devsim.snp import SnpHost, SnpHostError, create_snp_host, load_snp_host
from devsim.snp.__main__ import main as snp_main
from tests.vectors import vectors_dir
from verifier.evidence.snp.appraise import appraise_report, check_report_data
from verifier.evidence.snp.authenticate import AuthenticatedReport, authenticate_report
from verifier.evidence.snp.certs import load_certificates, read_key_cert
from verifier.evidence.snp.chain import AmdRoots, RootError, load_amd_roots
from verifier.evidence.snp.offline import SnpEvidence, verify_snp_offline
from verifier.evidence.snp.policy import load_policy
from verifier.evidence.snp.report import parse_report
from verifier.evidence.snp.tcb import ProductLine
from verifier.verdict import Tier, VerificationError
from weightgate.cvm_binding import snp_report_data

NOW = datetime.now(UTC)
REPORT_DATA = snp_report_data(b"n" * 32, b"\xffTCG" + bytes(60))


@pytest.fixture(scope="module", params=["Genoa", "Milan"])
def host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SnpHost:
    return create_snp_host(tmp_path_factory.mktemp("snp") / "host", product=request.param)


def pinned_test_roots(host: SnpHost) -> AmdRoots:
    """The TEST ARK, trusted explicitly: its certificate plus a pin for its line."""
    return load_amd_roots(
        load_certificates(host.ark_pem), pins={ProductLine(host.product): host.ark_sha256}
    )


def authenticate(
    host: SnpHost, report: bytes, roots: AmdRoots | None = None
) -> AuthenticatedReport:
    return authenticate_report(
        parse_report(report),
        key_certificate=load_certificates(host.vcek_der)[0],
        intermediates=load_certificates(host.cert_chain_pem)[:1],
        roots=roots or pinned_test_roots(host),
        at=NOW,
    )


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --- the simulated report is what the verifier expects ---------------------------------


def test_report_parses_as_v3_with_the_host_values(host: SnpHost) -> None:
    raw = host.report(REPORT_DATA)
    assert len(raw) == 1184
    report = parse_report(raw)
    assert report.version == 3
    assert report.report_data == REPORT_DATA
    assert report.measurement == host.measurement
    assert report.chip_id == host.chip_id
    assert report.vmpl == 0
    assert report.signature_algo == 1
    assert not report.policy.debug_allowed
    assert not report.policy.migration_agent_allowed
    assert report.policy.smt_allowed and report.platform_info.smt_enabled
    assert report.current_tcb == report.reported_tcb == report.committed_tcb == host.tcb
    assert report.launch_tcb == host.tcb
    assert report.cpuid_family == 0x19


def test_report_authenticates_and_appraises_clean(host: SnpHost) -> None:
    auth = authenticate(host, host.report(REPORT_DATA))
    assert auth.product is ProductLine(host.product)
    assert auth.chip_id_checked
    assert check_report_data(REPORT_DATA, auth) == []
    policy = load_policy(host.policy_path.read_bytes())
    assert appraise_report(policy, auth) == []


def test_offline_verification_affirms_with_the_test_ark_as_roots(host: SnpHost) -> None:
    result = verify_snp_offline(
        SnpEvidence(report=host.report(REPORT_DATA), key_certificates=host.vcek_der,
                    chain=host.cert_chain_pem),
        roots=pinned_test_roots(host),
        policy=load_policy(host.policy_path.read_bytes()),
        expected_report_data=REPORT_DATA,
        at=NOW,
    )  # fmt: skip
    assert result.verdict.tier is Tier.AFFIRMING, result.to_json()


def test_vcek_carries_product_spls_and_hwid(host: SnpHost) -> None:
    key = read_key_cert(load_certificates(host.vcek_der)[0])
    assert key.product_name == host.product
    assert key.hwid == host.chip_id
    tcb = host.tcb.to_bytes(8, "little")
    assert dict(key.spls) == {
        "bootloader": tcb[0], "tee": tcb[1], "snp": tcb[6], "microcode": tcb[7]
    }  # fmt: skip


def test_every_report_is_freshly_signed(host: SnpHost) -> None:
    # ECDSA with a fresh k: the same REPORT_DATA never gives the same bytes twice.
    assert host.report(REPORT_DATA) != host.report(REPORT_DATA)


# --- one mutation, one named reason -----------------------------------------------------


def test_flipped_report_data_byte_fails_the_signature(host: SnpHost) -> None:
    tampered = flip(host.report(REPORT_DATA), 0x050 + 17)
    with pytest.raises(VerificationError) as caught:
        authenticate(host, tampered)
    assert caught.value.reason.code == "snp.report.signature_invalid"


def test_other_report_data_is_a_report_data_mismatch(host: SnpHost) -> None:
    auth = authenticate(host, host.report(bytes(64)))
    assert [r.code for r in check_report_data(REPORT_DATA, auth)] == [
        "snp.report.report_data_mismatch"
    ]


def test_policy_of_another_host_refuses_the_measurement(host: SnpHost, tmp_path: Path) -> None:
    other = create_snp_host(tmp_path / "other", product=host.product)
    auth = authenticate(host, host.report(REPORT_DATA))
    reasons = appraise_report(load_policy(other.policy_path.read_bytes()), auth)
    assert [r.code for r in reasons] == ["snp.policy.measurement_not_allowed"]


# --- AMD's pins never vouch for the simulator -----------------------------------------


def test_amd_pins_refuse_the_test_ark(host: SnpHost) -> None:
    with pytest.raises(RootError, match="not a pinned AMD ARK"):
        load_amd_roots(load_certificates(host.ark_pem))


def test_with_only_amd_roots_the_chain_is_untrusted(host: SnpHost) -> None:
    line = host.product.lower()
    amd = load_certificates((vectors_dir("snp") / f"amd_{line}_ask_ark.pem").read_bytes())
    roots = load_amd_roots(c for c in amd if c.issuer == c.subject)
    assert ProductLine(host.product) in roots.arks
    with pytest.raises(VerificationError) as caught:
        authenticate(host, host.report(REPORT_DATA), roots)
    assert caught.value.reason.code == "snp.chain.untrusted"


def test_offline_without_roots_takes_no_test_ark_from_the_evidence(host: SnpHost) -> None:
    result = verify_snp_offline(
        SnpEvidence(report=host.report(REPORT_DATA), key_certificates=host.vcek_der,
                    chain=host.cert_chain_pem),
        roots=None,
        policy=load_policy(host.policy_path.read_bytes()),
        expected_report_data=REPORT_DATA,
        at=NOW,
    )  # fmt: skip
    assert result.verdict.tier is Tier.CONTRAINDICATED
    assert "snp.chain.untrusted" in [r.code for r in result.verdict.reasons]


def test_ark_is_clearly_a_test_root(host: SnpHost) -> None:
    ark = x509.load_pem_x509_certificate(host.ark_pem)
    names = {a.rfc4514_attribute_name: a.value for a in ark.subject}
    assert names == {
        "CN": f"weightgate TEST ARK-{host.product} (simulator)",
        "O": "weightgate TEST (simulator, not AMD)",
    }


def test_certificates_expire_after_validity_days(tmp_path: Path) -> None:
    host = create_snp_host(tmp_path / "h", now=NOW, validity_days=1)
    with pytest.raises(VerificationError) as caught:
        authenticate_report(
            parse_report(host.report(REPORT_DATA)),
            key_certificate=load_certificates(host.vcek_der)[0],
            intermediates=load_certificates(host.cert_chain_pem)[:1],
            roots=pinned_test_roots(host),
            at=NOW + timedelta(days=2),
        )
    assert caught.value.reason.code == "snp.chain.expired"


# --- the directory on disk --------------------------------------------------------------


def test_layout_and_modes(host: SnpHost) -> None:
    d = host.directory
    for name in ("host.json", "trust/ark.pem", "cert_chain.pem", "vcek.der", "snp_policy.json"):
        assert (d / name).is_file(), name
    assert stat.S_IMODE((d / "vcek_key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert len(load_certificates(host.cert_chain_pem)) == 2  # ASK then ARK
    assert b"PRIVATE KEY" not in b"".join(p.read_bytes() for p in d.rglob("*.pem")
                                         if p.name != "vcek_key.pem")  # fmt: skip
    assert len([p for p in d.rglob("*") if p.is_file()]) == 6  # no ARK/ASK key anywhere


def test_load_round_trips(host: SnpHost) -> None:
    again = load_snp_host(host.directory)
    assert again.chip_id == host.chip_id and again.measurement == host.measurement
    assert again.vcek_der == host.vcek_der


def _copy(host: SnpHost, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    target.mkdir(mode=0o700)
    for path in host.directory.rglob("*"):
        dest = target / path.relative_to(host.directory)
        if path.is_dir():
            dest.mkdir(mode=0o700)
        else:
            dest.write_bytes(path.read_bytes())
            dest.chmod(stat.S_IMODE(path.stat().st_mode))
    return target


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_readable_key_is_refused(host: SnpHost, tmp_path: Path, mode: int) -> None:
    copy = _copy(host, tmp_path)
    (copy / "vcek_key.pem").chmod(mode)
    with pytest.raises(SnpHostError, match=r"vcek_key\.pem: readable by group or others"):
        load_snp_host(copy)


def test_missing_host_json_is_named(tmp_path: Path) -> None:
    with pytest.raises(SnpHostError, match=r"host\.json: missing"):
        load_snp_host(tmp_path)


def test_chip_id_that_is_not_the_vcek_hwid_is_refused(host: SnpHost, tmp_path: Path) -> None:
    copy = _copy(host, tmp_path)
    meta = copy / "host.json"
    doc = json.loads(meta.read_text())
    doc["chip_id"] = "00" * 64
    meta.write_text(json.dumps(doc))
    with pytest.raises(
        SnpHostError, match=r"vcek\.der: AMD extension 1\.3\.6\.1\.4\.1\.3704\.1\.4"
    ):
        load_snp_host(copy)


def test_unknown_host_json_key_is_refused(host: SnpHost, tmp_path: Path) -> None:
    copy = _copy(host, tmp_path)
    meta = copy / "host.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "debug": True}))
    with pytest.raises(SnpHostError, match=r"host\.json: unknown keys \['debug'\]"):
        load_snp_host(copy)


def test_create_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    with pytest.raises(SnpHostError, match="not an empty directory"):
        create_snp_host(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"product": "Turin"}, "--product must be one of Milan, Genoa"),
        ({"validity_days": 0}, "--validity-days must be 1..3650"),
        ({"now": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SnpHostError, match=message):
        create_snp_host(tmp_path / "h", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "h").exists()


def test_report_data_must_be_64_bytes(host: SnpHost) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        host.report(b"short")


# --- the CLI ----------------------------------------------------------------------------


def test_cli_help_names_the_files() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devsim.snp", "init", "--help"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0
    assert "trust/ark.pem" in done.stdout and "--product" in done.stdout


def test_cli_init_makes_a_loadable_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["init", str(tmp_path / "h"), "--product", "Milan", "--validity-days", "7"]
    assert snp_main(args) == 0
    out = capsys.readouterr().out
    assert "simulated SEV-SNP Milan guest" in out and "TEST ARK" in out
    assert load_snp_host(tmp_path / "h").product == "Milan"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--product", "Turin"], "invalid choice: 'Turin'"),
        (["--validity-days", "0"], "--validity-days must be 1..3650"),
        (["--validity-days", "x"], "invalid int value"),
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devsim.snp", "init", str(tmp_path / "h"), *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert done.stderr.startswith("python -m devsim.snp")
