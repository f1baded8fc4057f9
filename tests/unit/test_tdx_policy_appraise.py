"""TDX policy appraisal of TD fields, one mutation at a time, on really signed quotes.

Each quote is signed by a simulated guest (devsim.tdx) with exactly one TD report
field changed from the guest's, so each test shows that the one field alone
decides the verdict. TD 1.5 bodies (MRSERVICETD) come from the real vectors.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from devsim.tdx import TdxGuest, create_tdx_guest
from devsim.tdx.quote import TdIdentity, signed_quote
from tests.tdx_vectors import AT_2026, intel_root, tdx_file
from verifier.evidence.tdx.authenticate import AuthenticatedQuote, authenticate_quote
from verifier.evidence.tdx.policy import appraise_quote, load_policy
from verifier.evidence.tdx.quote import parse_quote, strip_zero_padding

NOW = datetime.now(UTC)
REPORT_DATA = bytes(range(64))
SEPT_VE_DISABLE = 1 << 28
DEBUG = 1 << 0
MIGRATABLE = 1 << 29


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> TdxGuest:
    return create_tdx_guest(tmp_path_factory.mktemp("tdx") / "guest")


def _key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def quote_with(guest: TdxGuest, **platform: object) -> AuthenticatedQuote:
    """A quote of ``guest`` whose platform fields ``platform`` differ, authenticated."""
    meta = json.loads((guest.directory / "guest.json").read_text())
    identity = TdIdentity(
        platform=replace(guest.platform, **platform),  # type: ignore[arg-type]
        mr_td=guest.mr_td,
        rtmrs=guest.rtmrs,
        user_data=bytes.fromhex(meta["qe_id"]),
    )
    raw = signed_quote(
        identity,
        REPORT_DATA,
        attestation_key=_key(guest.directory / "attestation_key.pem"),
        pck_key=_key(guest.directory / "pck_key.pem"),
        pck_chain_pem=guest.pck_chain_pem,
    )
    root = x509.load_pem_x509_certificate(guest.root_pem)
    pins = frozenset({guest.root_spki_sha256})
    return authenticate_quote(parse_quote(raw), root=root, at=NOW, spki_pins=pins)


def attributes(bits: int) -> bytes:
    return bits.to_bytes(8, "little")


def codes(guest: TdxGuest, quote: AuthenticatedQuote, **policy: object) -> list[str]:
    """Reason codes under the guest's own policy with ``policy`` keys added."""
    doc = json.loads(guest.policy_path.read_text())
    loaded = load_policy(json.dumps({**doc, **policy}))
    return [r.code for r in appraise_quote(quote, loaded, expected_report_data=REPORT_DATA)]


def test_the_guests_own_quote_passes_its_policy(guest: TdxGuest) -> None:
    quote = quote_with(guest)
    assert quote.quote.body.td_attributes == attributes(SEPT_VE_DISABLE)
    assert codes(guest, quote) == []


@pytest.mark.parametrize("bit", range(1, 8))
def test_a_tud_bit_is_refused_whatever_the_policy(guest: TdxGuest, bit: int) -> None:
    quote = quote_with(guest, td_attributes=attributes(SEPT_VE_DISABLE | 1 << bit))
    assert codes(guest, quote) == ["tdx.policy.tud_bits_set"]
    permissive = {"allow_debug": True, "allow_migratable": True, "allow_sept_ve": True}
    assert codes(guest, quote, **permissive) == ["tdx.policy.tud_bits_set"]


def test_debug_is_refused_unless_allowed(guest: TdxGuest) -> None:
    quote = quote_with(guest, td_attributes=attributes(SEPT_VE_DISABLE | DEBUG))
    assert codes(guest, quote) == ["tdx.policy.debug_td"]
    assert codes(guest, quote, allow_debug=True) == []


def test_migratable_is_refused_unless_allowed(guest: TdxGuest) -> None:
    quote = quote_with(guest, td_attributes=attributes(SEPT_VE_DISABLE | MIGRATABLE))
    assert codes(guest, quote) == ["tdx.policy.migratable"]
    assert codes(guest, quote, allow_migratable=True) == []


def test_sept_ve_enabled_is_refused_unless_allowed(guest: TdxGuest) -> None:
    quote = quote_with(guest, td_attributes=attributes(0))
    assert codes(guest, quote) == ["tdx.policy.sept_ve_enabled"]
    assert codes(guest, quote, allow_sept_ve=True) == []


