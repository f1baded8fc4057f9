"""The agent's held releases: their records, leases and in-memory keys. Renews
leases, erases a release on revocation or lease expiry and proves the erasure
with a TPM quote.

:class:`agent.release_manager.ReleaseManager` accepts releases and hands them
here; both write to the stream only through a ``Sender`` and run their slow work
in tasks started by :meth:`ReleaseKeeper.spawn`, so that one ``close`` stops all.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from agent.config import AgentConfig
from agent.keyunwrap import wipe
from agent.logs import EventLog
from agent.releases import ReleaseBook, ReleaseRecord, erase_files, now_utc
from agent.tpmwork import TpmWorker, finish_in_thread
from weightgate.checkpoint import Manifest
from weightgate.v1 import attestation_pb2

# The lease timer's resolution; leases are minutes long.
LEASE_POLL_SECONDS = 1.0
# Any PCR will do for an erase receipt: the verifier checks extraData and the AK.
RECEIPT_SELECTION = {"sha256": [0]}


class Sender(Protocol):
    async def send(self, message: attestation_pb2.AgentMessage) -> None: ...


@dataclass
class LiveRelease:
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


class ReleaseKeeper:
    def __init__(
        self,
        config: AgentConfig,
        *,
        tpm: TpmWorker,
        log: EventLog,
        now: Callable[[], datetime] = now_utc,
        lease_poll_seconds: float = LEASE_POLL_SECONDS,
    ) -> None:
        self._config = config
        self._tpm = tpm
        self._log = log
        self._now = now
        self._lease_poll_seconds = lease_poll_seconds
        self._book = ReleaseBook(config.state_dir)
        self._live: dict[str, LiveRelease] = {}
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
                await self.erase(record.release_id, reason="lease_expired")
            elif not record.ready:
                await self.erase(record.release_id, reason="unfinished_at_start")
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

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def holds(self, digest: bytes) -> bool:
        now = self._now()
        return any(r.manifest_digest == digest and r.live(now) for r in self._book.held())

    # -- taking over accepted releases -------------------------------------------

    def was_revoked(self, release_id: str) -> bool:
        return release_id in self._revoked

    def knows(self, release_id: str) -> bool:
        """Whether the release id is in use, in memory or on record."""
        return bool(self._live.get(release_id) or self._book.get(release_id))

    async def hold(self, live: LiveRelease) -> None:
        """Keep an accepted release in memory (an erasure from now on finds it) and
        record it held."""
        self._live[live.record.release_id] = live
        await finish_in_thread(self._book.put, live.record)

    async def mark_ready(self, release_id: str) -> bool:
        """Record a materialized release ready and drop it from memory; False if it
        was erased meanwhile."""
        async with self._erase_lock:
            current = self._book.get(release_id)
            if current is None or current.state != "held":
                return False
            await asyncio.to_thread(self._book.put, replace(current, ready=True))
            self._live.pop(release_id, None)
        return True

    # -- leases, revocation, erasure -------------------------------------------

    def on_renewal(self, renewal: attestation_pb2.LeaseRenewal) -> None:
        record = self._book.get(renewal.release_id)
        if record is None or record.state != "held":
            self._log.warning("release.renewal_unknown", release_id=renewal.release_id)
            return
        expires = renewal.lease_expires_at.ToDatetime(tzinfo=UTC)
        self.spawn(self._save_lease(renewal.release_id, expires))
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
                    await self.erase(record.release_id, reason="lease_expired")
            await asyncio.sleep(self._lease_poll_seconds)

    def on_revocation(self, revocation: attestation_pb2.Revocation, sender: Sender) -> None:
        self._revoked.add(revocation.release_id)
        self.spawn(self._revoke(revocation, sender))

    async def _revoke(self, revocation: attestation_pb2.Revocation, sender: Sender) -> None:
        release_id = revocation.release_id
        self._log.warning(
            "release.revoked",
            release_id=release_id,
            reason=revocation.reason.code,
            detail=revocation.reason.detail,
        )
        try:
            await self.erase(release_id, reason=revocation.reason.code or "revoked")
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

    async def erase(self, release_id: str, *, reason: str) -> None:
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
