"""Authenticate a parsed TDX quote: signatures, QE binding, PCK chain to the pinned root.

:func:`authenticate_quote` is the only way to build an :class:`AuthenticatedQuote`,
the only input appraisal accepts (STYLE.md, "Verifying evidence" 2). Revocation
(CRLs) and TCB status need collateral and are judged by the caller on the
returned chain (``offline.py``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from verifier.evidence.errors import ParseError
from verifier.evidence.tdx.pck_cache import lookup_pck, remember_pck
from verifier.evidence.tdx.pck_extension import PckTcb, read_pck_extension
from verifier.evidence.tdx.pki import INTEL_ROOT_PINS, parse_pem_certificates, verify_chain
from verifier.evidence.tdx.quote import INTEL_QE_VENDOR_ID, Quote
from verifier.verdict import Reason, VerificationError

__all__ = [
    "AUTHENTICATION_CHECKS",
    "CHECK_PCK_CHAIN",
    "CHECK_QE_BINDING",
    "CHECK_QE_SIGNATURE",
    "CHECK_QE_VENDOR",
    "CHECK_QUOTE_SIGNATURE",
    "AuthenticatedQuote",
    "authenticate_quote",
]

CHECK_QE_VENDOR = "tdx.quote.qe_vendor"
CHECK_QUOTE_SIGNATURE = "tdx.quote.signature"
CHECK_QE_SIGNATURE = "tdx.qe.signature"
CHECK_QE_BINDING = "tdx.qe.report_data"
CHECK_PCK_CHAIN = "tdx.pck.chain"
AUTHENTICATION_CHECKS = (
    CHECK_QE_VENDOR,
    CHECK_QUOTE_SIGNATURE,
    CHECK_QE_SIGNATURE,
    CHECK_QE_BINDING,
    CHECK_PCK_CHAIN,
)


class _Seal:
    """Made only here; binds the exact values authenticate_quote verified."""

    __slots__ = ("at", "path", "quote", "tcb")

    def __init__(
        self, quote: Quote, path: tuple[x509.Certificate, ...], tcb: PckTcb, at: datetime
    ) -> None:
        self.quote, self.path, self.tcb, self.at = quote, path, tcb, at


@dataclass(frozen=True, slots=True)
class AuthenticatedQuote:
    """A quote whose every signature verified and whose PCK chains to the pinned root.

    ``pck_path`` is PCK leaf -> CA -> pinned root; ``pck_tcb`` the leaf's SGX
    extension. Built only by :func:`authenticate_quote` (TypeError otherwise).
    """

    quote: Quote
    pck_path: tuple[x509.Certificate, ...]
    pck_tcb: PckTcb
    verified_at: datetime
    _seal: object = field(default=None, repr=False, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        seal = self._seal
        if (
            type(seal) is not _Seal
            or seal.quote is not self.quote
            or seal.path is not self.pck_path
            or seal.tcb is not self.pck_tcb
            or seal.at is not self.verified_at
        ):
            raise TypeError("AuthenticatedQuote is built only by authenticate_quote()")


def _fail(code: str, detail: str, done: list[str]) -> VerificationError:
    return VerificationError(Reason(code, detail), done)


def _verify_p256(key: ec.EllipticCurvePublicKey, signature_rs: bytes, message: bytes) -> bool:
    der = encode_dss_signature(
        int.from_bytes(signature_rs[:32], "big"), int.from_bytes(signature_rs[32:], "big")
    )
    try:
        key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        # Caught by type, never by message: InvalidSignature's message is empty.
        return False
    return True


def authenticate_quote(
    quote: Quote,
    *,
    root: x509.Certificate,
    at: datetime,
    spki_pins: frozenset[bytes] = INTEL_ROOT_PINS,
) -> AuthenticatedQuote:
    """Raise :class:`VerificationError` at the first failed check, in this order:

    1. the QE vendor id is Intel's (``tdx.quote.qe_vendor_unknown``);
    2. the attestation key is a P-256 point and its signature over the exact
       header||body bytes verifies (``tdx.quote.signature_invalid``);
    3. the PCK chain parses (``tdx.pck.malformed``) and the PCK leaf key signed
       the QE report (``tdx.qe.signature_invalid``);
    4. QE REPORTDATA[0:32] == SHA-256(attestation key || QE auth data) and
       [32:64] is zero: the QE vouches for this attestation key
       (``tdx.qe.report_data_mismatch``);
    5. PCK -> CA -> ``root``, pinned by ``spki_pins`` (Intel's unless a test setting
       names another), at ``at`` (``tdx.pck.chain_untrusted``,
       ``chain_invalid``, ``expired``, ``not_yet_valid``) and the leaf's SGX
       extension parses (``tdx.pck.malformed``).

    Steps 3 (parse) and 5 are taken from an earlier success for the exact same
    PEM chain bytes and root when ``at`` is inside that path's validity window
    (``pck_cache.py``); the signatures and the binding run on every call.
    """
    done: list[str] = []
    if not hmac.compare_digest(quote.header.qe_vendor_id, INTEL_QE_VENDOR_ID):
        raise _fail("tdx.quote.qe_vendor_unknown", quote.header.qe_vendor_id.hex(), done)
    done.append(CHECK_QE_VENDOR)
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b"\x04" + quote.attestation_key
        )
    except ValueError:
        raise _fail(
            "tdx.quote.signature_invalid", "attestation key is not a P-256 point", done
        ) from None
    if not _verify_p256(key, quote.signature, quote.signed_bytes):
        raise _fail("tdx.quote.signature_invalid", "quote signature does not verify", done)
    done.append(CHECK_QUOTE_SIGNATURE)

    certification = quote.certification
    pem = certification.pck_chain_pem
    # An earlier success for these exact PEM bytes and this root, at a time inside
    # its validity window (pck_cache.py): steps 3 (parse) and 5 would conclude the
    # same, so only the signatures and the binding below run again.
    held = lookup_pck(pem, root, at, spki_pins)
    sent: list[x509.Certificate] = []
    if held is not None:
        leaf_key: object = held.qe_key
    else:
        try:
            sent = parse_pem_certificates(pem)
        except ParseError as exc:
            raise _fail("tdx.pck.malformed", str(exc), done) from None
        if not sent:
            raise _fail("tdx.pck.malformed", "no PCK certificate", done)
        leaf_key = sent[0].public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or not isinstance(
        leaf_key.curve, ec.SECP256R1
    ):
        raise _fail("tdx.qe.signature_invalid", "PCK key is not ECDSA P-256", done)
    qe = certification.qe_report
    if not _verify_p256(leaf_key, certification.qe_report_signature, qe.raw):
        raise _fail("tdx.qe.signature_invalid", "the PCK key did not sign the QE report", done)
    done.append(CHECK_QE_SIGNATURE)

    expected = hashlib.sha256(quote.attestation_key + certification.qe_auth_data).digest()
    if not hmac.compare_digest(qe.report_data, expected + bytes(32)):
        raise _fail(
            "tdx.qe.report_data_mismatch",
            "QE REPORTDATA is not SHA-256(attestation key || QE auth data)",
            done,
        )
    done.append(CHECK_QE_BINDING)

    if held is None:
        try:
            path = verify_chain(sent, root=root, at=at, prefix="tdx.pck", spki_pins=spki_pins)
        except VerificationError as exc:
            raise VerificationError(exc.reason, done) from None
        # The key that verified the QE report must be the verified path's leaf
        # (verify_chain guarantees it; checked again because everything rests on it).
        if path[0] is not sent[0]:
            raise _fail("tdx.pck.chain_invalid", "the first certificate is not the leaf", done)
        try:
            pck_tcb = read_pck_extension(path[0])
        except ParseError as exc:
            raise _fail("tdx.pck.malformed", str(exc), done) from None
        held = remember_pck(pem, root, spki_pins, qe_key=leaf_key, path=path, tcb=pck_tcb)
    done.append(CHECK_PCK_CHAIN)
    path, pck_tcb = held.path, held.tcb
    return AuthenticatedQuote(quote, path, pck_tcb, at, _seal=_Seal(quote, path, pck_tcb, at))
