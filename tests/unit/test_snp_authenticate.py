"""SEV-SNP authentication on every vector (PROVENANCE.md conclusions) and one-mutation cases."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.snp_vectors import (
    AFTER_VLEK,
    AT,
    AZURE,
    GENOA,
    GOSEVGUEST,
    TRUSTEE_V2,
    VALID,
    VLEK,
    Case,
    all_roots,
    intermediates,
    raw_report,
    snp,
)
from verifier.evidence.errors import ParseError
from verifier.evidence.snp.authenticate import AuthenticatedReport, authenticate_report
from verifier.evidence.snp.certs import KeyKind, load_certificates, read_key_cert
from verifier.evidence.snp.chain import ARK_SHA256, RootError, load_amd_roots
from verifier.evidence.snp.report import parse_report
from verifier.evidence.snp.tcb import ProductLine
from verifier.verdict import VerificationError


def _authenticate(
    case: Case,
    *,
    report: bytes | None = None,
    chain: str | None = None,
    key: str | None = None,
    at: datetime = AT,
) -> AuthenticatedReport:
    leaf = load_certificates(snp(key or case.key).read_bytes())[0]
    return authenticate_report(
        parse_report(raw_report(case) if report is None else report),
        key_certificate=leaf,
        intermediates=intermediates(chain or case.chain),
        roots=all_roots(),
        at=at,
    )


def _reason(fn: Callable[[], object]) -> str:
    with pytest.raises(VerificationError) as caught:
        fn()
    return caught.value.reason.code


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_valid_vectors_authenticate(case: Case) -> None:
    auth = _authenticate(case)
    assert "snp.report.signature" in auth.checks_run and "snp.tcb" in auth.checks_run
    assert auth.reported_tcb.raw == auth.report.reported_tcb


def test_expected_products_and_keys() -> None:
    assert _authenticate(GOSEVGUEST).product is ProductLine.MILAN
    assert _authenticate(GENOA).product is ProductLine.GENOA
    vlek = _authenticate(VLEK)
    assert vlek.key.kind is KeyKind.VLEK and vlek.key.csp_id == "CN=cc-us-east-2.amazonaws.com"
    assert not vlek.chip_id_checked  # VLEK: no hwID, CHIP_ID zero
    assert _authenticate(TRUSTEE_V2).chip_id_checked
    genoa = _authenticate(GENOA).reported_tcb
    assert (genoa.bootloader, genoa.tee, genoa.snp, genoa.microcode) == (10, 0, 23, 25)


def test_vlek_expired_now() -> None:
    assert _reason(lambda: _authenticate(VLEK, at=AFTER_VLEK)) == "snp.chain.expired"


def test_vlek_against_the_ask_chain_fails() -> None:
    code = _reason(lambda: _authenticate(VLEK, chain="amd_milan_ask_ark.pem"))
    assert code == "snp.chain.key_kind_mismatch"


def test_genoa_under_milan_chain_fails() -> None:
    code = _reason(lambda: _authenticate(GENOA, chain="amd_milan_ask_ark.pem"))
    assert code == "snp.chain.product_mismatch"


def test_vcek_not_yet_valid() -> None:
    at = datetime(2022, 1, 1, tzinfo=UTC)
    assert _reason(lambda: _authenticate(GOSEVGUEST, at=at)) == "snp.chain.not_yet_valid"


@pytest.mark.parametrize(
    "name", ["trustee_synthetic_vcek_hwid_raw.der", "trustee_synthetic_vcek_hwid_octetstring.der"]
)
def test_synthetic_vceks(name: str) -> None:
    cert = read_key_cert(load_certificates(snp(name).read_bytes())[0])
    assert cert.hwid == bytes(range(64)) and cert.product_name == "Milan-B0"
    code = _reason(lambda: _authenticate(TRUSTEE_V2, key=name))
    assert code == "snp.chain.signature_invalid"


def test_turin_vcek_extensions_and_chain() -> None:
    cert = read_key_cert(load_certificates(snp("virtee_turin_vcek.der").read_bytes())[0])
    assert cert.product is ProductLine.TURIN and cert.struct_version == 1
    assert cert.hwid == bytes.fromhex("1e550a8ee5cf9f4d")
    assert dict(cert.spls) == {"fmc": 0, "bootloader": 0, "tee": 0, "snp": 0, "microcode": 9}
    from verifier.evidence.snp.chain import verify_key_chain  # noqa: PLC0415

    chain = verify_key_chain(cert, intermediates("amd_turin_ask_ark.pem"), all_roots(), at=AT)
    assert chain.ark.fingerprint(hashes.SHA256()) == ARK_SHA256[ProductLine.TURIN]


def test_azure_bundle_ark_is_the_pinned_one() -> None:
    bundle = load_certificates(snp(AZURE.key).read_bytes())
    ark = [c for c in bundle if c.issuer == c.subject]
    roots = load_amd_roots(ark)
    assert list(roots.arks) == [ProductLine.MILAN]


def test_unpinned_or_intermediate_as_root_refused() -> None:
    ask = intermediates("amd_milan_ask_ark.pem")[0]
    with pytest.raises(RootError):
        load_amd_roots([ask])
    with pytest.raises(TypeError):
        type(all_roots())({})  # AmdRoots only from load_amd_roots
    with pytest.raises(TypeError):
        all_roots().arks[ProductLine.GENOA] = ask  # type: ignore[index]


def test_pins_match_provenance() -> None:
    assert ARK_SHA256[ProductLine.MILAN].hex().startswith("69d063b4")
    assert ARK_SHA256[ProductLine.GENOA].hex().startswith("4c6598d1")
    assert ARK_SHA256[ProductLine.TURIN].hex().startswith("1f084161")


def test_missing_root_for_product_is_untrusted() -> None:
    milan_only = load_amd_roots(
        c
        for c in load_certificates(snp("amd_milan_ask_ark.pem").read_bytes())
        if c.issuer == c.subject
    )
    leaf = load_certificates(snp(GENOA.key).read_bytes())[0]
    with pytest.raises(VerificationError) as caught:
        authenticate_report(
            parse_report(raw_report(GENOA)),
            key_certificate=leaf,
            intermediates=intermediates(GENOA.chain),
            roots=milan_only,
            at=AT,
        )
    assert caught.value.reason.code == "snp.chain.untrusted"


def _flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    return data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1 :]


# One change to a valid report, one named reason (STYLE.md, one-mutation tests).
MUTATIONS: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("report_data", lambda d: _flip(d, 0x50), "snp.report.signature_invalid"),
    ("measurement", lambda d: _flip(d, 0x90), "snp.report.signature_invalid"),
    ("policy_debug_bit", lambda d: _flip(d, 0x0A, 0x08), "snp.report.signature_invalid"),
    ("signature_r", lambda d: _flip(d, 0x2A0), "snp.report.signature_invalid"),
    ("signature_s", lambda d: _flip(d, 0x2E8), "snp.report.signature_invalid"),
    ("signature_algo", lambda d: _flip(d, 0x34, 0x02), "snp.report.signature_algo_unsupported"),
    ("signing_key_vlek", lambda d: _flip(d, 0x48, 0x04), "snp.chain.key_kind_mismatch"),
    ("signing_key_none", lambda d: _flip(d, 0x48, 0x1C), "snp.report.unsigned"),
]


@pytest.mark.parametrize(("field", "edit", "code"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_one_mutation(field: str, edit: Callable[[bytes], bytes], code: str) -> None:
    data = raw_report(TRUSTEE_V2)
    assert _reason(lambda: _authenticate(TRUSTEE_V2, report=edit(data))) == code


def test_signed_fields_checked_after_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    # With the signature check passed, a REPORTED_TCB or CHIP_ID other than the
    # certificate's is caught by its own check (a key for another TCB or chip).
    import verifier.evidence.snp.authenticate as module  # noqa: PLC0415

    monkeypatch.setattr(module, "_check_signature", lambda *a: None)
    data = raw_report(TRUSTEE_V2)
    assert _reason(lambda: _authenticate(TRUSTEE_V2, report=_flip(data, 0x187))) == (
        "snp.tcb.mismatch"
    )
    assert _reason(lambda: _authenticate(TRUSTEE_V2, report=_flip(data, 0x1A0))) == (
        "snp.chip_id.mismatch"
    )
    genoa = bytearray(raw_report(GENOA))
    genoa[0x189] = 0x01  # CPUID model says Milan; the VCEK says Genoa
    assert _reason(lambda: _authenticate(GENOA, report=bytes(genoa))) == (
        "snp.chain.product_mismatch"
    )
    # MASK_CHIP_ID: CHIP_ID not compared, but it must be the zeros the firmware writes.
    masked = _flip(data, 0x48, 0x02)
    assert _reason(lambda: _authenticate(TRUSTEE_V2, report=masked)) == (
        "snp.chip_id.masked_not_zero"
    )
    zeroed = masked[:0x1A0] + bytes(64) + masked[0x1E0:]
    assert not _authenticate(TRUSTEE_V2, report=zeroed).chip_id_checked


def test_authenticated_report_cannot_be_forged() -> None:
    auth = _authenticate(TRUSTEE_V2)
    import dataclasses  # noqa: PLC0415

    other = parse_report(raw_report(GOSEVGUEST))
    with pytest.raises(TypeError):
        dataclasses.replace(auth, report=other)
    with pytest.raises(TypeError):
        AuthenticatedReport(**{f.name: getattr(auth, f.name) for f in dataclasses.fields(auth)})
    with pytest.raises(TypeError):
        dataclasses.replace(all_roots(), arks={})


def test_not_an_amd_key() -> None:
    ask = intermediates("amd_milan_ask_ark.pem")[0]
    with pytest.raises(ParseError) as caught:
        read_key_cert(ask)
    assert caught.value.code == "not_amd_key"
    assert isinstance(ask, x509.Certificate)
