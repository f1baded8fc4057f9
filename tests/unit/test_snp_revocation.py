"""AMD CRLs against SNP chains (verifier/evidence/snp/crl.py), real crypto throughout.

The chains are devsim.snp's TEST hierarchies (Milan and Genoa), whose ARKs are
trusted by explicit pins and kept with their keys to issue CRLs; the real AMD
vectors show that without CRLs nothing changed and that nothing but AMD's ARK can
speak for AMD's chains. One mutation per test: each names the one reason expected.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.snp_crl_lines import NOW, Line, forged_amd_crl, make_line
from tests.snp_vectors import AFTER_VLEK, AT, REPORTS, VALID, VLEK, Case, snp
from verifier.evidence.snp.authenticate import AuthenticatedReport, authenticate_report
from verifier.evidence.snp.chain import AmdRoots, load_amd_roots
from verifier.evidence.snp.chain_cache import cached_chain_count, clear_chain_cache
from verifier.evidence.snp.crl import CHECK_REVOCATION, AmdCrl, load_crl
from verifier.evidence.snp.offline import SnpEvidence, verify_snp_offline
from verifier.evidence.snp.report import parse_report
from verifier.evidence.snp.tcb import ProductLine
from verifier.verdict import VerificationError


@pytest.fixture(scope="module")
def milan() -> Line:
    return make_line("Milan")


@pytest.fixture(scope="module")
def genoa() -> Line:
    return make_line("Genoa")


@pytest.fixture(scope="module")
def roots(milan: Line, genoa: Line) -> AmdRoots:
    return load_amd_roots(
        [milan.ark.certificate, genoa.ark.certificate],
        pins={ProductLine.MILAN: milan.sha256, ProductLine.GENOA: genoa.sha256},
    )


@pytest.fixture(autouse=True)
def _cold() -> Iterator[None]:
    clear_chain_cache()
    yield
    clear_chain_cache()


def _auth(
    line: Line, roots: AmdRoots, crls: list[AmdCrl] | None, at: datetime = NOW
) -> AuthenticatedReport:
    return authenticate_report(
        parse_report(line.report),
        key_certificate=line.hierarchy.vcek,
        intermediates=[line.hierarchy.ask],
        roots=roots,
        at=at,
        crls=crls,
    )


def _reason(line: Line, roots: AmdRoots, crls: list[AmdCrl], at: datetime = NOW) -> str:
    with pytest.raises(VerificationError) as caught:
        _auth(line, roots, crls, at)
    # Revocation runs after the chain and before the report's signature.
    assert {"snp.chain"} <= caught.value.checks_run
    assert CHECK_REVOCATION not in caught.value.checks_run
    assert "snp.report.signature" not in caught.value.checks_run
    return f"{caught.value.reason.code}: {caught.value.reason.detail}"


# --- the rules --------------------------------------------------------------------------


def test_an_unlisted_chain_passes_and_says_which_crl_covered_it(
    milan: Line, roots: AmdRoots
) -> None:
    auth = _auth(milan, roots, [milan.crl("milan.crl", revoked=[12345])])
    assert CHECK_REVOCATION in auth.checks_run and "snp.report.signature" in auth.checks_run
    assert auth.revocation is not None and "milan.crl" in auth.revocation


def test_without_crls_revocation_is_not_checked(milan: Line, roots: AmdRoots) -> None:
    auth = _auth(milan, roots, None)
    assert CHECK_REVOCATION not in auth.checks_run and auth.revocation is None


def test_a_listed_ask_is_revoked_naming_it(milan: Line, roots: AmdRoots) -> None:
    ask = milan.hierarchy.ask
    reason = _reason(milan, roots, [milan.crl(revoked=[7, ask.serial_number])])
    assert reason.startswith("snp.cert.revoked: ASK/ASVK SEV-Milan")
    assert f"{ask.serial_number:#x}" in reason and "ark.crl" in reason


def test_the_ark_crl_does_not_speak_for_the_vcek(milan: Line, roots: AmdRoots) -> None:
    # The ASK issued the VCEK: its serial in the ARK's CRL names some other ARK-issued
    # certificate (every KDS VCEK has serial 0), so it revokes nothing here.
    vcek, ask = milan.hierarchy.vcek, milan.hierarchy.ask
    assert vcek.serial_number != ask.serial_number
    auth = _auth(milan, roots, [milan.crl(revoked=[vcek.serial_number])])
    assert CHECK_REVOCATION in auth.checks_run


def test_a_crl_signed_by_another_key_is_untrusted(
    milan: Line, genoa: Line, roots: AmdRoots
) -> None:
    # ARK-Milan's name, a 4096-bit key of the right kind, but not ARK-Milan's key.
    forged = milan.crl("forged.crl", signer=genoa.ark.key)
    assert _reason(milan, roots, [forged]).startswith("snp.crl.untrusted: ")


def test_other_pss_parameters_are_untrusted(milan: Line, roots: AmdRoots) -> None:
    # cryptography's own check takes the parameters the CRL declares and accepts it;
    # AMD signs with a 48-byte salt only, as every certificate link.
    salt32 = milan.crl("salt32.crl", salt_length=32)
    ark_key = milan.ark.certificate.public_key()
    assert isinstance(ark_key, rsa.RSAPublicKey)
    assert salt32.crl.is_signature_valid(ark_key)
    assert _reason(milan, roots, [salt32]).startswith("snp.crl.untrusted: ")


def test_a_critical_extension_makes_a_crl_unusable(milan: Line, roots: AmdRoots) -> None:
    scope = x509.IssuingDistributionPoint(
        full_name=None,
        relative_name=None,
        only_contains_user_certs=True,
        only_contains_ca_certs=False,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )
    narrowed = milan.crl("idp.crl", extensions=[(scope, True)])
    assert "2.5.29.28" in _reason(milan, roots, [narrowed])


@pytest.mark.parametrize(
    ("this_update", "next_update"),
    [
        (NOW - timedelta(days=8), NOW - timedelta(days=1)),  # expired
        (NOW + timedelta(hours=1), NOW + timedelta(days=7)),  # not yet valid
    ],
    ids=["expired", "not-yet-valid"],
)
def test_a_crl_outside_its_window_is_stale(
    milan: Line, roots: AmdRoots, this_update: datetime, next_update: datetime
) -> None:
    old = milan.crl(this_update=this_update, next_update=next_update)
    assert _reason(milan, roots, [old]).startswith("snp.crl.stale: ")


def test_the_verification_time_decides_staleness(milan: Line, roots: AmdRoots) -> None:
    crl = milan.crl(this_update=NOW - timedelta(days=8), next_update=NOW - timedelta(days=1))
    assert CHECK_REVOCATION in _auth(milan, roots, [crl], at=NOW - timedelta(days=2)).checks_run


def test_another_product_lines_crl_is_ignored(milan: Line, genoa: Line, roots: AmdRoots) -> None:
    # Genoa's CRL lists this very ASK's serial: it is not Milan's ARK speaking.
    crl = genoa.crl(revoked=[milan.hierarchy.ask.serial_number])
    reason = _reason(milan, roots, [crl])
    assert reason.startswith("snp.crl.missing: ") and "ARK-Genoa" in reason


def test_an_empty_crl_set_is_missing(milan: Line, roots: AmdRoots) -> None:
    assert _reason(milan, roots, []).startswith("snp.crl.missing: ")


def test_a_stale_crl_still_revokes(milan: Line, roots: AmdRoots) -> None:
    old = milan.crl(
        revoked=[milan.hierarchy.ask.serial_number],
        this_update=NOW - timedelta(days=8),
        next_update=NOW - timedelta(days=1),
    )
    assert _reason(milan, roots, [old, milan.crl()]).startswith("snp.cert.revoked: ")


def test_an_old_copy_beside_a_current_one_passes(milan: Line, roots: AmdRoots) -> None:
    old = milan.crl("old.crl", this_update=NOW - timedelta(days=8), next_update=NOW)
    auth = _auth(milan, roots, [old, milan.crl("new.crl")])
    assert auth.revocation is not None and "new.crl" in auth.revocation


def test_a_forged_listing_revokes_nothing(milan: Line, genoa: Line, roots: AmdRoots) -> None:
    forged = milan.crl(revoked=[milan.hierarchy.ask.serial_number], signer=genoa.ark.key)
    assert CHECK_REVOCATION in _auth(milan, roots, [forged, milan.crl()]).checks_run


# --- the chain cache ----------------------------------------------------------------------


def test_a_cached_chain_is_still_checked_against_each_calls_crls(
    milan: Line, roots: AmdRoots
) -> None:
    _auth(milan, roots, None)
    _auth(milan, roots, [milan.crl()])
    assert cached_chain_count() == 1  # the chain came from the cache
    revoked = milan.crl(revoked=[milan.hierarchy.ask.serial_number])
    assert _reason(milan, roots, [revoked]).startswith("snp.cert.revoked: ")
    assert _reason(milan, roots, []).startswith("snp.crl.missing: ")
    assert CHECK_REVOCATION in _auth(milan, roots, [milan.crl()]).checks_run


# --- the real AMD vectors ------------------------------------------------------------------


def _vector(case: Case, crls: list[AmdCrl] | None, at: datetime = AT) -> Any:
    return verify_snp_offline(
        SnpEvidence(
            report=snp(case.report).read_bytes(),
            key_certificates=snp(case.key).read_bytes(),
            chain=snp(case.chain).read_bytes(),
        ),
        roots=None,
        policy=None,
        expected_report_data=None,
        at=at,
        crls=crls,
    )


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_vectors_keep_their_verdicts_without_crls(case: Case) -> None:
    report = _vector(case, None)
    assert report.verdict.tier.value == "warning"
    assert set(report.verdict.reason_codes()) == {
        "snp.policy.not_appraised",
        "snp.report.report_data_not_checked",
    }
    status = {c.name: c.status for c in report.checks}
    assert status[CHECK_REVOCATION] == "not_run" and status["snp.report.signature"] == "passed"
    assert report.claims["revocation"]["checked"] is False


def test_the_expired_vlek_is_still_rejected_for_expiry() -> None:
    assert _vector(VLEK, None, at=AFTER_VLEK).verdict.reason_codes() == ("snp.chain.expired",)


@pytest.mark.parametrize("case", REPORTS, ids=lambda c: c.name)
def test_a_test_arks_crl_says_nothing_about_amds_chains(case: Case, milan: Line) -> None:
    report = _vector(case, [milan.crl()])
    assert report.verdict.reason_codes()[0] == "snp.crl.missing"
    assert report.claims["revocation"]["checked"] is True


def test_a_crl_in_amds_name_but_not_by_amds_key_is_untrusted(milan: Line) -> None:
    report = _vector(VALID[1], [load_crl(forged_amd_crl(milan), "forged.crl")])
    assert report.verdict.reason_codes()[0] == "snp.crl.untrusted"
