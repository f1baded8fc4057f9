"""The agent side of key release: ask for configured models after affirming verdicts,
accept released keys (unwrapping them with the TPM), fetch and decrypt the weights.
Holding the accepted releases (leases, revocation, erasure and its receipt) is
:mod:`agent.release_keeper`'s job; ``ReleaseManager`` is the one entry point for
both.

Message handlers return at once; everything slow (TPM, downloads, decryption,
erasure) runs in background tasks so that challenges keep being answered. Only the
stream loop and those tasks write to the stream, through one ``Sender`` per stream
that serializes writes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.acceptance import ReleaseRejectedError, open_release
from agent.collectors.binding_key import BOOT_STATE_CHANGED
from agent.collectors.tpm import TpmError
from agent.config import AgentConfig, ModelConfig
from agent.logs import EventLog
from agent.release_keeper import (
    LEASE_POLL_SECONDS,
    RECEIPT_SELECTION,
    LiveRelease,
    ReleaseKeeper,
    Sender,
)
from agent.releases import ReleaseRecord, now_utc
from agent.tpmwork import TpmWorker, finish_in_thread
from agent.weights import ChannelFactory, decrypt_release, download_dir, fetch_release
from weightgate.v1 import attestation_pb2, common_pb2

__all__ = [
    "LEASE_POLL_SECONDS",
    "RECEIPT_SELECTION",
    "RETRY_SECONDS",
    "ReleaseManager",
    "Sender",
]

# Denied or failed models are asked for again at most this often.
RETRY_SECONDS = 30.0


class ReleaseManager:
    def __init__(
        self,
        config: AgentConfig,
        *,
        tpm: TpmWorker,
        log: EventLog,
        channels: ChannelFactory,
        signing_key: Ed25519PublicKey | None,
        now: Callable[[], datetime] = now_utc,
        retry_seconds: float = RETRY_SECONDS,
        lease_poll_seconds: float = LEASE_POLL_SECONDS,
    ) -> None:
        self._config = config
        self._tpm = tpm
        self._log = log
        self._channels = channels
        self._signing_key = signing_key
        self._retry_seconds = retry_seconds
        self._models = {m.manifest_digest: m for m in config.models}
        self._keeper = ReleaseKeeper(
            config, tpm=tpm, log=log, now=now, lease_poll_seconds=lease_poll_seconds
        )
        self._requests: dict[str, bytes] = {}  # request id -> manifest digest
        self._accepting: set[bytes] = set()  # digests whose KeyRelease is being checked
        self._not_before: dict[bytes, float] = {}  # digest -> monotonic time
        self._boot_blocked: set[bytes] = set()  # until the binding key is re-certified

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Load the records; erase expired releases and unfinished ones (their keys
        were in the memory of the previous process); start the lease timer."""
        await self._keeper.start()

    async def close(self) -> None:
        """Stop background work (agent shutdown). Plaintext of live leases stays; the
        next start erases what expired in between."""
        await self._keeper.close()

    def stream_opened(self) -> None:
        # Requests sent on an earlier stream will never be answered.
        self._requests.clear()

    def binding_key_certified(self) -> None:
        if self._boot_blocked:
            self._log.info("release.unblocked", models=[d.hex() for d in self._boot_blocked])
        self._boot_blocked.clear()

    def holds(self, digest: bytes) -> bool:
        return self._keeper.holds(digest)

    # -- verdicts and requests -------------------------------------------------

    async def on_verdict(self, tier: int, sender: Sender) -> None:
        if tier != common_pb2.TIER_AFFIRMING:
            return
        for digest in self._models:
            if (
                self.holds(digest)
                or digest in self._requests.values()
                or digest in self._accepting
                or digest in self._boot_blocked
                or time.monotonic() < self._not_before.get(digest, 0.0)
            ):
                continue
            request_id = str(uuid.uuid4())
            self._requests[request_id] = digest
            await sender.send(
                attestation_pb2.AgentMessage(
                    release_request=attestation_pb2.ReleaseRequest(
                        request_id=request_id, manifest_digest=digest
                    )
                )
            )
            self._log.info("release.requested", request_id=request_id, manifest_digest=digest.hex())

    def _retry_later(self, digest: bytes) -> None:
        self._not_before[digest] = time.monotonic() + self._retry_seconds

    def on_denied(self, denied: attestation_pb2.ReleaseDenied) -> None:
        digest = self._requests.pop(denied.request_id, bytes(denied.manifest_digest))
        self._retry_later(digest)
        self._log.warning(
            "release.denied",
            request_id=denied.request_id,
            manifest_digest=digest.hex(),
            reasons=[{"code": r.code, "detail": r.detail} for r in denied.reasons],
            retry_in_seconds=self._retry_seconds,
        )

    # -- accepting a release ---------------------------------------------------

    def on_key_release(self, release: attestation_pb2.KeyRelease) -> None:
        digest = self._requests.pop(release.request_id, None)
        if digest is None:
            self._log.warning(
                "release.unexpected", request_id=release.request_id, release_id=release.release_id
            )
            return
        self._accepting.add(digest)
        self._keeper.spawn(self._accept(release, self._models[digest]))

    async def _accept(self, release: attestation_pb2.KeyRelease, model: ModelConfig) -> None:
        digest = model.manifest_digest
        try:
            live = await self._unwrap(release, model)
        except ReleaseRejectedError as e:
            self._retry_later(digest)
            self._log.error(
                "release.rejected", release_id=release.release_id, code=e.code, detail=str(e)
            )
            return
        except asyncio.CancelledError:
            raise
        except TpmError as e:
            if str(e) == BOOT_STATE_CHANGED:
                self._boot_blocked.add(digest)
                self._log.error(
                    "release.boot_state_changed", release_id=release.release_id, detail=str(e)
                )
            else:
                self._retry_later(digest)
                self._log.error("release.tpm_failed", release_id=release.release_id, detail=str(e))
            return
        except Exception as e:  # a background task: report, never die silently
            self._retry_later(digest)
            self._log.error(
                "release.error",
                release_id=release.release_id,
                kind=type(e).__name__,
                detail=str(e),
            )
            return
        finally:
            self._accepting.discard(digest)
        if live is None:
            return
        try:
            await self._materialize(live, model)
        finally:
            live.wipe_keys()

    async def _unwrap(
        self, release: attestation_pb2.KeyRelease, model: ModelConfig
    ) -> LiveRelease | None:
        """Open the release (``agent.acceptance.open_release``), then record it held."""
        if self._signing_key is None:
            raise ReleaseRejectedError(
                "release.no_signing_key", "no verifier_signing_key configured"
            )
        opened = await open_release(
            release,
            expected_digest=model.manifest_digest,
            host_id=self._config.host_id,
            state_dir=self._config.state_dir,
            tpm=self._tpm,
            signing_key=self._signing_key,
        )
        manifest = opened.manifest
        live = LiveRelease(
            record=ReleaseRecord(
                release_id=release.release_id,
                manifest_digest=model.manifest_digest,
                target_dir=model.target_dir,
                lease_expires_at=release.lease_expires_at.ToDatetime(tzinfo=UTC),
                state="held",
                files=tuple(f.path for f in manifest.files),
            ),
            manifest=manifest,
            keys=opened.keys,
        )
        if self._keeper.was_revoked(release.release_id):
            live.wipe_keys()  # revoked while we were unwrapping: never materialize it
            raise ReleaseRejectedError("release.revoked", "revoked before it was opened")
        if self._keeper.knows(release.release_id):
            live.wipe_keys()
            raise ReleaseRejectedError("release.duplicate", "release id already used")
        # From here an erasure cancels this task, so it must be known before the await.
        live.task = asyncio.current_task()
        await self._keeper.hold(live)
        self._log.info(
            "release.accepted",
            release_id=release.release_id,
            manifest_digest=model.manifest_digest.hex(),
            model=manifest.model_name,
            version=manifest.model_version,
            files=len(manifest.files),
            lease_expires_at=live.record.lease_expires_at.isoformat(),
        )
        return live

    async def _materialize(self, live: LiveRelease, model: ModelConfig) -> None:
        release_id = live.record.release_id
        manifest = live.manifest
        digest = model.manifest_digest
        encrypted = download_dir(self._config.state_dir, digest)
        try:
            await fetch_release(
                self._channels,
                manifest=manifest,
                manifest_digest=digest,
                directory=encrypted,
                log=self._log,
                release_id=release_id,
            )
            await finish_in_thread(
                decrypt_release, manifest, encrypted, model.target_dir, live.keys, live.abort
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:  # download gave up, bad ciphertext, disk full...
            self._retry_later(digest)
            code = getattr(e, "code", type(e).__name__)
            self._log.error("release.failed", release_id=release_id, code=code, detail=str(e))
            live.wipe_keys()
            await self._keeper.erase(release_id, reason="release_failed")
            return
        live.wipe_keys()
        if not await self._keeper.mark_ready(release_id):
            return  # erased meanwhile
        self._log.info("release.ready", release_id=release_id, target_dir=str(model.target_dir))

    # -- leases, revocation, erasure: the keeper's job ---------------------------

    def on_renewal(self, renewal: attestation_pb2.LeaseRenewal) -> None:
        self._keeper.on_renewal(renewal)

    def on_revocation(self, revocation: attestation_pb2.Revocation, sender: Sender) -> None:
        self._keeper.on_revocation(revocation, sender)
