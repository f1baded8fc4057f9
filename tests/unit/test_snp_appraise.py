"""SEV-SNP policy loading and appraisal: deny by default, every violation named."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.snp_vectors import (
    AT,
    GOSEVGUEST,
    TRUSTEE_V2,
    VLEK,
    Case,
    all_roots,
    intermediates,
    raw_report,
    snp,
)
from verifier.evidence.snp.appraise import appraise_report, check_report_data
from verifier.evidence.snp.authenticate import AuthenticatedReport, authenticate_report
from verifier.evidence.snp.certs import load_certificates
from verifier.evidence.snp.policy import PolicyError, SnpPolicy, load_policy
from verifier.evidence.snp.report import parse_report

TRUSTEE_MEASUREMENT = (
    "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c"
    "23500644e0e692e6be917f9050d3d38c"
)
MILAN_TCB = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}


def _auth(case: Case) -> AuthenticatedReport:
    return authenticate_report(
        parse_report(raw_report(case)),
        key_certificate=load_certificates(snp(case.key).read_bytes())[0],
        intermediates=intermediates(case.chain),
        roots=all_roots(),
        at=AT,
    )


def _policy(**overrides: Any) -> SnpPolicy:
    doc = {
        "version": 1,
        "allowed_measurements": [TRUSTEE_MEASUREMENT],
        "min_tcb": {"Milan": MILAN_TCB},
        "allow_smt": True,
        "allow_provisional_firmware": True,
        **overrides,
    }
    return load_policy(json.dumps(doc))


def _codes(policy: SnpPolicy, case: Case) -> list[str]:
    return [r.code for r in appraise_report(policy, _auth(case))]


def test_trustee_v2_conforms_to_a_matching_policy() -> None:
    assert _codes(_policy(), TRUSTEE_V2) == []


def test_trustee_v2_provisional_firmware_flagged_by_default() -> None:
    assert _codes(_policy(allow_provisional_firmware=False), TRUSTEE_V2) == [
        "snp.policy.provisional_firmware"
    ]


def test_gosevguest_debug_rejected_with_every_violation() -> None:
    codes = _codes(_policy(), GOSEVGUEST)
    assert "snp.policy.debug_allowed" in codes
    assert "snp.policy.measurement_not_allowed" in codes
    assert "snp.policy.tcb_too_old" in codes  # bl 2 < 3, snp 5 < 8, ucode 68 < 115


def test_vlek_needs_vlek_and_vmpl_allowed() -> None:
    measurement = parse_report(raw_report(VLEK)).measurement.hex()
    tcb = {"bootloader": 4, "tee": 0, "snp": 24, "microcode": 217}
    codes = _codes(_policy(allowed_measurements=[measurement], min_tcb={"Milan": tcb}), VLEK)
    assert sorted(codes) == ["snp.policy.signing_key_not_allowed", "snp.policy.vmpl_too_high"]
    allowed = _policy(
        allowed_measurements=[measurement],
        min_tcb={"Milan": tcb},
        allowed_signing_keys=["VLEK"],
        allowed_csp_ids=["CN=cc-us-east-2.amazonaws.com"],
        max_vmpl=1,
    )
    assert _codes(allowed, VLEK) == []


# One policy rule tightened, one named reason.
RULES: list[tuple[dict[str, Any], str]] = [
    ({"allow_smt": False}, "snp.policy.smt_allowed"),
    ({"require_single_socket": True}, "snp.policy.single_socket_required"),
    ({"min_guest_svn": 5}, "snp.policy.guest_svn_too_low"),
    ({"min_report_version": 3}, "snp.policy.version_too_old"),
    ({"host_data": "11" * 32}, "snp.policy.host_data_mismatch"),
    ({"allowed_id_key_digests": ["22" * 48]}, "snp.policy.id_key_not_allowed"),
    ({"allowed_author_key_digests": ["33" * 48]}, "snp.policy.author_key_not_allowed"),
    ({"min_tcb": {"Genoa": MILAN_TCB}}, "snp.policy.product_not_allowed"),
    ({"min_tcb": {"Milan": {**MILAN_TCB, "microcode": 116}}}, "snp.policy.tcb_too_old"),
    ({"allowed_measurements": ["00" * 48]}, "snp.policy.measurement_not_allowed"),
]


@pytest.mark.parametrize(
    ("override", "code"), RULES, ids=[r[1] + str(i) for i, r in enumerate(RULES)]
)
def test_one_rule(override: dict[str, Any], code: str) -> None:
    codes = _codes(_policy(**override), TRUSTEE_V2)
    assert set(codes) == {code}


def test_id_key_digest_allowed() -> None:
    digest = parse_report(raw_report(TRUSTEE_V2)).id_key_digest.hex()
    assert _codes(_policy(allowed_id_key_digests=[digest]), TRUSTEE_V2) == []


def test_report_data() -> None:
    auth = _auth(TRUSTEE_V2)
    expected = bytes.fromhex("ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2")
    assert check_report_data(expected, auth) == []
    assert check_report_data(expected + bytes(32), auth) == []
    wrong = bytes([expected[0] ^ 1]) + expected[1:]
    assert [r.code for r in check_report_data(wrong, auth)] == ["snp.report.report_data_mismatch"]


def test_defaults_deny() -> None:
    codes = _codes(SnpPolicy(), TRUSTEE_V2)
    assert {"snp.policy.product_not_allowed", "snp.policy.measurement_not_allowed"} <= set(codes)
    assert "snp.policy.smt_allowed" in codes


@pytest.mark.parametrize(
    "doc",
    [
        {"version": 1, "min_tcb": {"Milan": MILAN_TCB}},
        {"version": 1, "allowed_measurements": [], "min_tcb": {"Milan": MILAN_TCB}},
        {"version": 1, "allowed_measurements": [TRUSTEE_MEASUREMENT]},
        {"version": 1, "allowed_measurements": [TRUSTEE_MEASUREMENT], "min_tcb": {}},
        {"version": 1, "allowed_measurements": ["abcd"], "min_tcb": {"Milan": MILAN_TCB}},
        {"version": 1, "allowed_measurements": [TRUSTEE_MEASUREMENT],
         "min_tcb": {"Milan": {"bootloader": 1}}},
        {"version": 1, "allowed_measurements": [TRUSTEE_MEASUREMENT],
         "min_tcb": {"Turin": MILAN_TCB}},
        {"version": 1, "allowed_measurements": [TRUSTEE_MEASUREMENT],
         "min_tcb": {"Milan": MILAN_TCB}, "allow_debg": True},
        {"version": 2, "allowed_measurements": [TRUSTEE_MEASUREMENT],
         "min_tcb": {"Milan": MILAN_TCB}},
        {"version": 1, "allowed_measurements": [TRUSTEE_MEASUREMENT],
         "min_tcb": {"Milan": MILAN_TCB}, "max_vmpl": 4},
        {"version": 1, "allowed_measurements": [TRUSTEE_MEASUREMENT],
         "min_tcb": {"Milan": MILAN_TCB}, "allowed_id_key_digests": []},
    ],
)  # fmt: skip
def test_bad_policies_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(PolicyError):
        load_policy(json.dumps(doc))


def test_appraise_takes_only_authenticated_reports() -> None:
    with pytest.raises(TypeError):
        appraise_report(_policy(), parse_report(raw_report(TRUSTEE_V2)))  # type: ignore[arg-type]
