"""The verified VCEK/VLEK chain cache (chain_cache.py): one mutation each, with the cache warm."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.snp_vectors import (
    AFTER_VLEK,
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
from verifier.evidence.snp.authenticate import AuthenticatedReport, authenticate_report
from verifier.evidence.snp.certs import load_certificates
from verifier.evidence.snp.chain import AmdRoots, load_amd_roots
from verifier.evidence.snp.chain_cache import cached_chain_count, clear_chain_cache
from verifier.evidence.snp.report import parse_report
from verifier.evidence.snp.tcb import ProductLine
from verifier.verdict import VerificationError

REPORT_DATA = 0x50


@pytest.fixture(autouse=True)
def _cold() -> Iterator[None]:
    clear_chain_cache()
    yield
    clear_chain_cache()


def _leaf(case: Case) -> x509.Certificate:
    return load_certificates(snp(case.key).read_bytes())[0]


def _auth(
    case: Case,
    *,
    report: bytes | None = None,
    leaf: x509.Certificate | None = None,
    chain: list[x509.Certificate] | None = None,
    roots: AmdRoots | None = None,
    at: datetime = AT,
) -> AuthenticatedReport:
    return authenticate_report(
        parse_report(raw_report(case) if report is None else report),
        key_certificate=leaf or _leaf(case),
        intermediates=intermediates(case.chain) if chain is None else chain,
        roots=roots or all_roots(),
        at=at,
    )


def _reason(case: Case, **kwargs: object) -> str:
    with pytest.raises(VerificationError) as caught:
        _auth(case, **kwargs)  # type: ignore[arg-type]
    return caught.value.reason.code


def _warm(case: Case = GOSEVGUEST) -> AuthenticatedReport:
    first = _auth(case)
    assert cached_chain_count() == 1
    return first


def _flipped_signature(certificate: x509.Certificate) -> x509.Certificate:
    der = bytearray(certificate.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the RSA-PSS signature
    return load_certificates(bytes(der))[0]


def test_warm_cache_is_reused_with_the_callers_objects() -> None:
    first = _warm()
    leaf, chain = _leaf(GOSEVGUEST), intermediates(GOSEVGUEST.chain)
    again = _auth(GOSEVGUEST, leaf=leaf, chain=chain)
    assert cached_chain_count() == 1
    assert again.key.certificate is leaf and again.intermediate is chain[0]
    assert again.key.hwid == first.key.hwid and again.key.spls == first.key.spls
    assert again.ark.fingerprint(hashes.SHA256()) == first.ark.fingerprint(hashes.SHA256())
    assert again.checks_run == first.checks_run


def test_another_byte_in_the_key_certificate_is_verified_afresh() -> None:
    _warm()
    leaf = _flipped_signature(_leaf(GOSEVGUEST))
    assert _reason(GOSEVGUEST, leaf=leaf) == "snp.chain.signature_invalid"
    assert cached_chain_count() == 1  # failures are never kept


def test_another_byte_in_the_intermediate_is_verified_afresh() -> None:
    _warm()
    ask = _flipped_signature(intermediates(GOSEVGUEST.chain)[0])
    assert _reason(GOSEVGUEST, chain=[ask]) == "snp.chain.untrusted"
    assert cached_chain_count() == 1


def test_other_intermediates_offered_are_their_own_entry() -> None:
    _warm()
    asvk = intermediates(VLEK.chain)
    ask = intermediates(GOSEVGUEST.chain)
    assert _auth(GOSEVGUEST, chain=[*asvk, *ask]).intermediate is ask[0]
    assert cached_chain_count() == 2
    assert _reason(GOSEVGUEST, chain=asvk) == "snp.chain.key_kind_mismatch"
    assert _reason(GOSEVGUEST, chain=[]) == "snp.chain.untrusted"


def test_roots_without_the_products_ark_are_untrusted() -> None:
    _warm()
    genoa_only = load_amd_roots(
        c
        for c in load_certificates(snp("amd_genoa_ask_ark.pem").read_bytes())
        if c.issuer == c.subject
    )
    assert _reason(GOSEVGUEST, roots=genoa_only) == "snp.chain.untrusted"


def test_another_ark_for_the_same_line_is_untrusted() -> None:
    _warm()
    milan_ark = all_roots().arks[ProductLine.MILAN]
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    look_alike = (
        x509.CertificateBuilder()
        .subject_name(milan_ark.subject)
        .issuer_name(milan_ark.subject)
        .public_key(key.public_key())
        .serial_number(9)
        .not_valid_before(milan_ark.not_valid_before_utc)
        .not_valid_after(milan_ark.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(
            key,
            hashes.SHA384(),
            rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48),
        )
    )
    pins = {ProductLine.MILAN: look_alike.fingerprint(hashes.SHA256())}
    roots = load_amd_roots([look_alike], pins=pins)
    assert _reason(GOSEVGUEST, roots=roots) == "snp.chain.untrusted"
    assert cached_chain_count() == 1


def test_times_outside_the_window_are_verified_afresh() -> None:
    first = _warm(VLEK)
    end = first.key.certificate.not_valid_after_utc  # the VLEK's one-year window ends first
    assert _auth(VLEK, at=end).verified_at == end  # the window is inclusive
    assert _reason(VLEK, at=end + timedelta(seconds=1)) == "snp.chain.expired"
    assert _reason(VLEK, at=AFTER_VLEK) == "snp.chain.expired"
    milan = _auth(GOSEVGUEST)
    start = max(
        c.not_valid_before_utc for c in (milan.key.certificate, milan.intermediate, milan.ark)
    )
    assert _reason(GOSEVGUEST, at=start - timedelta(seconds=1)) == "snp.chain.not_yet_valid"
    assert _reason(GOSEVGUEST, at=datetime(2022, 1, 1, tzinfo=UTC)) == "snp.chain.not_yet_valid"
    with pytest.raises(ValueError, match="timezone-aware"):
        _auth(GOSEVGUEST, at=datetime(2025, 6, 1))


def test_a_different_leaf_with_the_same_intermediates_gets_its_own_result() -> None:
    first = _warm(GOSEVGUEST)
    other = _auth(TRUSTEE_V2)
    assert cached_chain_count() == 2
    assert other.key.hwid != first.key.hwid and other.chip_id_checked
    # GOSEVGUEST's report under TRUSTEE_V2's VCEK (same ASK, same ARK): not its signature.
    assert _reason(GOSEVGUEST, leaf=_leaf(TRUSTEE_V2)) == "snp.report.signature_invalid"


def test_report_signature_is_checked_on_every_call() -> None:
    _warm()
    data = bytearray(raw_report(GOSEVGUEST))
    data[REPORT_DATA] ^= 0x01
    assert _reason(GOSEVGUEST, report=bytes(data)) == "snp.report.signature_invalid"


def test_report_checks_after_the_chain_run_on_every_call() -> None:
    _warm(VLEK)
    data = bytearray(raw_report(VLEK))
    data[0x48] ^= 0x04  # SIGNING_KEY: VLEK -> VCEK
    assert _reason(VLEK, report=bytes(data)) == "snp.chain.key_kind_mismatch"
