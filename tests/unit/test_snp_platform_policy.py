"""SEV-SNP guest-policy and platform bits a policy can require, one mutation each:
CXL_ALLOW (guest policy bit 21), CIPHERTEXT_HIDING_EN and ALIAS_CHECK_COMPLETE
(PLATFORM_INFO bits 4 and 5) and a minimum CURRENT / COMMITTED firmware version.

Reports come from the simulated guest (devsim.snp); a mutated report is re-signed
with the simulated VCEK, so each test changes exactly one signed field.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from devsim.snp import SnpHost, create_snp_host
from devsim.snp.report import SIGNED_SIZE
from tests.snp_vectors import (
    AT,
    REPORTS,
    TRUSTEE_V2,
    VALID,
    VLEK,
    all_roots,
    intermediates,
    raw_report,
    snp,
)
from verifier.evidence.snp.appraise import appraise_report
from verifier.evidence.snp.authenticate import AuthenticatedReport, authenticate_report
from verifier.evidence.snp.certs import KeyKind, load_certificates
from verifier.evidence.snp.chain import load_amd_roots
from verifier.evidence.snp.policy import PolicyError, SnpPolicy, load_policy
from verifier.evidence.snp.report import parse_report
from verifier.evidence.snp.tcb import ProductLine

NOW = datetime.now(UTC)
REPORT_DATA = b"\x5a" * 64
GUEST_POLICY_AT = 0x08
PLATFORM_INFO_AT = 0x40
CURRENT_VERSION_AT = 0x1E8  # BUILD, MINOR, MAJOR, reserved
COMMITTED_VERSION_AT = 0x1EC
CXL_ALLOW = 1 << 21
CIPHERTEXT_HIDING_EN = 1 << 4
ALIAS_CHECK_COMPLETE = 1 << 5
MILAN_FIRMWARE = (1, 55, 22)  # devsim.snp.model.PRODUCTS["Milan"].firmware


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> SnpHost:
    made = create_snp_host(tmp_path_factory.mktemp("snp") / "host", product="Milan")
    assert made.platform.firmware == MILAN_FIRMWARE
    return made


def _vcek_key(host: SnpHost) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(
        (Path(host.directory) / "vcek_key.pem").read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _resigned(host: SnpHost, mutate: Callable[[bytearray], None]) -> bytes:
    """A fresh devsim report with ``mutate`` applied to its body, signed again."""
    report = bytearray(host.report(REPORT_DATA))
    body = bytearray(report[:SIGNED_SIZE])
    mutate(body)
    r, s = decode_dss_signature(_vcek_key(host).sign(bytes(body), ec.ECDSA(hashes.SHA384())))
    report[:SIGNED_SIZE] = body
    report[SIGNED_SIZE : SIGNED_SIZE + 72] = r.to_bytes(72, "little")
    report[SIGNED_SIZE + 72 : SIGNED_SIZE + 144] = s.to_bytes(72, "little")
    return bytes(report)


def _or_u64(at: int, bits: int) -> Callable[[bytearray], None]:
    def mutate(body: bytearray) -> None:
        (value,) = struct.unpack_from("<Q", body, at)
        struct.pack_into("<Q", body, at, value | bits)

    return mutate


def _set_byte(at: int, value: int) -> Callable[[bytearray], None]:
    def mutate(body: bytearray) -> None:
        body[at] = value

    return mutate


def _authenticate(host: SnpHost, report: bytes) -> AuthenticatedReport:
    roots = load_amd_roots(
        load_certificates(host.ark_pem), pins={ProductLine(host.product): host.ark_sha256}
    )
    return authenticate_report(
        parse_report(report),
        key_certificate=load_certificates(host.vcek_der)[0],
        intermediates=load_certificates(host.cert_chain_pem)[:1],
        roots=roots,
        at=NOW,
    )


def _policy(host: SnpHost, **overrides: Any) -> SnpPolicy:
    """The policy devsim wrote for this host, with ``overrides``."""
    doc = json.loads(host.policy_path.read_bytes())
    doc.update(overrides)
    return load_policy(json.dumps(doc))


def _codes(host: SnpHost, report: bytes, **overrides: Any) -> list[str]:
    reasons = appraise_report(_policy(host, **overrides), _authenticate(host, report))
    return [r.code for r in reasons]


def test_devsim_report_has_none_of_the_bits(host: SnpHost) -> None:
    report = parse_report(host.report(REPORT_DATA))
    assert not report.policy.cxl_allowed
    assert not report.platform_info.ciphertext_hiding_enabled
    assert not report.platform_info.alias_check_complete
    assert report.current_version == report.committed_version == MILAN_FIRMWARE
    assert _codes(host, host.report(REPORT_DATA)) == []


def test_re_signing_alone_changes_nothing(host: SnpHost) -> None:
    assert _codes(host, _resigned(host, lambda body: None)) == []


# --- CXL_ALLOW (guest policy bit 21): refused unless allow_cxl ----------------------


def test_cxl_allowed_refused_by_default(host: SnpHost) -> None:
    report = _resigned(host, _or_u64(GUEST_POLICY_AT, CXL_ALLOW))
    assert parse_report(report).policy.cxl_allowed
    assert _codes(host, report) == ["snp.policy.cxl_allowed"]
    assert _codes(host, report, allow_cxl=False) == ["snp.policy.cxl_allowed"]
    assert _codes(host, report, allow_cxl=True) == []


@pytest.mark.parametrize("bit", [22, 23, 24, 25])
def test_neighbouring_guest_policy_bits_are_not_cxl(host: SnpHost, bit: int) -> None:
    assert _codes(host, _resigned(host, _or_u64(GUEST_POLICY_AT, 1 << bit))) == []


# --- PLATFORM_INFO CIPHERTEXT_HIDING_EN (bit 4) ----------------------------------------


def test_ciphertext_hiding_off_refused_when_required(host: SnpHost) -> None:
    report = host.report(REPORT_DATA)
    assert _codes(host, report, require_ciphertext_hiding=True) == [
        "snp.policy.ciphertext_hiding_off"
    ]
    reasons = appraise_report(
        _policy(host, require_ciphertext_hiding=True), _authenticate(host, report)
    )
    assert "CIPHERTEXT_HIDING_EN" in reasons[0].detail


def test_ciphertext_hiding_on_conforms(host: SnpHost) -> None:
    report = _resigned(host, _or_u64(PLATFORM_INFO_AT, CIPHERTEXT_HIDING_EN))
    assert parse_report(report).platform_info.ciphertext_hiding_enabled
    assert _codes(host, report, require_ciphertext_hiding=True) == []
    # ALIAS_CHECK_COMPLETE is another bit: setting bit 4 does not satisfy it.
    assert _codes(host, report, require_alias_check=True) == ["snp.policy.alias_check_incomplete"]


# --- PLATFORM_INFO ALIAS_CHECK_COMPLETE (bit 5), the BadRAM mitigation -----------------


def test_alias_check_incomplete_refused_when_required(host: SnpHost) -> None:
    report = host.report(REPORT_DATA)
    assert _codes(host, report, require_alias_check=True) == ["snp.policy.alias_check_incomplete"]


def test_alias_check_complete_conforms(host: SnpHost) -> None:
    report = _resigned(host, _or_u64(PLATFORM_INFO_AT, ALIAS_CHECK_COMPLETE))
    assert parse_report(report).platform_info.alias_check_complete
    assert _codes(host, report, require_alias_check=True) == []
    assert _codes(host, report, require_ciphertext_hiding=True) == [
        "snp.policy.ciphertext_hiding_off"
    ]


def test_both_platform_requirements_name_both(host: SnpHost) -> None:
    report = host.report(REPORT_DATA)
    codes = _codes(host, report, require_ciphertext_hiding=True, require_alias_check=True)
    assert codes == ["snp.policy.ciphertext_hiding_off", "snp.policy.alias_check_incomplete"]
    both = _resigned(host, _or_u64(PLATFORM_INFO_AT, CIPHERTEXT_HIDING_EN | ALIAS_CHECK_COMPLETE))
    assert _codes(host, both, require_ciphertext_hiding=True, require_alias_check=True) == []


# --- min_firmware: CURRENT and COMMITTED firmware versions ----------------------------


@pytest.mark.parametrize("minimum", ["1.55", "1.54", "0.99", "1.55.22", "1.55.0", "1.54.255"])
def test_firmware_at_least_the_minimum_conforms(host: SnpHost, minimum: str) -> None:
    assert _codes(host, host.report(REPORT_DATA), min_firmware=minimum) == []


@pytest.mark.parametrize("minimum", ["1.56", "2.0", "1.55.23", "2.0.0"])
def test_firmware_below_the_minimum_refused(host: SnpHost, minimum: str) -> None:
    report = host.report(REPORT_DATA)
    reasons = appraise_report(_policy(host, min_firmware=minimum), _authenticate(host, report))
    assert [r.code for r in reasons] == ["snp.policy.firmware_too_old"]
    assert "CURRENT 1.55" in reasons[0].detail and "COMMITTED 1.55" in reasons[0].detail


def test_old_committed_firmware_alone_refused(host: SnpHost) -> None:
    # CURRENT stays 1.55.22; COMMITTED minor 54: a rollback to 1.54 is still possible.
    report = _resigned(host, _set_byte(COMMITTED_VERSION_AT + 1, 54))
    parsed = parse_report(report)
    assert parsed.current_version == MILAN_FIRMWARE and parsed.committed_version == (1, 54, 22)
    reasons = appraise_report(_policy(host, min_firmware="1.55"), _authenticate(host, report))
    assert [r.code for r in reasons] == ["snp.policy.firmware_too_old"]
    assert "COMMITTED 1.54.22 < 1.55" in reasons[0].detail
    assert "CURRENT" not in reasons[0].detail
    assert _codes(host, report) == []  # not checked without min_firmware


def test_old_current_build_alone_refused(host: SnpHost) -> None:
    report = _resigned(host, _set_byte(CURRENT_VERSION_AT, 21))  # CURRENT_BUILD 21
    assert parse_report(report).current_version == (1, 55, 21)
    reasons = appraise_report(_policy(host, min_firmware="1.55.22"), _authenticate(host, report))
    assert [r.code for r in reasons] == ["snp.policy.firmware_too_old"]
    assert reasons[0].detail == "firmware CURRENT 1.55.21 < 1.55.22"
    assert _codes(host, report, min_firmware="1.55") == []  # the build is not compared


def test_major_outranks_minor(host: SnpHost) -> None:
    report = _resigned(host, _set_byte(CURRENT_VERSION_AT + 2, 2))  # CURRENT 2.55.22
    assert _codes(host, report, min_firmware="2.0") == ["snp.policy.firmware_too_old"]  # COMMITTED

    def both_major_2(body: bytearray) -> None:
        body[CURRENT_VERSION_AT + 2] = body[COMMITTED_VERSION_AT + 2] = 2

    report = _resigned(host, both_major_2)
    assert _codes(host, report, min_firmware="2.0") == []
    assert _codes(host, report, min_firmware="1.99.255") == []


# --- the vectors: ---------------------------------------------------------------------


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_no_vector_sets_cxl_allow(case: Any) -> None:
    assert not parse_report(raw_report(case)).policy.cxl_allowed


def _vector(case: Any) -> AuthenticatedReport:
    return authenticate_report(
        parse_report(raw_report(case)),
        key_certificate=load_certificates(snp(case.key).read_bytes())[0],
        intermediates=intermediates(case.chain),
        roots=all_roots(),
        at=AT,
    )


def test_vector_platform_info_bits() -> None:
    # trustee_milan_v2: PLATFORM_INFO 0x1 (SMT only), firmware 1.52.4;
    # trustee_milan_v3_vlek: 0x27 (SMT, TSME, ECC, ALIAS_CHECK_COMPLETE), 1.55.29.
    old, new = _vector(TRUSTEE_V2), _vector(VLEK)
    assert old.report.platform_info.raw == 0x1 and new.report.platform_info.raw == 0x27
    assert not old.report.platform_info.alias_check_complete
    assert new.report.platform_info.alias_check_complete
    assert not new.report.platform_info.ciphertext_hiding_enabled
    base = {
        "version": 1,
        "allowed_measurements": [old.report.measurement.hex(), new.report.measurement.hex()],
        "min_tcb": {"Milan": {"bootloader": 0, "tee": 0, "snp": 0, "microcode": 0}},
        "allowed_signing_keys": ["VCEK", "VLEK"],
        "allowed_csp_ids": [new.key.csp_id],
        "allow_smt": True,
        "allow_provisional_firmware": True,
        "max_vmpl": 1,
        "require_alias_check": True,
        "min_firmware": "1.55",
    }
    policy = load_policy(json.dumps(base))
    assert [r.code for r in appraise_report(policy, new)] == []
    assert [r.code for r in appraise_report(policy, old)] == [
        "snp.policy.alias_check_incomplete",
        "snp.policy.firmware_too_old",
    ]


@pytest.mark.parametrize("case", REPORTS, ids=lambda c: c.name)
def test_new_keys_at_their_defaults_add_nothing(case: Any) -> None:
    auth = _vector(case)
    doc = {
        "version": 1,
        "allowed_measurements": [auth.report.measurement.hex()],
        "min_tcb": {auth.product.value: dict.fromkeys(auth.current_tcb.components(), 0)},
        "allowed_signing_keys": [auth.key.kind.value],
        "allowed_csp_ids": [auth.key.csp_id] if auth.key.kind is KeyKind.VLEK else [],
    }
    defaults = appraise_report(load_policy(json.dumps(doc)), auth)
    explicit = {
        **doc,
        "allow_cxl": False,
        "require_ciphertext_hiding": False,
        "require_alias_check": False,
    }
    assert appraise_report(load_policy(json.dumps(explicit)), auth) == defaults
    new_codes = {
        "snp.policy.cxl_allowed",
        "snp.policy.ciphertext_hiding_off",
        "snp.policy.alias_check_incomplete",
        "snp.policy.firmware_too_old",
    }
    assert not new_codes & {r.code for r in defaults}


# --- the loader and SnpPolicy hold the same rules ---------------------------------------

_BASE = {
    "version": 1,
    "allowed_measurements": ["00" * 48],
    "min_tcb": {"Milan": {"bootloader": 0, "tee": 0, "snp": 0, "microcode": 0}},
}


def test_loader_defaults_and_values() -> None:
    policy = load_policy(json.dumps(_BASE))
    assert not policy.allow_cxl
    assert not policy.require_ciphertext_hiding
    assert not policy.require_alias_check
    assert policy.min_firmware is None
    assert SnpPolicy().allow_cxl is False and SnpPolicy().min_firmware is None
    assert load_policy(json.dumps({**_BASE, "min_firmware": "1.55"})).min_firmware == (1, 55)
    three = load_policy(json.dumps({**_BASE, "min_firmware": "1.55.22"}))
    assert three.min_firmware == (1, 55, 22)
    assert load_policy(json.dumps({**_BASE, "min_firmware": "0.0"})).min_firmware == (0, 0)
    assert load_policy(json.dumps({**_BASE, "min_firmware": "255.255.255"})).min_firmware == (
        255,
        255,
        255,
    )


@pytest.mark.parametrize("key", ["allow_cxl", "require_ciphertext_hiding", "require_alias_check"])
@pytest.mark.parametrize("value", [1, 0, "true", None, []])
def test_loader_refuses_non_bool(key: str, value: object) -> None:
    with pytest.raises(PolicyError, match=key):
        load_policy(json.dumps({**_BASE, key: value}))


@pytest.mark.parametrize(
    "value",
    ["1", "1.2.3.4", "1.256", "256.0", "1.55.256", "a.b", "1.-5", "", " 1.5", "1.5 ", "1..5",
     "1.5.", "+1.5", "\u0661.\u0665", "1.0005", 1.55, 155, True, ["1", "55"]],
)  # fmt: skip
def test_loader_refuses_bad_min_firmware(value: object) -> None:
    with pytest.raises(PolicyError, match="min_firmware"):
        load_policy(json.dumps({**_BASE, "min_firmware": value}))


@pytest.mark.parametrize("key", ["allow_cxl", "require_ciphertext_hiding", "require_alias_check"])
def test_policy_in_code_refuses_non_bool(key: str) -> None:
    with pytest.raises(PolicyError, match=key):
        SnpPolicy(**{key: 1})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [(1,), (1, 2, 3, 4), (1, 256), (-1, 0), (True, 2), ("1", "2"), [1, 2], "1.55", (1.0, 2)],
)
def test_policy_in_code_refuses_bad_min_firmware(value: object) -> None:
    with pytest.raises(PolicyError, match="min_firmware"):
        SnpPolicy(min_firmware=value)  # type: ignore[arg-type]


def test_policy_in_code_accepts_good_min_firmware() -> None:
    assert SnpPolicy(min_firmware=(1, 55)).min_firmware == (1, 55)
    assert SnpPolicy(min_firmware=(1, 55, 22)).min_firmware == (1, 55, 22)
