"""The verified PCK chain cache (pck_cache.py): one mutation each, with the cache warm."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.tdx_vectors import AT_2026, intel_root, tdx_file
from verifier.evidence.tdx.authenticate import AuthenticatedQuote, authenticate_quote
from verifier.evidence.tdx.pck_cache import cached_pck_count, clear_pck_cache
from verifier.evidence.tdx.quote import HEADER_SIZE, Quote, parse_quote, strip_zero_padding
from verifier.verdict import VerificationError

COS113 = "gotdx_v4_quote_cos113.dat"  # PCK valid 2024-07-02..2031-07-02, FMSPC 00806f050000
TD15 = "trustee_v5_quote_td15.dat"  # another platform's PCK under the same CA, FMSPC 90c06f000000
TD_REPORT_DATA = 520  # REPORTDATA's offset in the TD report body


@pytest.fixture(autouse=True)
def _cold() -> Iterator[None]:
    clear_pck_cache()
    yield
    clear_pck_cache()


def _raw(name: str) -> bytes:
    return strip_zero_padding(tdx_file(name))[0]


def _quote(name: str = COS113) -> Quote:
    return parse_quote(_raw(name))


def _auth(
    quote: Quote, *, root: x509.Certificate | None = None, at: datetime = AT_2026
) -> AuthenticatedQuote:
    return authenticate_quote(quote, root=root or intel_root(), at=at)


def _reason(quote: Quote, **kwargs: object) -> str:
    with pytest.raises(VerificationError) as caught:
        _auth(quote, **kwargs)  # type: ignore[arg-type]
    return caught.value.reason.code


def _warm() -> AuthenticatedQuote:
    first = _auth(_quote())
    assert cached_pck_count() == 1
    return first


def _with_pem(quote: Quote, pem: bytes) -> Quote:
    return replace(quote, certification=replace(quote.certification, pck_chain_pem=pem))


def _pem_blocks(pem: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----"
    return [block + end + b"\n" for block in pem.split(end) if b"BEGIN" in block]


def _to_pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def _flip_signature(block: bytes) -> bytes:
    """The certificate with the last byte of its signature (of s) changed."""
    der = bytearray(x509.load_pem_x509_certificate(block).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    return _to_pem(bytes(der))


def _root_with_intel_key(
    *, subject: x509.Name | None = None, not_after: datetime | None = None
) -> x509.Certificate:
    """A certificate carrying the pinned root's key (so it passes the SPKI pin), made here."""
    intel = intel_root()
    name = subject or intel.subject
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(intel.public_key())
        .serial_number(7)
        .not_valid_before(intel.not_valid_before_utc)
        .not_valid_after(not_after or intel.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )


def test_warm_cache_is_reused_for_the_identical_chain() -> None:
    first = _warm()
    again = _auth(_quote())
    assert again.pck_path is first.pck_path and again.pck_tcb is first.pck_tcb
    assert again.pck_tcb.fmspc.hex() == "00806f050000"
    assert cached_pck_count() == 1


def test_another_byte_in_the_leaf_is_verified_afresh() -> None:
    _warm()
    quote = _quote()
    leaf, ca, root = _pem_blocks(quote.certification.pck_chain_pem)
    assert _reason(_with_pem(quote, _flip_signature(leaf) + ca + root)) == "tdx.pck.chain_invalid"
    assert cached_pck_count() == 1  # failures are never kept


def test_another_byte_in_the_ca_is_verified_afresh() -> None:
    _warm()
    quote = _quote()
    leaf, ca, root = _pem_blocks(quote.certification.pck_chain_pem)
    assert _reason(_with_pem(quote, leaf + _flip_signature(ca) + root)) == "tdx.pck.chain_untrusted"
    assert cached_pck_count() == 1


def test_another_pem_byte_with_the_same_certificates_is_its_own_entry() -> None:
    first = _warm()
    quote = _quote()
    again = _auth(_with_pem(quote, quote.certification.pck_chain_pem + b"\n"))
    assert again.pck_path is not first.pck_path
    assert cached_pck_count() == 2


