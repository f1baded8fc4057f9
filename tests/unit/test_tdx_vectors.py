"""Every Intel TDX vector through the library, with the conclusion PROVENANCE.md gives."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from cryptography import x509

from tests.tdx_vectors import (
    AT_2023,
    AT_2026,
    COLLATERAL_2023,
    SPR_SIGNED_END,
    intel_root,
    tdx_file,
)
from verifier.evidence.errors import ParseError
from verifier.evidence.tdx.authenticate import AuthenticatedQuote, authenticate_quote
from verifier.evidence.tdx.ccel import parse_ccel_log, parse_ccel_table, replay_ccel
from verifier.evidence.tdx.collateral import (
    check_collateral,
    parse_qe_identity,
    parse_tcb_info,
)
from verifier.evidence.tdx.offline import TdxCollateral, TdxEvidence, verify_tdx_offline
from verifier.evidence.tdx.pki import parse_pem_certificates, verify_chain
from verifier.evidence.tdx.policy import (
    TcbPolicy,
    TdxPolicy,
    appraise_quote,
    judge_tcb,
    load_policy,
)
from verifier.evidence.tdx.quote import parse_quote, strip_zero_padding
from verifier.evidence.tdx.tcb import evaluate_qe_identity, evaluate_tcb
from verifier.verdict import Tier, VerificationError

REAL_QUOTES = {
    # file: (zero padding, version, body type, debug, FMSPC)
    "gotdx_v5_quote_td15.dat": (0, 5, 3, False, "90c06f000000"),
    "gotdx_v4_quote_cos113.dat": (3065, 4, 2, False, "00806f050000"),
    "trustee_v4_quote_debug_td.dat": (0, 4, 2, True, "50806f000000"),
    "trustee_v5_quote_td15.dat": (0, 5, 3, False, "90c06f000000"),
    "trustee_v4_quote_fmspc_00a06d080000.dat": (70, 4, 2, False, "00a06d080000"),
    "trustee_azure_tdx_quote.dat": (70, 4, 2, False, "00806f050000"),
}


def _authenticated(name: str, at: object = AT_2026) -> AuthenticatedQuote:
    raw, _ = strip_zero_padding(tdx_file(name))
    if name == "gotdx_v4_quote_spr.dat":
        raw = raw[:SPR_SIGNED_END]
    return authenticate_quote(parse_quote(raw), root=intel_root(), at=at)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(REAL_QUOTES))
def test_real_quotes_authenticate(name: str) -> None:
    padding, version, body_type, debug, fmspc = REAL_QUOTES[name]
    raw, stripped = strip_zero_padding(tdx_file(name))
    assert stripped == padding
    quote = parse_quote(raw)
    assert (quote.header.version, quote.body_type, quote.body.debug) == (version, body_type, debug)
    authenticated = authenticate_quote(quote, root=intel_root(), at=AT_2026)
    assert authenticated.pck_tcb.fmspc.hex() == fmspc
    assert authenticated.pck_path[-1].subject == intel_root().subject


def test_spr_quote_trailing_text_is_rejected_and_the_quote_itself_verifies() -> None:
    data = tdx_file("gotdx_v4_quote_spr.dat")
    with pytest.raises(ParseError) as caught:
        parse_quote(strip_zero_padding(data)[0])
    assert caught.value.code == "trailing_bytes"
    authenticated = _authenticated("gotdx_v4_quote_spr.dat", AT_2023)
    assert authenticated.quote.body.mr_td.hex().startswith("6363b8043668a3ad")
    assert authenticated.pck_tcb.pce_svn == 11


def test_v5_td15_fields() -> None:
    body = _authenticated("trustee_v5_quote_td15.dat").quote.body
    assert body.tee_tcb_svn2 == body.tee_tcb_svn
    assert body.mr_servicetd is not None and body.mr_servicetd.hex().startswith("383c87d3")


# What each real quote gives under a policy naming only its MRTD (every TD-field
# default in force): TDATTRIBUTES of the Azure and SPR quotes have SEPT_VE_DISABLE
# (bit 28) clear (SPR: only PKS, bit 30); trustee's TD 1.5 quote binds a service TD.
DEFAULT_POLICY_CODES = {
    "gotdx_v5_quote_td15.dat": [],
    "gotdx_v4_quote_cos113.dat": [],
    "trustee_v4_quote_debug_td.dat": ["tdx.policy.debug_td"],
    "trustee_v5_quote_td15.dat": ["tdx.policy.mrservicetd_not_allowed"],
    "trustee_v4_quote_fmspc_00a06d080000.dat": [],
    "trustee_azure_tdx_quote.dat": ["tdx.policy.sept_ve_enabled"],
    "gotdx_v4_quote_spr.dat": ["tdx.policy.sept_ve_enabled"],
}


@pytest.mark.parametrize("name", sorted(DEFAULT_POLICY_CODES))
def test_real_quotes_under_the_default_td_field_rules(name: str) -> None:
    authenticated = _authenticated(name, AT_2023 if "spr" in name else AT_2026)
    body = authenticated.quote.body
    policy = load_policy(json.dumps({"version": 1, "mrtd": [body.mr_td.hex()]}))
    reasons = appraise_quote(authenticated, policy, expected_report_data=None)
    assert [r.code for r in reasons] == DEFAULT_POLICY_CODES[name]
    # No real quote sets a reserved TUD bit or MIGRATABLE, nor has MROWNERCONFIG.
    assert int.from_bytes(body.td_attributes, "little") & (0xFE | 1 << 29) == 0
    assert body.mr_owner_config == bytes(48)


def test_sgx_v3_quote_is_not_tdx() -> None:
    with pytest.raises(ParseError) as caught:
        parse_quote(tdx_file("trustee_sgx_v3_quote_occlum.dat"))
    assert caught.value.code == "unsupported_version"


def test_qvl_synthetic_quote_der_chain_is_non_conformant() -> None:
    with pytest.raises(ParseError) as caught:
        parse_quote(tdx_file("qvl_synthetic_v4_quote.dat"))
    assert caught.value.code == "bad_certification_data"


def test_qvl_synthetic_chain_is_untrusted_under_the_pinned_root() -> None:
    # The synthetic quote's DER chain (root first) as certificates: same root DN, other key.
    data = tdx_file("qvl_synthetic_v4_quote.dat")
    chain_der = data[-2470:]
    certificates = []
    offset = 0
    while offset < len(chain_der):
        length = int.from_bytes(chain_der[offset + 2 : offset + 4], "big") + 4
        certificates.append(x509.load_der_x509_certificate(chain_der[offset : offset + length]))
        offset += length
    look_alike = x509.load_pem_x509_certificate(tdx_file("qvl_synthetic_root_ca.pem"))
    assert look_alike.subject == intel_root().subject
    with pytest.raises(VerificationError) as caught:
        verify_chain(certificates[::-1], root=intel_root(), at=AT_2023, prefix="tdx.pck")
    assert caught.value.reason.code == "tdx.pck.chain_untrusted"
    signing = parse_pem_certificates(tdx_file("qvl_synthetic_tcb_sign_chain.pem"))
    with pytest.raises(VerificationError) as caught:
        verify_chain(signing[::-1], root=intel_root(), at=AT_2023, prefix="tdx.collateral.signer")
    assert caught.value.reason.code == "tdx.collateral.signer.chain_untrusted"


def _signer() -> x509.Certificate:
    return parse_pem_certificates(tdx_file("gotdx_tcb_signing_chain.extracted.pem"))[0]


@pytest.mark.parametrize(
    ("name", "parser"),
    [
        ("gotdx_tcbinfo_fmspc_50806f000000.json", parse_tcb_info),
        ("gotdx_tcbinfo_fmspc_90c06f000000.json", parse_tcb_info),
        ("trustee_tcbinfo_fmspc_00a06d080000.json", parse_tcb_info),
        ("gotdx_td_qe_identity_2023.json", parse_qe_identity),
        ("trustee_td_qe_identity_2025.json", parse_qe_identity),
    ],
)
def test_real_collateral_signed_by_tcb_signing(name: str, parser: object) -> None:
    collateral = parser(tdx_file(name))  # type: ignore[operator]
    key = _signer().public_key()
    assert check_collateral(collateral, signing_key=key, at=collateral.issue_date, what=name) == []
    later = collateral.next_update.replace(year=collateral.next_update.year + 1)
    codes = [r.code for r in check_collateral(collateral, signing_key=key, at=later, what=name)]
    assert codes == ["tdx.collateral.expired"]


def test_qvl_synthetic_collateral() -> None:
    with pytest.raises(ParseError):  # component SVNs above 255: not a TCB Info we accept
        parse_tcb_info(tdx_file("qvl_synthetic_tcbinfo.json"))
    identity = parse_qe_identity(tdx_file("qvl_synthetic_qe_identity.json"))
    key = _signer().public_key()
    reasons = check_collateral(identity, signing_key=key, at=identity.issue_date, what="QE")
    assert [r.code for r in reasons] == ["tdx.collateral.signature_invalid"]
    synthetic = parse_pem_certificates(tdx_file("qvl_synthetic_tcb_sign_chain.pem"))[1]
    good = check_collateral(
        identity, signing_key=synthetic.public_key(), at=identity.issue_date, what="QE"
    )
    assert good == []


_INFO_50806F = "gotdx_tcbinfo_fmspc_50806f000000.json"
_INFO_90C06F = "gotdx_tcbinfo_fmspc_90c06f000000.json"
_QE_2023 = "gotdx_td_qe_identity_2023.json"
_QE_2025 = "trustee_td_qe_identity_2025.json"
TCB_CASES = [
    # quote, TCB Info, QE identity, expected status (None: no matching level)
    ("gotdx_v4_quote_spr.dat", _INFO_50806F, _QE_2023, None),
    ("gotdx_v5_quote_td15.dat", _INFO_90C06F, _QE_2025, "UpToDate"),
    ("trustee_v4_quote_debug_td.dat", _INFO_50806F, _QE_2023, "UpToDate"),
    ("trustee_v5_quote_td15.dat", _INFO_90C06F, _QE_2025, None),
    (
        "trustee_v4_quote_fmspc_00a06d080000.dat",
        "trustee_tcbinfo_fmspc_00a06d080000.json",
        _QE_2025,
        "OutOfDate",
    ),
]


@pytest.mark.parametrize(("quote", "info", "qe", "expected"), TCB_CASES)
def test_tcb_status_as_provenance(quote: str, info: str, qe: str, expected: str | None) -> None:
    authenticated = _authenticated(
        quote, AT_2023 if "spr" in quote or "debug" in quote else AT_2026
    )
    result, reasons = evaluate_tcb(
        parse_tcb_info(tdx_file(info)), authenticated.pck_tcb, authenticated.quote.body
    )
    if expected is None:
        assert result is None
        assert [r.code for r in reasons] == ["tdx.tcb.not_supported"]
    else:
        assert result is not None and result.status == expected
    qe_status, qe_reasons = evaluate_qe_identity(
        parse_qe_identity(tdx_file(qe)), authenticated.quote.certification.qe_report
    )
    assert (qe_status, qe_reasons) == ("UpToDate", [])


def test_out_of_date_grace_window() -> None:
    authenticated = _authenticated("trustee_v4_quote_fmspc_00a06d080000.dat")
    info = parse_tcb_info(tdx_file("trustee_tcbinfo_fmspc_00a06d080000.json"))
    result, _ = evaluate_tcb(info, authenticated.pck_tcb, authenticated.quote.body)
    assert result is not None and result.superseded_at is not None
    strict = judge_tcb(result, TcbPolicy(), at=AT_2026)
    assert [r.code for r in strict] == ["tdx.tcb.out_of_date"]
    from datetime import timedelta  # noqa: PLC0415

    grace = TcbPolicy(out_of_date_grace=timedelta(days=30))
    assert judge_tcb(result, grace, at=result.superseded_at + timedelta(days=29)) == []
    late = judge_tcb(result, grace, at=result.superseded_at + timedelta(days=31))
    assert [r.code for r in late] == ["tdx.tcb.out_of_date"]


def test_ccel_replay_reproduces_cos113_rtmrs() -> None:
    table = parse_ccel_table(tdx_file("gotdx_cos113_ccel_acpi_table.bin"))
    area = tdx_file("gotdx_cos113_ccel_eventlog.bin")
    assert table.log_area_length == len(area)
    log = parse_ccel_log(area)
    assert len(log.events) == 44  # the Spec ID header + 43 events
    authenticated = _authenticated("gotdx_v4_quote_cos113.dat")
    assert replay_ccel(log, authenticated) == []
    other = _authenticated("trustee_azure_tdx_quote.dat")  # RTMRs all zero
    assert {r.code for r in replay_ccel(log, other)} == {"tdx.ccel.rtmr_mismatch"}


def test_authenticated_quote_cannot_be_forged() -> None:
    authenticated = _authenticated("gotdx_v5_quote_td15.dat")
    with pytest.raises(TypeError):
        replace(authenticated, verified_at=AT_2023)
    with pytest.raises(TypeError):
        AuthenticatedQuote(
            authenticated.quote, authenticated.pck_path, authenticated.pck_tcb, AT_2023
        )


def _collateral(**files: str) -> TdxCollateral:
    return TdxCollateral(**{k.split(".")[0]: tdx_file(v) for k, v in files.items()})


def test_offline_debug_td_rejected_by_default_policy() -> None:
    quote = tdx_file("trustee_v4_quote_debug_td.dat")
    mrtd = parse_quote(quote).body.mr_td
    evidence = TdxEvidence(
        quote, intel_root(), AT_2023, _collateral(**COLLATERAL_2023), TdxPolicy(frozenset({mrtd}))
    )
    report = verify_tdx_offline(evidence)
    assert report.verdict.reason_codes() == ("tdx.policy.debug_td",)
    allowed = replace(evidence, policy=TdxPolicy(frozenset({mrtd}), allow_debug=True))
    assert verify_tdx_offline(allowed).verdict.tier is Tier.AFFIRMING


def test_offline_collateral_expired_at_a_later_time() -> None:
    quote = tdx_file("trustee_v4_quote_debug_td.dat")
    evidence = TdxEvidence(quote, intel_root(), AT_2026, _collateral(**COLLATERAL_2023))
    codes = set(verify_tdx_offline(evidence).verdict.reason_codes())
    # The 2018 TCB Signing certificate expired 2025-05-21, the CRLs in 2023/2024.
    assert {"tdx.collateral.signer.expired", "tdx.crl.expired"} <= codes