def test_every_attribute_violation_is_named(guest: TdxGuest) -> None:
    quote = quote_with(guest, td_attributes=attributes(DEBUG | 1 << 3 | MIGRATABLE))
    assert codes(guest, quote) == [
        "tdx.policy.debug_td",
        "tdx.policy.tud_bits_set",
        "tdx.policy.sept_ve_enabled",
        "tdx.policy.migratable",
    ]


def test_exact_tdattributes(guest: TdxGuest) -> None:
    pks = 1 << 30
    quote = quote_with(guest, td_attributes=attributes(SEPT_VE_DISABLE | pks))
    assert codes(guest, quote) == []
    assert codes(guest, quote, tdattributes=attributes(SEPT_VE_DISABLE).hex()) == [
        "tdx.policy.tdattributes_mismatch"
    ]
    exact = attributes(SEPT_VE_DISABLE | pks).hex()
    assert codes(guest, quote, tdattributes=exact) == []
    # Under a mask only the masked bits count: PKS is not among them.
    masked = {"tdattributes": attributes(SEPT_VE_DISABLE).hex()}
    masked["tdattributes_mask"] = attributes(0xFFFFFFFF & ~pks).hex()
    assert codes(guest, quote, **masked) == []
    masked["tdattributes_mask"] = attributes(0xFFFFFFFF).hex()
    assert codes(guest, quote, **masked) == ["tdx.policy.tdattributes_mismatch"]


@pytest.mark.parametrize(
    ("key", "field", "size"),
    [("xfam", "xfam", 8), ("mrseam", "mr_seam", 48)],
)
def test_platform_allow_lists(guest: TdxGuest, key: str, field: str, size: int) -> None:
    own: bytes = getattr(guest.platform, field)
    other = bytes(b ^ 0x01 for b in own)
    assert len(own) == size
    assert codes(guest, quote_with(guest), **{key: [own.hex()]}) == []
    changed = quote_with(guest, **{field: other})
    assert codes(guest, changed) == []  # not appraised without the key
    assert codes(guest, changed, **{key: [own.hex()]}) == [f"tdx.policy.{key}_mismatch"]
    assert codes(guest, changed, **{key: [own.hex(), other.hex()]}) == []


def test_mrownerconfig_allow_list(guest: TdxGuest) -> None:
    quote = quote_with(guest)  # devsim's MROWNERCONFIG is all zero
    assert codes(guest, quote, mrownerconfig=["00" * 48]) == []
    assert codes(guest, quote, mrownerconfig=["11" * 48]) == ["tdx.policy.mrownerconfig_mismatch"]


def test_td10_body_counts_as_no_service_td(guest: TdxGuest) -> None:
    quote = quote_with(guest)
    assert quote.quote.body.mr_servicetd is None
    assert codes(guest, quote, mrservicetd=["00" * 48]) == []
    assert codes(guest, quote, mrservicetd=["11" * 48]) == ["tdx.policy.mrservicetd_not_allowed"]


def _real(name: str) -> AuthenticatedQuote:
    raw, _ = strip_zero_padding(tdx_file(name))
    return authenticate_quote(parse_quote(raw), root=intel_root(), at=AT_2026)


def _real_codes(quote: AuthenticatedQuote, **policy: object) -> list[str]:
    doc = {"version": 1, "mrtd": [quote.quote.body.mr_td.hex()], **policy}
    loaded = load_policy(json.dumps(doc))
    return [r.code for r in appraise_quote(quote, loaded, expected_report_data=None)]


def test_td15_mrservicetd_must_be_zero_unless_listed() -> None:
    bound = _real("trustee_v5_quote_td15.dat")
    service = bound.quote.body.mr_servicetd
    assert service is not None and any(service)
    assert _real_codes(bound) == ["tdx.policy.mrservicetd_not_allowed"]
    assert _real_codes(bound, mrservicetd=[service.hex()]) == []
    unbound = _real("gotdx_v5_quote_td15.dat")
    assert unbound.quote.body.mr_servicetd == bytes(48)
    assert _real_codes(unbound) == []
    assert _real_codes(unbound, mrservicetd=[service.hex()]) == [
        "tdx.policy.mrservicetd_not_allowed"
    ]
    assert _real_codes(unbound, mrservicetd=[service.hex(), "00" * 48]) == []
