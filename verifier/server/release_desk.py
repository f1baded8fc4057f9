"""Release requests and erase receipts arriving on a host's attestation stream.

Synchronous domain code (the stream runs it in a worker thread): gather the
facts, ask the gate, record the decision, wrap keys to the binding key.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from verifier.config import VerifierConfig
from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.certify import AuthenticatedBindingKey
from verifier.evidence.tpm.parse import parse_tpm2b_public
from verifier.keyrelease.gate import (
    ReleaseDeniedError,
    ReleaseFacts,
    check_release,
    policy_reasons,
    release_context,
)
from verifier.keyrelease.receipts import erase_qualifying_data, verify_erase_receipt
from verifier.keyrelease.wrap import wrap_for_binding_key
from verifier.keystore import KeyStore
from verifier.models.encrypt import data_key_context
from verifier.server.convert import timestamp
from verifier.store import ReleaseRecord, ReleaseState, Store
from verifier.verdict import Reason, VerificationError
from weightgate.v1 import attestation_pb2, common_pb2

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
DIGEST_BYTES = 32


@dataclass(frozen=True)
class ReleaseDesk:
    store: Store
    keystore: KeyStore
    config: VerifierConfig
    now: Callable[[], datetime]

    def request(
        self,
        host_id: str,
        request: attestation_pb2.ReleaseRequest,
        binding_key: AuthenticatedBindingKey | None,
    ) -> attestation_pb2.VerifierMessage:
        """Answer a ReleaseRequest with a KeyRelease or a ReleaseDenied (every reason)."""
        digest = bytes(request.manifest_digest)
        if not REQUEST_ID.fullmatch(request.request_id) or len(digest) != DIGEST_BYTES:
            return self._denied(
                request,
                (Reason("release.request_malformed", "need a request id and a 32-byte digest"),),
                host_id=None,
            )
        now = self.now()
        try:
            facts = self._facts(host_id, digest, binding_key, now)
            check_release(facts, freshness=timedelta(seconds=self.config.release_freshness_seconds))
        except ReleaseDeniedError as denied:
            return self._denied(request, denied.reasons, host_id=host_id)
        assert facts.model is not None and binding_key is not None  # the gate checked both
        data_keys = {
            file_id: self.keystore.unwrap_data_key(
                wrapped, context=data_key_context(digest, bytes.fromhex(file_id))
            )
            for file_id, wrapped in self.store.wrapped_data_keys(digest).items()
        }
        release = self.store.create_release(
            host_id=host_id,
            manifest_digest=digest,
            lease_expires_at=now + timedelta(seconds=self.config.lease_seconds),
            now=now,
        )
        wrapped_keys = wrap_for_binding_key(
            binding_key,
            data_keys,
            context=release_context(host_id, release.release_id, digest),
        )
        log.info("keys released host=%s release=%s model=%s", host_id, release.release_id,
                 release.model)  # fmt: skip
        return attestation_pb2.VerifierMessage(
            key_release=attestation_pb2.KeyRelease(
                request_id=request.request_id,
                release_id=release.release_id,
                manifest=facts.model.manifest,
                manifest_signature=facts.model.manifest_signature,
                encrypted_transport_key=wrapped_keys.encrypted_transport_key,
                wrapped_data_keys=wrapped_keys.wrapped_data_keys,
                lease_expires_at=timestamp(release.lease_expires_at),
            )
        )

    def policy_lapses(self, host_id: str, now: datetime) -> list[tuple[ReleaseRecord, Reason]]:
        """The host's live releases that the deployment policy no longer allows
        (verifier.keyrelease.gate.policy_reasons), each with why; checked before a
        renewal, after the verdict itself affirmed."""
        lapsed: list[tuple[ReleaseRecord, Reason]] = []
        for release in self.store.live_releases(host_id):
            facts = self._facts(host_id, release.manifest_digest, None, now)
            reasons = policy_reasons(facts)
            if reasons:
                detail = "; ".join(str(r) for r in reasons)
                lapsed.append((release, Reason("release.revoked.policy", detail)))
        return lapsed

    def _facts(
        self,
        host_id: str,
        digest: bytes,
        binding_key: AuthenticatedBindingKey | None,
        now: datetime,
    ) -> ReleaseFacts:
        host = self.store.get_host(host_id)
        if host is None:
            raise ReleaseDeniedError((Reason("release.host_unknown", "host is not registered"),))
        model = self.store.get_model_version(digest)
        latest = self.store.history(host_id, limit=1)
        site = self.store.get_site(host.site) if host.site else None
        review = (
            self.store.effective_review(digest, host.site, now=now)
            if model is not None and host.site
            else None
        )
        return ReleaseFacts(
            host=host,
            model=model,
            latest=latest[0] if latest else None,
            site=site,
            review=review,
            binding_key=binding_key,
            now=now,
            break_glass=self.store.active_break_glass(host_id, digest, now=now),
        )

    def _denied(
        self,
        request: attestation_pb2.ReleaseRequest,
        reasons: tuple[Reason, ...],
        *,
        host_id: str | None,
    ) -> attestation_pb2.VerifierMessage:
        if host_id is not None:
            self.store.record_release_denial(
                host_id=host_id,
                manifest_digest=bytes(request.manifest_digest),
                reasons=reasons,
                now=self.now(),
            )
        log.info("release denied host=%s reasons=%s", host_id,
                 ",".join(r.code for r in reasons))  # fmt: skip
        return attestation_pb2.VerifierMessage(
            release_denied=attestation_pb2.ReleaseDenied(
                request_id=request.request_id,
                manifest_digest=request.manifest_digest,
                reasons=[common_pb2.Reason(code=r.code, detail=r.detail) for r in reasons],
            )
        )

    def revoke(self, release: ReleaseRecord, reason: Reason) -> attestation_pb2.VerifierMessage:
        """Withdraw a release (or re-ask for its erase receipt) with a fresh nonce."""
        qualifying_data = erase_qualifying_data(secrets.token_bytes(32), release.release_id)
        revoked = self.store.revoke_release(
            release.release_id,
            reason=reason.code,
            erase_qualifying_data=qualifying_data,
            now=self.now(),
        )
        log.info("release revoked host=%s release=%s reason=%s", revoked.host_id,
                 revoked.release_id, reason.code)  # fmt: skip
        return attestation_pb2.VerifierMessage(
            revocation=attestation_pb2.Revocation(
                release_id=revoked.release_id,
                reason=common_pb2.Reason(code=reason.code, detail=reason.detail),
                qualifying_data=qualifying_data,
            )
        )

    def erase_receipt(self, host_id: str, receipt: attestation_pb2.EraseReceipt) -> None:
        """Close a revoked or expired release when its AK-signed receipt verifies."""
        release = self.store.get_release(receipt.release_id)
        if release is None or release.host_id != host_id:
            log.warning("erase receipt for an unknown release host=%s", host_id)
            return
        if release.state is ReleaseState.ERASED:
            return
        host = self.store.get_host(host_id)
        if (
            release.erase_qualifying_data is None
            or host is None
            or host.ak_public is None
            or release.state not in (ReleaseState.REVOKED, ReleaseState.EXPIRED)
        ):
            log.warning("erase receipt not asked for host=%s release=%s", host_id,
                        release.release_id)  # fmt: skip
            return
        try:
            verify_erase_receipt(
                attest=receipt.attest,
                signature=receipt.signature,
                ak=parse_tpm2b_public(host.ak_public),
                expected_qualifying_data=release.erase_qualifying_data,
            )
        except (VerificationError, ParseError) as exc:
            log.warning("erase receipt refused host=%s release=%s reason=%s", host_id,
                        release.release_id, exc)  # fmt: skip
            return
        self.store.mark_erased(release.release_id, now=self.now())
        log.info("weights erased host=%s release=%s", host_id, release.release_id)
