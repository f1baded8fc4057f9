"""SEV-SNP security-review fixes, one mutation each: the VLEK's cloud provider, all
64 bits of REPORTED_TCB, a masked CHIP_ID, the HCL hash type, a short report at the
agent, and policy invariants for policies built in code."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent.collectors import snp as snp_module
from agent.collectors.snp_tsm import TsmReport
from devsim.snp.certtable import ARK_GUID, ASK_GUID, VCEK_GUID, certificate_table
from tests.snp_vectors import (
    AT,
    AZURE,
    TRUSTEE_V2,
    VLEK,
    Case,
    all_roots,
    intermediates,
    raw_report,
    snp,
)
from verifier.evidence.errors import ParseError
from verifier.evidence.snp import authenticate as authenticate_module
from verifier.evidence.snp.appraise import appraise_report
from verifier.evidence.snp.authenticate import AuthenticatedReport, authenticate_report
from verifier.evidence.snp.certs import KeyKind, load_certificates, read_key_cert
from verifier.evidence.snp.hcl import (
    HEADER_SIZE,
    parse_hcl_report,
    runtime_claims_digest,
)
from verifier.evidence.snp.policy import PolicyError, SnpPolicy, load_policy
from verifier.evidence.snp.report import REPORT_SIZE, parse_report
from verifier.evidence.snp.tcb import TCB_LAYOUT, ProductLine, decode_tcb
from verifier.verdict import VerificationError

TRUSTEE_MEASUREMENT = (
    "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c"
    "23500644e0e692e6be917f9050d3d38c"
)
MILAN_TCB = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
VLEK_TCB = {"bootloader": 4, "tee": 0, "snp": 24, "microcode": 217}
AWS_CSP = "CN=cc-us-east-2.amazonaws.com"  # the Milan VLEK vector's cspId, as the extension has it
REPORTED_TCB_AT = 0x180
CHIP_ID_AT = 0x1A0
FLAGS_AT = 0x48
MASK_CHIP_ID = 0x02


def _authenticate(case: Case, report: bytes | None = None) -> AuthenticatedReport:
    return authenticate_report(
        parse_report(raw_report(case) if report is None else report),
        key_certificate=load_certificates(snp(case.key).read_bytes())[0],
        intermediates=intermediates(case.chain),
        roots=all_roots(),
        at=AT,
    )


def _reason(case: Case, report: bytes) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        _authenticate(case, report)
    return caught.value


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


def _vlek_policy(csp_ids: list[str]) -> SnpPolicy:
    return _policy(
        allowed_measurements=[parse_report(raw_report(VLEK)).measurement.hex()],
        min_tcb={"Milan": VLEK_TCB},
        allowed_signing_keys=["VLEK"],
        allowed_csp_ids=csp_ids,
        max_vmpl=1,
    )


@pytest.fixture
def unsigned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Signature check passed, so that one signed field can be changed on its own."""
    monkeypatch.setattr(authenticate_module, "_check_signature", lambda *a: None)


# 1. A VLEK is accepted only from a listed cloud provider.


def test_vlek_from_a_listed_provider_conforms() -> None:
    auth = _authenticate(VLEK)
    assert auth.key.csp_id == AWS_CSP
    assert appraise_report(_vlek_policy([AWS_CSP]), auth) == []


def test_vlek_from_another_provider_refused() -> None:
    reasons = appraise_report(_vlek_policy(["CN=other-cloud.example"]), _authenticate(VLEK))
    assert [r.code for r in reasons] == ["snp.policy.csp_not_allowed"]
    assert AWS_CSP in reasons[0].detail


def test_vlek_policy_without_providers_refused() -> None:
    with pytest.raises(PolicyError, match="allowed_csp_ids"):
        _policy(allowed_signing_keys=["VCEK", "VLEK"])
    with pytest.raises(PolicyError, match="allowed_csp_ids"):
        _policy(allowed_signing_keys=["VLEK"], allowed_csp_ids=[])
    with pytest.raises(PolicyError, match="allowed_csp_ids"):
        _policy(allowed_signing_keys=["VLEK"], allowed_csp_ids=[""])
    with pytest.raises(PolicyError, match="allowed_csp_ids"):
        SnpPolicy(allowed_signing_keys=frozenset({KeyKind.VLEK}))


# 2. REPORTED_TCB is compared with the certificate in all 64 bits.


@pytest.mark.parametrize("byte", range(8))
def test_every_reported_tcb_byte_is_compared(unsigned: None, byte: int) -> None:
    data = bytearray(raw_report(TRUSTEE_V2))
    data[REPORTED_TCB_AT + byte] ^= 0x01
    error = _reason(TRUSTEE_V2, bytes(data))
    assert error.reason.code == "snp.tcb.mismatch"
    name = TCB_LAYOUT[ProductLine.MILAN][byte]
    assert f"byte {byte} ({name})" in error.reason.detail


def test_reserved_tcb_byte_is_compared(unsigned: None) -> None:
    # The mutation the old check missed: byte 2 (spl4) belongs to no named component.
    data = bytearray(raw_report(TRUSTEE_V2))
    data[REPORTED_TCB_AT + 2] = 0x01
    error = _reason(TRUSTEE_V2, bytes(data))
    assert error.reason.code == "snp.tcb.mismatch" and "spl4" in error.reason.detail


