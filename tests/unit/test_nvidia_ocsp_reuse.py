"""Authenticated OCSP responses reused: never for other bytes, certificates, roots or times.

Each test warms the reuse (a good answer authenticated once), then changes one
input and expects that input's own reason; freshness and status are judged on
every use, so a warm entry never hides an expired or revoked answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from verifier.evidence.nvidia import cert_digests, ocsp_verified
from verifier.evidence.nvidia.ocsp import (
    CertStatus,
    OcspPolicy,
    authenticate_response,
    check_ocsp,
)
from verifier.evidence.nvidia.ocsp_chain import check_chain_ocsp
from verifier.evidence.nvidia.ocsp_verified import check_ocsp_reusing, clear_verified_ocsp
from verifier.verdict import VerificationError

AT = datetime(2025, 6, 1, 12, tzinfo=UTC)
POLICY = OcspPolicy(max_age=timedelta(days=7))


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _issue(
    name: str,
    issuer: Issued | None,
    *,
    ca: bool,
    ocsp_signer: bool = False,
    not_after: datetime = AT + timedelta(days=365),
    subject: x509.Name | None = None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP384R1())
    subject = subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(AT - timedelta(days=30))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ocsp_signer:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA384()), key)


@dataclass(frozen=True)
class Pki:
    root: Issued
    ica: Issued
    leaf: Issued
    sibling: Issued  # another leaf of the same ICA
    responder: Issued  # delegated by the ICA, expires 3 days after AT
    vendor: Issued  # id-kp-OCSPSigning under the root: needs the root configured


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = _issue("Reuse Root", None, ca=True)
    ica = _issue("Reuse ICA", root, ca=True)
    return Pki(
        root=root,
        ica=ica,
        leaf=_issue("Reuse GPU", ica, ca=False),
        sibling=_issue("Reuse GPU 2", ica, ca=False),
        responder=_issue(
            "Reuse OCSP", ica, ca=False, ocsp_signer=True, not_after=AT + timedelta(days=3)
        ),
        vendor=_issue("Reuse Vendor OCSP", root, ca=False, ocsp_signer=True),
    )


@pytest.fixture(autouse=True)
def _cold() -> None:
    clear_verified_ocsp()


def _response(
    pki: Pki,
    signer: Issued,
    *,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    next_update: datetime | None = AT + timedelta(days=1),
    carry: Sequence[x509.Certificate] = (),
) -> bytes:
    revoked = (AT - timedelta(days=2), x509.ReasonFlags.key_compromise)
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            pki.leaf.cert,
            pki.ica.cert,
            hashes.SHA1(),
            status,
            AT - timedelta(hours=1),
            next_update,
            *(revoked if status is ocsp.OCSPCertStatus.REVOKED else (None, None)),
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
    )
    if carry:
        builder = builder.certificates(list(carry))
    return builder.sign(signer.key, hashes.SHA384()).public_bytes(serialization.Encoding.DER)


def _status(der: bytes, pki: Pki, **kw: Any) -> CertStatus:
    options: dict[str, Any] = {
        "certificate": pki.leaf.cert,
        "issuer": pki.ica.cert,
        "at": AT,
        "policy": POLICY,
        **kw,
    }
    return check_ocsp_reusing(der, **options).status


def _code(der: bytes, pki: Pki, **kw: Any) -> str:
    with pytest.raises(VerificationError) as caught:
        _status(der, pki, **kw)
    return caught.value.reason.code


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts real authentications (a reuse does not call authenticate_response)."""
    calls: list[int] = []
    real: Callable[..., Any] = authenticate_response

    def counted(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(ocsp_verified, "authenticate_response", counted)
    return calls


def test_a_response_is_authenticated_once_and_answers_as_check_ocsp(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting(monkeypatch)
    der = _response(pki, pki.ica)
    for _ in range(3):
        assert _status(der, pki) is CertStatus.GOOD
    assert len(calls) == 1
    plain = check_ocsp(
        der, certificate=pki.leaf.cert, issuer=pki.ica.cert, at=AT, max_age=POLICY.max_age
    )
    assert (
        check_ocsp_reusing(
            der, certificate=pki.leaf.cert, issuer=pki.ica.cert, at=AT, policy=POLICY
        )
        == plain
    )


def test_other_response_bytes_are_authenticated_again(pki: Pki) -> None:
    der = _response(pki, pki.ica)
    assert _status(der, pki) is CertStatus.GOOD
    # The signature is the last field: one bit of it changed.
    tampered = der[:-1] + bytes([der[-1] ^ 0x01])
    for _ in range(2):
        assert _code(tampered, pki) == "nvidia.ocsp.signature_invalid"
    forged = _response(pki, _issue("Reuse ICA", None, ca=True, subject=pki.ica.cert.subject))
    assert _code(forged, pki) == "nvidia.ocsp.responder_unknown"
    assert _status(der, pki) is CertStatus.GOOD


def test_the_same_bytes_never_answer_for_another_certificate_or_issuer(pki: Pki) -> None:
    der = _response(pki, pki.ica)
    assert _status(der, pki) is CertStatus.GOOD
    assert _code(der, pki, certificate=pki.sibling.cert) == "nvidia.ocsp.wrong_certificate"
    # A CA with the ICA's name but another key: CertID's key hash differs.
    lookalike = _issue("Reuse ICA", pki.root, ca=True, subject=pki.ica.cert.subject)
    assert _code(der, pki, issuer=lookalike.cert) == "nvidia.ocsp.wrong_issuer"


def test_the_same_bytes_never_answer_under_other_responder_roots(pki: Pki) -> None:
    der = _response(pki, pki.vendor, carry=[pki.vendor.cert])
    trusting = OcspPolicy(max_age=timedelta(days=7), trusted_responder_roots=(pki.root.cert,))
    assert _status(der, pki, policy=trusting) is CertStatus.GOOD
    other_root = _issue("Reuse Other Root", None, ca=True)
    other = OcspPolicy(max_age=timedelta(days=7), trusted_responder_roots=(other_root.cert,))
    assert _code(der, pki, policy=other) == "nvidia.ocsp.responder_unauthorized"
    assert _code(der, pki) == "nvidia.ocsp.responder_unauthorized", "no roots configured"
    assert _status(der, pki, policy=trusting) is CertStatus.GOOD


def test_outside_the_responders_validity_it_is_checked_again(pki: Pki) -> None:
    der = _response(
        pki, pki.responder, carry=[pki.responder.cert], next_update=AT + timedelta(days=30)
    )
    assert _status(der, pki) is CertStatus.GOOD
    assert _code(der, pki, at=AT + timedelta(days=4)) == "nvidia.ocsp.responder_expired"
    before = AT - timedelta(days=31)
    assert _code(der, pki, at=before) == "nvidia.ocsp.responder_expired"
    assert _status(der, pki, at=AT + timedelta(days=2)) is CertStatus.GOOD


def test_freshness_is_judged_at_every_use(pki: Pki) -> None:
    der = _response(pki, pki.ica)
    assert _status(der, pki) is CertStatus.GOOD
    assert _code(der, pki, at=AT + timedelta(days=2)) == "nvidia.ocsp.expired"
    assert _code(der, pki, at=AT - timedelta(hours=2)) == "nvidia.ocsp.not_yet_valid"
    graceful = OcspPolicy(max_age=timedelta(days=7), stale_grace=timedelta(days=2))
    late = check_ocsp_reusing(
        der,
        certificate=pki.leaf.cert,
        issuer=pki.ica.cert,
        at=AT + timedelta(days=2),
        policy=graceful,
    )
    assert [r.code for r in late.warnings] == ["nvidia.ocsp.stale_accepted"]
    # Without nextUpdate the policy's max_age bounds it; the policy is not part of the key.
    open_ended = _response(pki, pki.ica, next_update=None)
    assert _status(open_ended, pki) is CertStatus.GOOD
    strict = OcspPolicy(max_age=timedelta(minutes=30))
    assert _code(open_ended, pki, policy=strict) == "nvidia.ocsp.expired"


def test_revoked_stays_revoked_with_a_good_answer_warm(pki: Pki) -> None:
    good = _response(pki, pki.ica)
    revoked = _response(pki, pki.ica, status=ocsp.OCSPCertStatus.REVOKED)
    assert _status(good, pki) is CertStatus.GOOD
    for _ in range(2):
        assert _status(revoked, pki) is CertStatus.REVOKED
    chain = [pki.leaf.cert, pki.ica.cert, pki.root.cert]
    ica_good = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            pki.ica.cert,
            pki.root.cert,
            hashes.SHA1(),
            ocsp.OCSPCertStatus.GOOD,
            AT - timedelta(hours=1),
            AT + timedelta(days=1),
            None,
            None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, pki.root.cert)
        .sign(pki.root.key, hashes.SHA384())
        .public_bytes(serialization.Encoding.DER)
    )
    assert (
        check_chain_ocsp(
            chain,
            {pki.leaf.cert.serial_number: good, pki.ica.cert.serial_number: ica_good},
            POLICY,
            at=AT,
        )
        == []
    )
    found = check_chain_ocsp(
        chain,
        {pki.leaf.cert.serial_number: revoked, pki.ica.cert.serial_number: ica_good},
        POLICY,
        at=AT,
    )
    assert [r.code for r in found] == ["nvidia.ocsp.revoked"]


def test_key_digests_are_per_exact_certificate(pki: Pki) -> None:
    assert cert_digests.key_id(pki.ica.cert) == (
        x509.SubjectKeyIdentifier.from_public_key(pki.ica.cert.public_key()).digest
    )
    lookalike = _issue("Reuse ICA", pki.root, ca=True, subject=pki.ica.cert.subject)
    assert cert_digests.spki_sha256(lookalike.cert) != cert_digests.spki_sha256(pki.ica.cert)
    assert cert_digests.key_id(lookalike.cert) != cert_digests.key_id(pki.ica.cert)
