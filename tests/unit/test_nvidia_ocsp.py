"""OCSP for NVIDIA chains: responses built here, signed by keys made here.

No OCSP response was captured with the shared vectors (PROVENANCE.md: "not
copied ... OCSP responses"; V8 shows NVIDIA's tool failing offline), so every
response is made with pyca's OCSPResponseBuilder under a test root generated in
this file. Against the real NVIDIA chain we can only show the negative: we hold
no NVIDIA key, so a response for NVIDIA's leaf serial signed by any other key
must be rejected.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.vectors import vectors_dir
from verifier.evidence.nvidia.chain import spki_sha256, verify_device_chain
from verifier.evidence.nvidia.ocsp import (
    MALFORMED,
    MISSING,
    NOT_CHECKED,
    REVOKED,
    STALE_ACCEPTED,
    UNKNOWN,
    WARNING_CODES,
    CertStatus,
    OcspPolicy,
    check_ocsp,
)
from verifier.evidence.nvidia.ocsp_cache import OcspCache
from verifier.evidence.nvidia.ocsp_chain import chain_key, check_chain_ocsp
from verifier.verdict import VerificationError

AT = datetime(2025, 6, 1, 12, tzinfo=UTC)
MAX_AGE = timedelta(days=7)
POLICY = OcspPolicy(max_age=MAX_AGE)
SHA1 = hashes.SHA1()  # CertID hash most responders use (not a signature)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _issue(
    name: str,
    issuer: Issued | None,
    *,
    ca: bool,
    eku: Sequence[x509.ObjectIdentifier] = (),
    not_after: datetime = AT + timedelta(days=365),
) -> Issued:
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(AT - timedelta(days=365))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA384()), key)


def _lookalike(name: x509.Name) -> Issued:
    """A certificate with someone else's name and our key: what an impostor can make."""
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2030, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA384())
    )
    return Issued(cert, key)


@dataclass(frozen=True)
class Pki:
    root: Issued
    ica: Issued
    leaf: Issued
    responder: Issued  # issued by ica, id-kp-OCSPSigning
    no_eku: Issued  # issued by ica, no EKU
    other_ca: Issued  # unrelated CA


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = _issue("Test Device Root", None, ca=True)
    ica = _issue("Test Device ICA", root, ca=True)
    return Pki(
        root=root,
        ica=ica,
        leaf=_issue("Test GPU", ica, ca=False),
        responder=_issue("Test OCSP", ica, ca=False, eku=[ExtendedKeyUsageOID.OCSP_SIGNING]),
        no_eku=_issue("Test not-OCSP", ica, ca=False),
        other_ca=_issue("Unrelated CA", None, ca=True),
    )


def _response(
    subject: x509.Certificate,
    issuer: x509.Certificate,
    signer: Issued,
    *,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    this_update: datetime = AT - timedelta(hours=1),
    next_update: datetime | None = AT + timedelta(days=1),
    revoked_at: datetime | None = None,
    reason: x509.ReasonFlags | None = None,
    carry: Sequence[x509.Certificate] = (),
    algorithm: hashes.HashAlgorithm = SHA1,
    responder_by_name: bool = False,
    nonce: bytes | None = None,
) -> bytes:
    encoding = (
        ocsp.OCSPResponderEncoding.NAME if responder_by_name else ocsp.OCSPResponderEncoding.HASH
    )
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            subject, issuer, algorithm, status, this_update, next_update, revoked_at, reason
        )
        .responder_id(encoding, signer.cert)
    )
    if carry:
        builder = builder.certificates(list(carry))
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.sign(signer.key, hashes.SHA384()).public_bytes(serialization.Encoding.DER)


def _check(der: bytes, pki: Pki, **kw: object) -> CertStatus:
    options: dict[str, object] = {"at": AT, "max_age": MAX_AGE, **kw}
    return check_ocsp(der, certificate=pki.leaf.cert, issuer=pki.ica.cert, **options).status  # type: ignore[arg-type]


def _code(der: bytes, pki: Pki, **kw: object) -> str:
    with pytest.raises(VerificationError) as caught:
        _check(der, pki, **kw)
    return caught.value.reason.code


def test_good_fresh_response_by_issuer_passes(pki: Pki) -> None:
    assert _check(_response(pki.leaf.cert, pki.ica.cert, pki.ica), pki) is CertStatus.GOOD


@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256(), hashes.SHA384()])
def test_certid_uses_the_responses_hash_algorithm(
    pki: Pki, algorithm: hashes.HashAlgorithm
) -> None:
    der = _response(pki.leaf.cert, pki.ica.cert, pki.ica, algorithm=algorithm)
    assert _check(der, pki) is CertStatus.GOOD


