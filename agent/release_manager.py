"""The agent side of key release: ask for configured models after affirming verdicts,
accept released keys, fetch and decrypt the weights, keep leases, erase on revocation
or lease expiry and prove the erasure with a TPM quote.

Message handlers return at once; everything slow (TPM, downloads, decryption,
erasure) runs in background tasks so that challenges keep being answered. Only the
stream loop and those tasks write to the stream, through one ``Sender`` per stream
that serializes writes.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.acceptance import ReleaseRejectedError, open_release
from agent.collectors.binding_key import BOOT_STATE_CHANGED
from agent.collectors.tpm import TpmError
from agent.config import AgentConfig, ModelConfig
from agent.keyunwrap import wipe
from agent.logs import EventLog
from agent.releases import ReleaseBook, ReleaseRecord, erase_files, now_utc
from agent.tpmwork import TpmWorker, finish_in_thread
from agent.weights import ChannelFactory, decrypt_release, download_dir, fetch_release
from weightgate.checkpoint import Manifest
from weightgate.v1 import attestation_pb2, common_pb2

# Denied or failed models are asked for again at most this often.
RETRY_SECONDS = 30.0
# The lease timer's resolution; leases are minutes long.
LEASE_POLL_SECONDS = 1.0
# Any PCR will do for an erase receipt: the verifier checks extraData and the AK.
RECEIPT_SELECTION = {"sha256": [0]}


class Sender(Protocol):
    async def send(self, message: attestation_pb2.AgentMessage) -> None: ...


@dataclass
class _Live:
    """A release being fetched and decrypted: its keys exist only here, in memory."""

    record: ReleaseRecord
    manifest: Manifest
    keys: dict[bytes, bytearray] = field(default_factory=dict)
    abort: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task[Any] | None = None

    def wipe_keys(self) -> None:
        for key in self.keys.values():
            wipe(key)
        self.keys.clear()


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
        self._now = now
        self._retry_seconds = retry_seconds
        self._lease_poll_seconds = lease_poll_seconds
        self._models = {m.manifest_digest: m for m in config.models}
        self._book = ReleaseBook(config.state_dir)
        self._requests: dict[str, bytes] = {}  # request id -> manifest digest
        self._accepting: set[bytes] = set()  # digests whose KeyRelease is being checked
        self._not_before: dict[bytes, float] = {}  # digest -> monotonic time
        self._boot_blocked: set[bytes] = set()  # until the binding key is re-certified
        self._live: dict[str, _Live] = {}
        self._revoked: set[str] = set()  # release ids, for this process's lifetime
        self._tasks: set[asyncio.Task[None]] = set()
        self._erase_lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Load the records; erase expired releases and unfinished ones (their keys
        were in the memory of the previous process); start the lease timer."""
        self._book = await asyncio.to_thread(ReleaseBook.load, self._config.state_dir)
        now = self._now()
        for record in self._book.held():
            if not record.live(now):
                await self._erase(record.release_id, reason="lease_expired")
            elif not record.ready:
                await self._erase(record.release_id, reason="unfinished_at_start")
            else:
                self._log.info(
                    "release.resumed",
                    release_id=record.release_id,
                    lease_expires_at=record.lease_expires_at.isoformat(),
                )
        self._timer = asyncio.create_task(self._lease_timer())

    async def close(self) -> None:
        """Stop background work (agent shutdown). Plaintext of live leases stays; the
        next start erases what expired in between."""
        pending = [t for t in (self._timer, *self._tasks) if t is not None]
        for live in self._live.values():
            live.abort.set()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for live in self._live.values():
            live.wipe_keys()

    def stream_opened(self) -> None:
        # Requests sent on an earlier stream will never be answered.
        self._requests.clear()

    def binding_key_certified(self) -> None:
        if self._boot_blocked:
            self._log.info("release.unblocked", models=[d.hex() for d in self._boot_blocked])
        self._boot_blocked.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def holds(self, digest: bytes) -> bool:
        now = self._now()
        return any(r.manifest_digest == digest and r.live(now) for r in self._book.held())

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
        self._spawn(self._accept(release, self._models[digest]))

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
    ) -> _Live | None:
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
        live = _Live(
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
        if release.release_id in self._revoked:
            live.wipe_keys()  # revoked while we were unwrapping: never materialize it
            raise ReleaseRejectedError("release.revoked", "revoked before it was opened")
        if self._live.get(release.release_id) or self._book.get(release.release_id):
            live.wipe_keys()
            raise ReleaseRejectedError("release.duplicate", "release id already used")
        # From here an erasure cancels this task, so it must be known before the await.
        live.task = asyncio.current_task()
        self._live[release.release_id] = live
        await finish_in_thread(self._book.put, live.record)
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

    async def _materialize(self, live: _Live, model: ModelConfig) -> None:
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
            await self._erase(release_id, reason="release_failed")
            return
        live.wipe_keys()
        async with self._erase_lock:
            current = self._book.get(release_id)
            if current is None or current.state != "held":
                return  # erased meanwhile
            await asyncio.to_thread(self._book.put, replace(current, ready=True))
            self._live.pop(release_id, None)
        self._log.info("release.ready", release_id=release_id, target_dir=str(model.target_dir))

    # -- leases, revocation, erasure -------------------------------------------

    def on_renewal(self, renewal: attestation_pb2.LeaseRenewal) -> None:
        record = self._book.get(renewal.release_id)
        if record is None or record.state != "held":
            self._log.warning("release.renewal_unknown", release_id=renewal.release_id)
            return
        expires = renewal.lease_expires_at.ToDatetime(tzinfo=UTC)
        self._spawn(self._save_lease(renewal.release_id, expires))
        self._log.info(
            "release.lease_renewed",
            release_id=renewal.release_id,
            lease_expires_at=expires.isoformat(),
        )

    async def _save_lease(self, release_id: str, expires: datetime) -> None:
        async with self._erase_lock:
            current = self._book.get(release_id)
            if current is not None and current.state == "held":
                updated = replace(current, lease_expires_at=expires)
                await asyncio.to_thread(self._book.put, updated)

    async def _lease_timer(self) -> None:
        while True:
            now = self._now()
            for record in self._book.held():
                if record.lease_expires_at <= now:
                    self._log.warning(
                        "release.lease_expired",
                        release_id=record.release_id,
                        lease_expires_at=record.lease_expires_at.isoformat(),
                    )
                    await self._erase(record.release_id, reason="lease_expired")
            await asyncio.sleep(self._lease_poll_seconds)

    def on_revocation(self, revocation: attestation_pb2.Revocation, sender: Sender) -> None:
        self._revoked.add(revocation.release_id)
        self._spawn(self._revoke(revocation, sender))

    async def _revoke(self, revocation: attestation_pb2.Revocation, sender: Sender) -> None:
        release_id = revocation.release_id
        self._log.warning(
            "release.revoked",
            release_id=release_id,
            reason=revocation.reason.code,
            detail=revocation.reason.detail,
        )
        try:
            await self._erase(release_id, reason=revocation.reason.code or "revoked")
            worker = self._tpm
            quote = await worker.call(
                partial(
                    worker.tpm.quote,
                    ak_handle=self._config.ak_handle,
                    qualifying_data=bytes(revocation.qualifying_data),
                    selection=RECEIPT_SELECTION,
                )
            )
            await sender.send(
                attestation_pb2.AgentMessage(
                    erase_receipt=attestation_pb2.EraseReceipt(
                        release_id=release_id, attest=quote.attest, signature=quote.signature
                    )
                )
            )
            self._log.info("release.erase_receipt_sent", release_id=release_id)
        except Exception as e:  # a background task: report, never die silently
            self._log.error(
                "release.erase_receipt_failed",
                release_id=release_id,
                kind=type(e).__name__,
                detail=str(e),
            )

    async def _erase(self, release_id: str, *, reason: str) -> None:
        """Stop any work on the release, wipe its keys, delete its plaintext and
        ciphertext, record it erased. Idempotent."""
        async with self._erase_lock:
            live = self._live.pop(release_id, None)
            if live is not None:
                live.abort.set()
                live.wipe_keys()
                task = live.task
                if task is not None and task is not asyncio.current_task() and not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                live.wipe_keys()
            record = self._book.get(release_id)
            if record is None:
                self._log.warning("release.erase_unknown", release_id=release_id, reason=reason)
                return
            if record.state == "erased":
                self._log.info("release.already_erased", release_id=release_id, reason=reason)
                return
            removed = await finish_in_thread(erase_files, record, self._config.state_dir)
            await asyncio.to_thread(self._book.mark_erased, record, self._now())
            self._log.warning(
                "release.erased",
                release_id=release_id,
                reason=reason,
                files_removed=removed,
                target_dir=str(record.target_dir),
            )