def test_turin_tcb_layout_against_the_turin_vcek() -> None:
    key = read_key_cert(load_certificates(snp("virtee_turin_vcek.der").read_bytes())[0])
    assert dict(key.reserved_spls) == {"spl5": 0, "spl6": 0, "spl7": 0}  # no spl4 on Turin
    check = authenticate_module._check_tcb
    check(decode_tcb(9 << 56, ProductLine.TURIN), key, [])  # ucodeSPL 9, the rest 0
    with pytest.raises(VerificationError) as caught:
        check(decode_tcb((9 << 56) | (1 << 32), ProductLine.TURIN), key, [])
    assert "byte 4 (spl5)" in caught.value.reason.detail


# 4. MASK_CHIP_ID: CHIP_ID all zero, and refused unless the policy allows it.


def _masked(chip_id_zero: bool) -> bytes:
    data = bytearray(raw_report(TRUSTEE_V2))
    data[FLAGS_AT] |= MASK_CHIP_ID
    if chip_id_zero:
        data[CHIP_ID_AT : CHIP_ID_AT + 64] = bytes(64)
    return bytes(data)


def test_masked_chip_id_must_be_zero(unsigned: None) -> None:
    error = _reason(TRUSTEE_V2, _masked(chip_id_zero=False))
    assert error.reason.code == "snp.chip_id.masked_not_zero"
    assert not _authenticate(TRUSTEE_V2, _masked(chip_id_zero=True)).chip_id_checked


def test_masked_chip_id_refused_by_default(unsigned: None) -> None:
    auth = _authenticate(TRUSTEE_V2, _masked(chip_id_zero=True))
    assert [r.code for r in appraise_report(_policy(), auth)] == ["snp.policy.chip_id_masked"]
    assert appraise_report(_policy(allow_masked_chip_id=True), auth) == []
    assert appraise_report(_policy(), _authenticate(TRUSTEE_V2)) == []  # unmasked: no reason


# 5. The HCL runtime-claims hash is SHA-256, whatever the unsigned IGVM header says.

HASH_TYPE_AT = HEADER_SIZE + REPORT_SIZE + 12


def test_azure_vector_declares_sha256() -> None:
    hcl = parse_hcl_report(snp(AZURE.report).read_bytes())
    assert hcl.hash_type == 1 and len(runtime_claims_digest(hcl)) == 32


@pytest.mark.parametrize("hash_type", [0, 2, 3, 4])
def test_other_hcl_hash_types_refused(hash_type: int) -> None:
    data = bytearray(snp(AZURE.report).read_bytes())
    struct.pack_into("<I", data, HASH_TYPE_AT, hash_type)
    with pytest.raises(ParseError) as caught:
        parse_hcl_report(bytes(data))
    assert caught.value.code == "unsupported_hash"


# 6. A short report from a source is "unavailable", not an IndexError.


@pytest.mark.parametrize("size", [0, 1, FLAGS_AT])
def test_short_report_with_certificates_is_unavailable(size: int) -> None:
    certs = load_certificates(snp("amd_milan_ask_ark.pem").read_bytes())
    ask, ark = (c.public_bytes(Encoding.DER) for c in certs)
    vcek = snp(TRUSTEE_V2.key).read_bytes()
    table = certificate_table([(VCEK_GUID, vcek), (ASK_GUID, ask), (ARK_GUID, ark)])
    message = snp_module._message(TsmReport(report=b"\x01" * size, auxblob=table))
    assert message.unavailable and "too short" in message.unavailable
    full = snp_module._message(TsmReport(report=raw_report(TRUSTEE_V2), auxblob=table))
    assert not full.unavailable and full.vcek == vcek


# 7. Policies built in code are held to the loader's invariants.

TURIN_WITHOUT_FMC = {"bootloader": 0, "tee": 0, "snp": 0, "microcode": 9}


@pytest.mark.parametrize(
    "fields",
    [
        {"min_tcb": {ProductLine.TURIN: TURIN_WITHOUT_FMC}},
        {"min_tcb": {ProductLine.MILAN: {**MILAN_TCB, "microcode": 256}}},
        {"min_tcb": {"Milan": MILAN_TCB}},
        {"allowed_signing_keys": frozenset()},
        {"allowed_measurements": frozenset({b"\x00" * 32})},
        {"max_vmpl": 4},
        {"host_data": b"\x00" * 31},
        {"allowed_id_key_digests": frozenset()},
        {"allow_debug": 1},
    ],
    ids=lambda f: next(iter(f)),
)
def test_code_built_policy_invariants(fields: dict[str, Any]) -> None:
    with pytest.raises(PolicyError):
        SnpPolicy(**fields)


def test_code_built_policy_valid() -> None:
    policy = SnpPolicy(
        allowed_measurements=frozenset({bytes.fromhex(TRUSTEE_MEASUREMENT)}),
        min_tcb={ProductLine.TURIN: {**TURIN_WITHOUT_FMC, "fmc": 0}},
        allowed_signing_keys=frozenset({KeyKind.VLEK}),
        allowed_csp_ids=frozenset({AWS_CSP}),
    )
    assert policy.allowed_csp_ids == {AWS_CSP}
    assert SnpPolicy().allowed_measurements == frozenset()  # the deny-all default still builds
