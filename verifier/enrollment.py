"""Enrollment: prove that an attestation key lives in the TPM that owns an EK.

The verifier encrypts a fresh secret to the EK, bound to the AK's TPM name
(TPM2_MakeCredential, done here in software). Only a TPM that holds both the EK
private key and a loaded object with exactly that name (and so exactly those
attributes: restricted, fixedTPM, ...) can recover it with
TPM2_ActivateCredential. The EK itself is trusted through its certificate's
chain to a configured manufacturer root.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tpm2_pytss.types import TPM2B_NAME, TPM2B_PUBLIC
from tpm2_pytss.utils import make_credential

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.keys import check_attestation_key, public_key, tpm_name
from verifier.evidence.tpm.parse import TpmPublic, parse_tpm2b_public
from verifier.store import HostTransition, Store
from verifier.verdict import Reason, VerificationError
from verifier.x509chain import ChainError, verify_chain

EK_ANCHOR_PURPOSE = "tpm_ek"  # trust anchors of this purpose (proposal kind trust_anchor)

CREDENTIAL_SECRET_BYTES = 32
# TPMA_OBJECT bits an endorsement key must carry: a TPM-bound restricted
# decryption key (TCG EK Credential Profile templates).
_FIXED_TPM, _FIXED_PARENT, _SENSITIVE_DATA_ORIGIN = 0x2, 0x10, 0x20
_RESTRICTED, _DECRYPT, _SIGN = 0x10000, 0x20000, 0x40000
_EK_REQUIRED = _FIXED_TPM | _FIXED_PARENT | _SENSITIVE_DATA_ORIGIN | _RESTRICTED | _DECRYPT


class EnrollmentRejectedError(Exception):
    """Enrollment refused; `reason.code` is stable, `kind` picks the gRPC status."""

    def __init__(self, reason: Reason, *, kind: str) -> None:
        super().__init__(str(reason))
        self.reason = reason
        self.kind = kind  # "invalid", "not_found", "denied"


@dataclass(frozen=True, slots=True)
class CredentialChallenge:
    enrollment_id: str
    credential_blob: bytes
    encrypted_secret: bytes


def _reject(code: str, detail: str, *, kind: str = "denied") -> EnrollmentRejectedError:
    return EnrollmentRejectedError(Reason(code, detail), kind=kind)


def _parse_public(data: bytes, what: str) -> TpmPublic:
    try:
        return parse_tpm2b_public(data)
    except ParseError as exc:
        raise _reject(f"enrollment.{what}_malformed", str(exc), kind="invalid") from None


def _check_ek(ek: TpmPublic) -> None:
    if ek.attributes & _EK_REQUIRED != _EK_REQUIRED or ek.attributes & _SIGN:
        raise _reject(
            "enrollment.ek_attributes_invalid",
            "an EK must be a fixedTPM restricted decryption key",
            kind="invalid",
        )


class Enroller:
    """Domain logic behind the Enrollment service; the servicer only converts messages."""

    def __init__(
        self,
        store: Store,
        *,
        ek_roots: Sequence[x509.Certificate],
        require_ek_certificate: bool,
        timeout: timedelta,
        now: Callable[[], datetime],
        allow_shared_tpm: bool = False,
    ) -> None:
        self._store = store
        self._ek_roots = tuple(ek_roots)
        self._require_ek_certificate = require_ek_certificate
        self._allow_shared_tpm = allow_shared_tpm
        self._timeout = timeout
        self._now = now

    def begin(
        self, *, host_id: str, ek_public: bytes, ek_certificate: bytes, ak_public: bytes
    ) -> CredentialChallenge:
        """Checks, in order: host registered; AK and EK well-formed with the right
        attributes; EK certificate chains to a configured root and certifies this
        EK; the EK is the one already pinned to the host, if any. Then makes the
        credential and records the pending enrollment."""
        host = self._store.get_host(host_id)
        if host is None:
            raise _reject(
                "enrollment.unknown_host",
                f"host {host_id!r} is not registered with this verifier",
                kind="not_found",
            )
        ak = _parse_public(ak_public, "ak")
        try:
            check_attestation_key(ak)
        except VerificationError as exc:
            raise EnrollmentRejectedError(exc.reason, kind="invalid") from None
        ek = _parse_public(ek_public, "ek")
        _check_ek(ek)
        self._check_ek_certificate(ek, ek_certificate)
        if host.ek_public is not None and not hmac.compare_digest(host.ek_public, ek_public):
            raise _reject(
                "enrollment.ek_changed",
                "this host enrolled with a different endorsement key; re-register it to replace",
            )
        self._check_tpm_not_shared(host_id, ek_public)
        ak_name = tpm_name(ak)
        secret = secrets.token_bytes(CREDENTIAL_SECRET_BYTES)
        blob, encrypted = make_credential(
            TPM2B_PUBLIC.unmarshal(ek_public)[0], secret, TPM2B_NAME(ak_name)
        )
        enrollment_id = self._store.create_enrollment(
            host_id=host_id,
            ek_public=ek_public,
            ek_certificate=ek_certificate,
            ak_public=ak_public,
            ak_name=ak_name,
            secret_digest=hashlib.sha256(secret).digest(),
            expires_at=self._now() + self._timeout,
        )
        return CredentialChallenge(enrollment_id, blob.marshal(), encrypted.marshal())

    def host_of(self, enrollment_id: str) -> str | None:
        """The host an enrollment (in any state) belongs to, or None if unknown."""
        pending = self._store.get_enrollment(enrollment_id)
        return None if pending is None else pending.host_id

    def complete(self, *, enrollment_id: str, activated_secret: bytes) -> HostTransition:
        """Single attempt: a wrong secret fails the enrollment for good.

        Returns the enrolled host with its status and site before (for watchers).
        """
        pending = self._store.get_enrollment(enrollment_id)
        now = self._now()
        if pending is None or pending.state != "pending" or now >= pending.expires_at:
            raise _reject(
                "enrollment.unknown_or_expired",
                "no pending enrollment with that id",
                kind="not_found",
            )
        proven = hmac.compare_digest(
            hashlib.sha256(activated_secret).digest(), pending.secret_digest
        )
        if proven:
            # Again: another host may have enrolled this TPM since this one began.
            self._check_tpm_not_shared(pending.host_id, pending.ek_public)
        enrolled = self._store.finish_enrollment_transition(
            enrollment_id, succeeded=proven, now=now
        )
        if not proven:
            raise _reject(
                "enrollment.activation_failed",
                "the activated credential does not match: the AK is not in the EK's TPM",
            )
        return enrolled

    def _check_tpm_not_shared(self, host_id: str, ek_public: bytes) -> None:
        """One TPM, one host: a TPM enrolled as two hosts would let one machine's
        evidence stand for another (an unattested machine relaying its challenges)."""
        if self._allow_shared_tpm:
            return
        others = [other for other in self._store.host_ids_with_ek(ek_public) if other != host_id]
        if others:
            raise _reject(
                "enrollment.ek_in_use",
                f"this TPM is already enrolled as host {others[0]!r}; one TPM attests one "
                "host (remove the other host to move the TPM)",
            )

    def _check_ek_certificate(self, ek: TpmPublic, der: bytes) -> None:
        if not der:
            if self._require_ek_certificate:
                raise _reject("enrollment.ek_certificate_missing", "no EK certificate was sent")
            return
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            raise _reject(
                "enrollment.ek_certificate_malformed", "not a DER certificate", kind="invalid"
            ) from None
        # The config file's anchors, and those added since by approved proposals.
        approved = [
            x509.load_der_x509_certificate(anchor.certificate_der)
            for anchor in self._store.trust_anchors(EK_ANCHOR_PURPOSE)
        ]
        try:
            verify_chain(certificate, trusted=(*self._ek_roots, *approved), at=self._now())
        except ChainError as exc:
            raise _reject("enrollment.ek_certificate_untrusted", str(exc)) from None
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if certificate.public_key().public_bytes(*spki) != public_key(ek).public_bytes(*spki):
            raise _reject(
                "enrollment.ek_certificate_mismatch",
                "the EK certificate certifies a different key than the EK presented",
            )
