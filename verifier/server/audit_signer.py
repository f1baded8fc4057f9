"""The verifier signs checkpoints of its audit log: on request, and periodically.

Before signing, the newest stored checkpoint is checked against the log: its
record must still carry its head hash. Editing a record and recomputing the
chain changes that hash, so the verifier refuses to sign (and so to vouch
for) a history that was rewritten under an earlier checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from verifier.audit.chain import AuditChainBroken
from verifier.audit.checkpoint import (
    SignedCheckpoint,
    parse_statement,
    sign_checkpoint,
)
from verifier.keystore import KeyStore
from verifier.store import Store

log = logging.getLogger(__name__)


def _check_latest(store: Store) -> int:
    """The tree size of the newest checkpoint (0 if none), once it is checked to still hold."""
    latest = store.latest_audit_checkpoint()
    if latest is None:
        return 0
    statement = parse_statement(latest.statement)
    if statement.tree_size == 0:
        return 0
    size = statement.tree_size
    record = next(iter(store.audit_records(after_seq=size - 1, limit=1)), None)
    if record is None or record.seq != size:
        raise AuditChainBroken(size, f"missing: the newest checkpoint covers {size} records")
    if record.hash != statement.head_hash:
        raise AuditChainBroken(size, "hash differs from the newest checkpoint's: rewritten")
    return size


def sign_audit_head(store: Store, keystore: KeyStore, *, now: datetime) -> SignedCheckpoint:
    """Sign and keep a checkpoint of the current chain head.

    Raises AuditChainBroken, signing nothing, when the log no longer matches
    the newest checkpoint.
    """
    _check_latest(store)
    return _sign(store, keystore, now)


def _sign(store: Store, keystore: KeyStore, now: datetime) -> SignedCheckpoint:
    # One read of the head row: seq and hash describe the same record.
    tree_size, head_hash = store.audit_head()
    checkpoint = sign_checkpoint(
        tree_size=tree_size,
        head_hash=head_hash,
        signed_at=now,
        sign=keystore.sign,
        public_key=keystore.signing_public_key(),
    )
    store.add_audit_checkpoint(checkpoint)
    log.info("signed an audit checkpoint of %d records", tree_size)
    return checkpoint


def checkpoint_if_moved(
    store: Store, keystore: KeyStore, *, now: datetime
) -> SignedCheckpoint | None:
    """Like :func:`sign_audit_head`, but only when records were added since the newest one."""
    covered = _check_latest(store)
    if store.audit_head()[0] <= covered:
        return None
    return _sign(store, keystore, now)


async def sign_checkpoints_periodically(
    store: Store, keystore: KeyStore, *, now: Callable[[], datetime], period: float
) -> None:
    """Every ``period`` seconds, checkpoint the head if it moved; runs until cancelled.

    The first round runs at once, so a restarted verifier vouches for what it
    holds. A failed round is logged and the next one tried: the server keeps
    serving, and a rewritten log keeps being reported rather than signed.
    """
    while True:
        try:
            await asyncio.to_thread(checkpoint_if_moved, store, keystore, now=now())
        except AuditChainBroken as exc:
            log.error("not signing an audit checkpoint: the log no longer matches: %s", exc)
        except Exception:  # a failed round must not end the signing
            log.exception("audit checkpoint failed")
        await asyncio.sleep(period)