def test_good_response_by_delegated_responder_passes(pki: Pki) -> None:
    der = _response(pki.leaf.cert, pki.ica.cert, pki.responder, carry=[pki.responder.cert])
    assert _check(der, pki) is CertStatus.GOOD


def test_responder_by_name_passes(pki: Pki) -> None:
    der = _response(
        pki.leaf.cert,
        pki.ica.cert,
        pki.responder,
        carry=[pki.responder.cert],
        responder_by_name=True,
    )
    assert _check(der, pki) is CertStatus.GOOD


def test_responder_chaining_to_configured_root_passes(pki: Pki) -> None:
    # A vendor-wide responder under the root, not under the ICA (RFC 6960 4.2.2.2 item 1).
    vendor = _issue("Vendor OCSP", pki.root, ca=False, eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    der = _response(pki.leaf.cert, pki.ica.cert, vendor, carry=[vendor.cert])
    assert _code(der, pki) == "nvidia.ocsp.responder_unauthorized"
    assert _check(der, pki, trusted_responder_roots=[pki.root.cert]) is CertStatus.GOOD
    # Through an intermediate it carries; without that intermediate it is not authorised.
    ocsp_ca = _issue("Vendor OCSP CA", pki.root, ca=True)
    deep = _issue("Vendor OCSP 2", ocsp_ca, ca=False, eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    der = _response(pki.leaf.cert, pki.ica.cert, deep, carry=[deep.cert, ocsp_ca.cert])
    assert _check(der, pki, trusted_responder_roots=[pki.root.cert]) is CertStatus.GOOD
    der = _response(pki.leaf.cert, pki.ica.cert, deep, carry=[deep.cert])
    assert (
        _code(der, pki, trusted_responder_roots=[pki.root.cert])
        == "nvidia.ocsp.responder_unauthorized"
    )


def test_revoked_names_time_and_reason(pki: Pki) -> None:
    when = datetime(2025, 5, 1, tzinfo=UTC)
    der = _response(
        pki.leaf.cert,
        pki.ica.cert,
        pki.ica,
        status=ocsp.OCSPCertStatus.REVOKED,
        revoked_at=when,
        reason=x509.ReasonFlags.key_compromise,
    )
    status = check_ocsp(der, certificate=pki.leaf.cert, issuer=pki.ica.cert, at=AT, max_age=MAX_AGE)
    assert status.status is CertStatus.REVOKED
    assert status.revocation_time == when
    assert status.revocation_reason is x509.ReasonFlags.key_compromise
    (problem,) = status.problems()
    assert problem.code == REVOKED
    assert "key_compromise" in problem.detail
    assert "2025-05-01" in problem.detail


def test_unknown_is_not_good(pki: Pki) -> None:
    der = _response(pki.leaf.cert, pki.ica.cert, pki.ica, status=ocsp.OCSPCertStatus.UNKNOWN)
    status = check_ocsp(der, certificate=pki.leaf.cert, issuer=pki.ica.cert, at=AT, max_age=MAX_AGE)
    assert status.status is CertStatus.UNKNOWN
    assert [r.code for r in status.problems()] == [UNKNOWN]


def test_wrong_serial_fails(pki: Pki) -> None:
    sibling = _issue("Other GPU", pki.ica, ca=False)
    der = _response(sibling.cert, pki.ica.cert, pki.ica)
    assert _code(der, pki) == "nvidia.ocsp.wrong_certificate"


def test_wrong_issuer_fails(pki: Pki) -> None:
    # Same serial, CertID hashed over another CA's name and key.
    der = _response(pki.leaf.cert, pki.other_ca.cert, pki.other_ca)
    assert _code(der, pki) == "nvidia.ocsp.wrong_issuer"


def test_signature_by_unrelated_key_fails(pki: Pki) -> None:
    # ResponderID claims the issuer, the key is another one.
    impostor = _lookalike(pki.ica.cert.subject)
    der = _response(pki.leaf.cert, pki.ica.cert, impostor, responder_by_name=True)
    assert _code(der, pki) == "nvidia.ocsp.signature_invalid"
    # Carrying the look-alike changes nothing: the real issuer's key is used.
    der = _response(
        pki.leaf.cert, pki.ica.cert, impostor, responder_by_name=True, carry=[impostor.cert]
    )
    assert _code(der, pki) == "nvidia.ocsp.signature_invalid"
    # Named by its own key hash, the look-alike is no responder the issuer authorised.
    der = _response(pki.leaf.cert, pki.ica.cert, impostor, carry=[impostor.cert])
    assert _code(der, pki) == "nvidia.ocsp.responder_unauthorized"


def test_responder_not_named_fails(pki: Pki) -> None:
    der = _response(pki.leaf.cert, pki.ica.cert, pki.other_ca)
    assert _code(der, pki) == "nvidia.ocsp.responder_unknown"


def test_responder_without_eku_fails(pki: Pki) -> None:
    der = _response(pki.leaf.cert, pki.ica.cert, pki.no_eku, carry=[pki.no_eku.cert])
    assert _code(der, pki) == "nvidia.ocsp.responder_unauthorized"


def test_responder_with_eku_from_another_ca_fails(pki: Pki) -> None:
    stranger = _issue(
        "Stranger OCSP", pki.other_ca, ca=False, eku=[ExtendedKeyUsageOID.OCSP_SIGNING]
    )
    der = _response(pki.leaf.cert, pki.ica.cert, stranger, carry=[stranger.cert])
    assert _code(der, pki) == "nvidia.ocsp.responder_unauthorized"


def test_expired_responder_fails(pki: Pki) -> None:
    old = _issue(
        "Old OCSP",
        pki.ica,
        ca=False,
        eku=[ExtendedKeyUsageOID.OCSP_SIGNING],
        not_after=AT - timedelta(days=1),
    )
    der = _response(pki.leaf.cert, pki.ica.cert, old, carry=[old.cert])
    assert _code(der, pki) == "nvidia.ocsp.responder_expired"


def test_expired_next_update_fails_and_warns_within_grace(pki: Pki) -> None:
    der = _response(
        pki.leaf.cert,
        pki.ica.cert,
        pki.ica,
        this_update=AT - timedelta(days=3),
        next_update=AT - timedelta(days=1),
    )
    assert _code(der, pki) == "nvidia.ocsp.expired"
    assert _code(der, pki, stale_grace=timedelta(hours=12)) == "nvidia.ocsp.expired"
    status = check_ocsp(
        der,
        certificate=pki.leaf.cert,
        issuer=pki.ica.cert,
        at=AT,
        max_age=MAX_AGE,
        stale_grace=timedelta(days=2),
    )
    assert status.status is CertStatus.GOOD
    assert [r.code for r in status.warnings] == [STALE_ACCEPTED]
    assert STALE_ACCEPTED in WARNING_CODES


def test_no_next_update_bounded_by_max_age(pki: Pki) -> None:
    fresh = _response(pki.leaf.cert, pki.ica.cert, pki.ica, next_update=None)
    assert _check(fresh, pki) is CertStatus.GOOD
    old = _response(
        pki.leaf.cert,
        pki.ica.cert,
        pki.ica,
        this_update=AT - MAX_AGE - timedelta(hours=1),
        next_update=None,
    )
    assert _code(old, pki) == "nvidia.ocsp.expired"


def test_this_update_in_the_future_fails(pki: Pki) -> None:
    der = _response(
        pki.leaf.cert,
        pki.ica.cert,
        pki.ica,
        this_update=AT + timedelta(hours=1),
        next_update=AT + timedelta(days=2),
    )
    assert _code(der, pki) == "nvidia.ocsp.not_yet_valid"
    # Within the clock skew it passes.
    near = _response(pki.leaf.cert, pki.ica.cert, pki.ica, this_update=AT + timedelta(minutes=2))
    assert _check(near, pki) is CertStatus.GOOD


def test_nonce_must_be_echoed(pki: Pki) -> None:
    der = _response(pki.leaf.cert, pki.ica.cert, pki.ica, nonce=b"\x01" * 16)
    assert _check(der, pki, nonce=b"\x01" * 16) is CertStatus.GOOD
    assert _code(der, pki, nonce=b"\x02" * 16) == "nvidia.ocsp.nonce_mismatch"
    bare = _response(pki.leaf.cert, pki.ica.cert, pki.ica)
    assert _code(bare, pki, nonce=b"\x01" * 16) == "nvidia.ocsp.nonce_mismatch"


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x0a\x01", b"not der at all", b"\x30" * 70_000])
def test_malformed_bytes(pki: Pki, der: bytes) -> None:
    assert _code(der, pki) == MALFORMED


def test_unsuccessful_response_fails(pki: Pki) -> None:
    der = ocsp.OCSPResponseBuilder.build_unsuccessful(
        ocsp.OCSPResponseStatus.TRY_LATER
    ).public_bytes(serialization.Encoding.DER)
    assert _code(der, pki) == "nvidia.ocsp.unsuccessful"


def _chain(pki: Pki) -> list[x509.Certificate]:
    return [pki.leaf.cert, pki.ica.cert, pki.root.cert]


def test_chain_all_good_has_no_reasons(pki: Pki) -> None:
    responses: dict[int | bytes, bytes] = {
        chain_key(pki.leaf.cert): _response(pki.leaf.cert, pki.ica.cert, pki.ica),
        pki.ica.cert.serial_number: _response(pki.ica.cert, pki.root.cert, pki.root),
    }
    assert check_chain_ocsp(_chain(pki), responses, POLICY, at=AT) == []


def test_chain_missing_is_named_never_silent(pki: Pki) -> None:
    responses: dict[int | bytes, bytes] = {
        chain_key(pki.leaf.cert): _response(pki.leaf.cert, pki.ica.cert, pki.ica),
    }
    (reason,) = check_chain_ocsp(_chain(pki), responses, POLICY, at=AT)
    assert reason.code == MISSING
    assert "Test Device ICA" in reason.detail
    optional = OcspPolicy(max_age=MAX_AGE, required=False)
    (reason,) = check_chain_ocsp(_chain(pki), responses, optional, at=AT)
    assert reason.code == NOT_CHECKED
    assert reason.code in WARNING_CODES


def test_chain_reports_every_problem(pki: Pki) -> None:
    responses: dict[int | bytes, bytes] = {
        chain_key(pki.leaf.cert): _response(
            pki.leaf.cert,
            pki.ica.cert,
            pki.ica,
            status=ocsp.OCSPCertStatus.REVOKED,
            revoked_at=AT - timedelta(days=2),
            reason=x509.ReasonFlags.certificate_hold,
        ),
        chain_key(pki.ica.cert): b"garbage",
    }
    codes = [r.code for r in check_chain_ocsp(_chain(pki), responses, POLICY, at=AT)]
    assert codes == [REVOKED, MALFORMED]


def test_cache_keeps_the_newest(pki: Pki, tmp_path: Path) -> None:
    older = _response(pki.leaf.cert, pki.ica.cert, pki.ica, this_update=AT - timedelta(hours=5))
    newer = _response(
        pki.leaf.cert,
        pki.ica.cert,
        pki.ica,
        this_update=AT - timedelta(hours=1),
        status=ocsp.OCSPCertStatus.REVOKED,
        revoked_at=AT - timedelta(hours=2),
    )
    cache = OcspCache(directory=tmp_path)
    put = {"certificate": pki.leaf.cert, "issuer": pki.ica.cert, "at": AT, "policy": POLICY}
    assert cache.put(older, **put) is True  # type: ignore[arg-type]
    assert cache.put(newer, **put) is True  # type: ignore[arg-type]
    assert cache.put(older, **put) is False  # type: ignore[arg-type]  # replayed older "good"
    assert cache.get(pki.leaf.cert, pki.ica.cert) == newer
    # A second cache over the same directory (a restart) sees the same, and
    # an older response still cannot displace it.
    reopened = OcspCache(directory=tmp_path)
    assert reopened.get(pki.leaf.cert, pki.ica.cert) == newer
    assert reopened.put(older, **put) is False  # type: ignore[arg-type]
    # Invalid responses never enter.
    forged = _response(
        pki.leaf.cert, pki.ica.cert, _lookalike(pki.ica.cert.subject), responder_by_name=True
    )
    with pytest.raises(VerificationError):
        cache.put(forged, **put)  # type: ignore[arg-type]


def test_chain_uses_cache_when_evidence_has_none(pki: Pki) -> None:
    cache = OcspCache()
    for subject, issuer in ((pki.leaf, pki.ica), (pki.ica, pki.root)):
        der = _response(subject.cert, issuer.cert, issuer)
        cache.put(der, certificate=subject.cert, issuer=issuer.cert, at=AT, policy=POLICY)
    assert check_chain_ocsp(_chain(pki), {}, POLICY, at=AT, cache=cache) == []
    assert [r.code for r in check_chain_ocsp(_chain(pki), {}, POLICY, at=AT)] == [MISSING, MISSING]


def test_real_nvidia_chain_rejects_responses_not_signed_by_nvidia() -> None:
    base = vectors_dir("nvidia")
    root = x509.load_pem_x509_certificate((base / "roots/verifier_device_root.pem").read_bytes())
    at = datetime(2024, 3, 1, tzinfo=UTC)
    chain = verify_device_chain(
        (base / "pypi_nv-local-gpu-verifier_2.0.0/gpuAkCertChain.txt").read_bytes(),
        pinned_roots=[root],
        at=at,
        spki_pins=(spki_sha256(root),),
    )
    certs = list(chain.certificates)
    responses: dict[int | bytes, bytes] = {}
    for subject, issuer in itertools.pairwise(certs):
        # A correct CertID for NVIDIA's certificate, "signed" as NVIDIA's issuer
        # (ResponderID byName) with a key that is not NVIDIA's.
        responses[chain_key(subject)] = _response(
            subject,
            issuer,
            _lookalike(issuer.subject),
            this_update=at - timedelta(hours=1),
            next_update=at + timedelta(days=1),
            responder_by_name=True,
        )
    reasons = check_chain_ocsp(certs, responses, POLICY, at=at)
    assert len(reasons) == len(certs) - 1
    assert {r.code for r in reasons} == {"nvidia.ocsp.signature_invalid"}