def test_another_root_with_another_name_is_untrusted() -> None:
    _warm()
    other = _root_with_intel_key(
        subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Other Root CA")])
    )
    assert _reason(_quote(), root=other) == "tdx.pck.chain_untrusted"


def test_another_root_is_judged_on_its_own_validity() -> None:
    _warm()
    lapsed = _root_with_intel_key(not_after=datetime(2020, 1, 1, tzinfo=UTC))
    assert _reason(_quote(), root=lapsed) == "tdx.pck.expired"
    assert cached_pck_count() == 1


def test_an_unpinned_root_is_still_a_setup_error() -> None:
    _warm()
    intel = intel_root()
    unpinned = (
        x509.CertificateBuilder()
        .subject_name(intel.subject)
        .issuer_name(intel.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(8)
        .not_valid_before(intel.not_valid_before_utc)
        .not_valid_after(intel.not_valid_after_utc)
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    with pytest.raises(ValueError, match="not a pinned"):
        _auth(_quote(), root=unpinned)


def test_times_outside_the_window_are_verified_afresh() -> None:
    first = _warm()
    leaf = first.pck_path[0]
    end, start = leaf.not_valid_after_utc, leaf.not_valid_before_utc
    assert _auth(_quote(), at=end).pck_path is first.pck_path  # the window is inclusive
    assert _auth(_quote(), at=start).pck_path is first.pck_path
    assert _reason(_quote(), at=end + timedelta(seconds=1)) == "tdx.pck.expired"
    assert _reason(_quote(), at=start - timedelta(seconds=1)) == "tdx.pck.not_yet_valid"
    assert _reason(_quote(), at=datetime(2050, 1, 1, tzinfo=UTC)) == "tdx.pck.expired"
    with pytest.raises(ValueError, match="timezone-aware"):
        _auth(_quote(), at=datetime(2026, 2, 15))


def test_a_different_leaf_with_the_same_intermediates_gets_its_own_result() -> None:
    _warm()
    other = _auth(_quote(TD15))
    assert other.pck_tcb.fmspc.hex() == "90c06f000000"
    assert cached_pck_count() == 2
    # cos113's QE report with TD15's PCK leaf (same CA, same root): that key did not sign it.
    quote = _quote()
    _, ca, root = _pem_blocks(quote.certification.pck_chain_pem)
    td15_leaf = _pem_blocks(_quote(TD15).certification.pck_chain_pem)[0]
    assert _reason(_with_pem(quote, td15_leaf + ca + root)) == "tdx.qe.signature_invalid"


def test_quote_signature_is_checked_on_every_call() -> None:
    _warm()
    raw = bytearray(_raw(COS113))
    raw[HEADER_SIZE + TD_REPORT_DATA] ^= 0x01
    assert _reason(parse_quote(bytes(raw))) == "tdx.quote.signature_invalid"


def test_qe_signature_and_binding_are_checked_on_every_call() -> None:
    _warm()
    quote = _quote()
    certification = quote.certification
    signature = bytearray(certification.qe_report_signature)
    signature[-1] ^= 0x01
    bad_signature = replace(
        quote, certification=replace(certification, qe_report_signature=bytes(signature))
    )
    assert _reason(bad_signature) == "tdx.qe.signature_invalid"
    other_auth = replace(quote, certification=replace(certification, qe_auth_data=b"\x01"))
    assert _reason(other_auth) == "tdx.qe.report_data_mismatch"


def test_a_path_verified_under_other_pins_never_stands_for_intel_only_trust() -> None:
    """A test setting may pin an extra root; what it verified is kept apart."""
    from verifier.evidence.tdx.pki import INTEL_ROOT_PINS  # noqa: PLC0415

    widened = INTEL_ROOT_PINS | {bytes(32)}
    quote = _quote()
    first = authenticate_quote(quote, root=intel_root(), at=AT_2026, spki_pins=widened)
    assert cached_pck_count() == 1
    again = _auth(_quote())  # Intel's pins only: verified afresh, its own entry
    assert again.pck_path is not first.pck_path
    assert cached_pck_count() == 2
