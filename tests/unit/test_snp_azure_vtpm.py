"""Azure SNP vTPM evidence: TPM quote -> HCLAkPub -> SNP REPORT_DATA -> VCEK -> ARK.

The real vector (trustee evidence-v2.json; PROVENANCE.md: "valid Azure CVM
evidence chain", nonce 982f5c6e...) and one-mutation negatives, each expecting
one named reason.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.snp_vectors import AT, all_roots, snp
from verifier.evidence.errors import ParseError
from verifier.evidence.report import EvidenceReport
from verifier.evidence.snp.azure_evidence import parse_azure_evidence, parse_runtime_claims
from verifier.evidence.snp.azure_vtpm import (
    check_quote_signature,
    verify_azure_snp_vtpm,
)
from verifier.evidence.snp.policy import load_policy
from verifier.verdict import Tier

EVIDENCE = "trustee_azure_snp_vtpm_evidence_v2.json"
NONCE = bytes.fromhex(
    "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9a"
    "a398f647caa2338748cd0fd9f5f819ef"
)
MEASUREMENT = (
    "5b0ce64ad1c1f6375dbda5f760b98526ca1bcf91b8195091afc28e7b024251d6"
    "8fe32e05af34048d6607678cd23283ff"
)
MILAN_TCB = {"bootloader": 4, "tee": 0, "snp": 24, "microcode": 219}
CLAIMS_AT = 0x20 + 0x4A0 + 20  # the runtime claims JSON inside the HCL report


def _evidence() -> bytes:
    return snp(EVIDENCE).read_bytes()


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_evidence())
    return doc


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _hcl(doc: dict[str, Any]) -> bytearray:
    return bytearray(base64.urlsafe_b64decode(doc["hcl_report"]))


def _with_hcl(doc: dict[str, Any], hcl: bytes) -> bytes:
    doc["hcl_report"] = base64.urlsafe_b64encode(hcl).decode()
    return _encode(doc)


def _verify(
    evidence: bytes, nonce: bytes | None = NONCE, policy: str | None = None
) -> EvidenceReport:
    return verify_azure_snp_vtpm(
        evidence,
        chain=snp("amd_milan_ask_ark.pem").read_bytes(),
        roots=all_roots(),
        policy=None if policy is None else load_policy(policy),
        expected_nonce=nonce,
        at=AT,
    )


def _codes(report: EvidenceReport) -> tuple[str, ...]:
    return report.verdict.reason_codes()


def _status(report: EvidenceReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def _policy(measurement: str = MEASUREMENT) -> str:
    # Azure's guest policy 0x3001F allows SMT.
    doc = {"version": 1, "allowed_measurements": [measurement], "min_tcb": {"Milan": MILAN_TCB}}
    return json.dumps({**doc, "allow_smt": True})


def test_vector_parses() -> None:
    evidence = parse_azure_evidence(_evidence())
    assert evidence.version == 2
    assert evidence.quote.extra_data == NONCE
    assert evidence.pcrs is not None and len(evidence.pcrs) == 24
    assert [(s.hash_algorithm, s.pcrs) for s in evidence.quote.pcr_selection] == [
        ("sha256", tuple(range(24)))
    ]
    claims = parse_runtime_claims(evidence.hcl.runtime_claims)
    assert claims.ak_bits == 2048
    assert claims.vm_configuration["secure-boot"] is True


def test_whole_chain_with_nonce_warns_only_for_missing_policy() -> None:
    report = _verify(_evidence())
    assert report.verdict.tier is Tier.WARNING
    assert _codes(report) == ("snp.policy.not_appraised",)
    status = _status(report)
    for name in (
        "snp.azure.evidence.parse",
        "snp.chain",
        "snp.report.signature",
        "snp.azure.runtime_claims",
        "snp.azure.ak",
        "snp.azure.quote.signature",
        "snp.azure.quote.nonce",
        "snp.azure.quote.pcr_digest",
    ):
        assert status[name] == "passed", name
    assert status["snp.policy"] == "not_run"
    assert report.checks[-1].name == "snp.policy"
    azure = report.claims["azure"]
    assert azure["tpm_nonce"] == NONCE.hex()
    assert report.claims["report_data"].startswith(report.claims["azure_runtime_claims_digest"])


def test_with_policy_and_nonce_affirms() -> None:
    report = _verify(_evidence(), policy=_policy())
    assert report.verdict.tier is Tier.AFFIRMING, _codes(report)
    assert "snp.azure.quote.signature" in report.verdict.checks_run


def test_without_nonce_never_affirms() -> None:
    report = _verify(_evidence(), nonce=None, policy=_policy())
    assert report.verdict.tier is Tier.WARNING
    assert _codes(report) == ("snp.azure.nonce_not_checked",)
    assert _status(report)["snp.azure.quote.nonce"] == "not_run"


def test_pinned_ark_from_chain_without_roots() -> None:
    report = verify_azure_snp_vtpm(
        _evidence(),
        chain=snp("amd_milan_ask_ark.pem").read_bytes(),
        roots=None,
        policy=None,
        expected_nonce=NONCE,
        at=AT,
    )
    assert _codes(report) == ("snp.policy.not_appraised",)


def test_policy_violation_still_checks_the_quote() -> None:
    report = _verify(_evidence(), policy=_policy("00" * 48))
    assert _codes(report) == ("snp.policy.measurement_not_allowed",)
    assert _status(report)["snp.azure.quote.signature"] == "passed"
    assert report.checks[-1].name == "snp.policy"


def test_flipped_runtime_claims_byte() -> None:
    doc = _doc()
    hcl = _hcl(doc)
    hcl[CLAIMS_AT + 10] ^= 0x01
    report = _verify(_with_hcl(doc, bytes(hcl)))
    assert _codes(report) == ("snp.azure.runtime_claims_mismatch", "snp.policy.not_appraised")
    status = _status(report)
    assert status["snp.report.signature"] == "passed"
    assert status["snp.azure.runtime_claims"] == "failed"
    assert status["snp.azure.ak"] == status["snp.azure.quote.signature"] == "not_run"


def _claims_with_other_key() -> bytes:
    doc = _doc()
    claims = json.loads(bytes(_hcl(doc)[CLAIMS_AT : CLAIMS_AT + 1110]))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    n = other.public_numbers().n.to_bytes(256, "big")
    claims["keys"][0]["n"] = base64.urlsafe_b64encode(n).decode().rstrip("=")
    return json.dumps(claims).encode()


def test_another_rsa_key_in_the_claims_fails_the_quote_signature() -> None:
    # The claims are signed by the SNP report, so another key cannot keep
    # REPORT_DATA valid end to end: check the quote stage with the swapped claims.
    evidence = parse_azure_evidence(_evidence())
    claims = parse_runtime_claims(_claims_with_other_key())
    reasons = check_quote_signature(evidence.attest, evidence.signature, claims.ak)
    assert [r.code for r in reasons] == ["snp.azure.quote_signature_invalid"]


def test_another_rsa_key_in_the_hcl_report_breaks_the_binding() -> None:
    doc = _doc()
    hcl = _hcl(doc)
    claims = _claims_with_other_key()
    hcl[CLAIMS_AT:] = claims
    hcl[0x20 + 0x4A0 + 16 : 0x20 + 0x4A0 + 20] = len(claims).to_bytes(4, "little")
    hcl[0x20 + 0x4A0 : 0x20 + 0x4A0 + 4] = (20 + len(claims)).to_bytes(4, "little")
    hcl[8:12] = (0x20 + 0x4A0 + 20 + len(claims)).to_bytes(4, "little")
    report = _verify(_with_hcl(doc, bytes(hcl)))
    assert _codes(report)[0] == "snp.azure.runtime_claims_mismatch"


def test_flipped_quote_byte() -> None:
    doc = _doc()
    message = bytearray.fromhex(doc["tpm_quote"]["message"])
    message[4 + 2 + 36 + 50] ^= 0x01  # clockInfo.clock: still a well-formed quote
    doc["tpm_quote"]["message"] = message.hex()
    report = _verify(_encode(doc))
    assert _codes(report) == ("snp.azure.quote_signature_invalid", "snp.policy.not_appraised")
    assert _status(report)["snp.azure.quote.nonce"] == "not_run"


def test_flipped_signature_byte() -> None:
    doc = _doc()
    signature = bytearray.fromhex(doc["tpm_quote"]["signature"])
    signature[100] ^= 0x80
    doc["tpm_quote"]["signature"] = signature.hex()
    report = _verify(_encode(doc))
    assert _codes(report)[0] == "snp.azure.quote_signature_invalid"


def test_wrong_nonce() -> None:
    report = _verify(_evidence(), nonce=bytes(48))
    assert _codes(report) == ("snp.azure.nonce_mismatch", "snp.policy.not_appraised")
    assert _status(report)["snp.azure.quote.pcr_digest"] == "passed"


def test_flipped_pcr_value() -> None:
    doc = _doc()
    doc["tpm_quote"]["pcrs"][7] = "00" * 32
    report = _verify(_encode(doc))
    assert _codes(report) == ("snp.azure.pcr_digest_mismatch", "snp.policy.not_appraised")


def test_missing_pcr_values() -> None:
    doc = _doc()
    doc["tpm_quote"]["pcrs"] = doc["tpm_quote"]["pcrs"][:23]
    assert _codes(_verify(_encode(doc)))[0] == "snp.azure.pcr_values_missing"
    del doc["tpm_quote"]["pcrs"]
    report = _verify(_encode(doc))
    assert _status(report)["snp.azure.quote.pcr_digest"] == "not_run"
    assert _codes(report) == ("snp.policy.not_appraised",)


def test_vcek_of_another_chip_fails_authentication() -> None:
    doc = _doc()
    doc["vcek"] = base64.urlsafe_b64encode(snp("trustee_milan_vcek.der").read_bytes()).decode()
    report = _verify(_encode(doc))
    assert report.verdict.tier is Tier.CONTRAINDICATED
    assert _status(report)["snp.azure.quote.signature"] == "not_run"


def test_no_nonce_given_empty_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="nonce"):
        _verify(_evidence(), nonce=b"")


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(version=1),
        lambda d: d.update(version=True),
        lambda d: d.update(extra=1),
        lambda d: d.pop("vcek"),
        lambda d: d["tpm_quote"].update(nonce="00"),
        lambda d: d["tpm_quote"].update(message=d["tpm_quote"]["message"][:-1]),
        lambda d: d["tpm_quote"].update(signature=" " + d["tpm_quote"]["signature"]),
        lambda d: d["tpm_quote"].update(pcrs=d["tpm_quote"]["pcrs"] * 2),
        lambda d: d["tpm_quote"].update(message="ff544347" + "8014" + "00" * 40),
        lambda d: d.update(hcl_report=d["hcl_report"].replace("-", "+")),
        lambda d: d.update(vcek=""),
        lambda d: d.update(hcl_report="SENMQQ"),
    ],
)
def test_unknown_or_malformed_shapes_are_rejected(edit: Any) -> None:
    doc = _doc()
    edit(doc)
    data = _encode(doc)
    with pytest.raises(ParseError):
        parse_azure_evidence(data)
    report = _verify(data)
    assert _codes(report) == ("snp.azure.malformed",)
    assert report.checks[0].status == "failed"


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b"{", b"\xff", b'{"version": 2, "version": 2}', b"[" * 10000, b" " * 70000],
)
def test_junk_raises_parse_error_only(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_azure_evidence(data)


def test_unpadded_base64url_accepted() -> None:
    doc = _doc()
    doc["hcl_report"] = doc["hcl_report"].rstrip("=")
    doc["vcek"] = doc["vcek"].rstrip("=")
    assert (
        parse_azure_evidence(_encode(doc)).hcl_report
        == parse_azure_evidence(_evidence()).hcl_report
    )


def _claims(keys: list[dict[str, Any]]) -> bytes:
    return json.dumps({"keys": keys}).encode()


def _jwk(bits: int = 2048, **extra: Any) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    n = key.public_numbers().n.to_bytes(bits // 8, "big")
    return {
        "kid": "HCLAkPub",
        "kty": "RSA",
        "e": "AQAB",
        "n": base64.urlsafe_b64encode(n).decode().rstrip("="),
        **extra,
    }


@pytest.mark.parametrize(
    ("keys", "code"),
    [
        ([], "ak_missing"),
        ([{**_jwk(), "kid": "HCLEkPub"}], "ak_missing"),
        ([_jwk(), _jwk()], "ak_missing"),
        ([_jwk(1024)], "ak_weak_key"),
        ([{**_jwk(), "kty": "EC"}], "ak_unsupported"),
        ([_jwk(key_ops=["encrypt"])], "ak_unsupported"),
        ([{**_jwk(), "e": "AQA"}], "ak_invalid"),
        ([{**_jwk(), "n": _jwk()["n"] + "=="}], "malformed"),
    ],
)
def test_runtime_claims_attestation_key(keys: list[dict[str, Any]], code: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_runtime_claims(_claims(keys))
    assert caught.value.code == code


def test_runtime_claims_accepts_a_valid_key() -> None:
    assert parse_runtime_claims(_claims([_jwk(3072, key_ops=["sign"])])).ak_bits == 3072


def test_structured_mutations_raise_parse_error_only() -> None:
    # Byte flips inside the decoded fields (which the JSON-level fuzzing seldom
    # reaches): the quote, the HCL report and its runtime claims.
    from tests.fuzz.fuzz_snp_report import AZURE, fuzz_one  # noqa: PLC0415

    doc = _doc()
    message = bytes.fromhex(doc["tpm_quote"]["message"])
    for offset in range(len(message)):
        for value in (message[offset] ^ 0x01, 0xFF):
            edited = dict(doc, tpm_quote=dict(doc["tpm_quote"]))
            edited["tpm_quote"]["message"] = (
                message[:offset] + bytes([value]) + message[offset + 1 :]
            ).hex()
            fuzz_one(bytes([AZURE]) + _encode(edited))
    hcl = bytes(_hcl(doc))
    for offset in [*range(0, 0x40), *range(0x4C0, 0x4C0 + 20 + 1110, 3)]:
        edited_hcl = hcl[:offset] + bytes([hcl[offset] ^ 0x41]) + hcl[offset + 1 :]
        fuzz_one(bytes([AZURE]) + _with_hcl(dict(doc), edited_hcl))
