"""Verified PCK chains reused in-process, while the time stays inside what was verified.

Every quote a TDX platform produces carries the same PCK chain (PCK leaf ->
Intel SGX PCK Platform/Processor CA -> root, as PEM in the certification data),
and parsing it, verifying its two links and reading the leaf's SGX extension
costs several times the quote's own two signatures. What
:func:`~verifier.evidence.tdx.authenticate.authenticate_quote` concludes about
the chain is a function of the exact PEM bytes, the pinned root (its whole
certificate: its key signs the top link, its validity bounds the path) and the
time, and the time only through each certificate's validity: an interval, so
the path is valid at every time from the latest notBefore to the earliest
notAfter on it, and at no other.

So a success is kept under (SHA-256 of the exact PEM bytes, SHA-256 of the
root's DER) with that window, and reused for the identical bytes and root at
any time inside it. A time outside it, other bytes or another root: verified
from scratch, which also gives the real reason (``expired``, ``not_yet_valid``,
``chain_untrusted``...). Failures are never kept. The pin set the root is
checked against and the chain's prefix (``tdx.pck``) are constants of
``pki.py``, so they need no place in the key.

What is not cached: the quote signature, the QE report signature (by the
cached leaf key) and the QE binding are checked on every call; CRLs are judged
by the caller (``offline.py``) on the returned path, on every call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.evidence.lru import BoundedLru
from verifier.evidence.tdx.pck_extension import PckTcb
from verifier.evidence.tdx.pki import MAX_CHAIN_PEM_BYTES

__all__ = ["VerifiedPck", "cached_pck_count", "clear_pck_cache", "lookup_pck", "remember_pck"]

# Chains remembered, least recently used out. One PCK chain per platform (per
# TCB level, after a TCB recovery): 1024 covers a fleet of a thousand TDX hosts;
# an entry is three parsed certificates and a PckTcb (a few KiB). A miss only
# costs verifying the chain again.
_MAX_ENTRIES = 1024
_FINGERPRINT = hashes.SHA256()

_Key = tuple[bytes, bytes, frozenset[bytes]]


@dataclass(frozen=True, slots=True)
class VerifiedPck:
    """A PCK chain that verified: what authenticate_quote would conclude again.

    ``qe_key`` is the key of the first certificate sent (the one that must have
    signed the QE report); ``path`` PCK leaf -> CA -> pinned root; ``tcb`` the
    leaf's SGX extension; ``not_before`` .. ``not_after`` the times every
    certificate of ``path`` is valid.
    """

    qe_key: ec.EllipticCurvePublicKey
    path: tuple[x509.Certificate, ...]
    tcb: PckTcb
    not_before: datetime
    not_after: datetime


_CACHE: BoundedLru[_Key, VerifiedPck] = BoundedLru(_MAX_ENTRIES)


def _key(pem: bytes, root: x509.Certificate, pins: frozenset[bytes]) -> _Key:
    # The pins are part of the key: a path verified under a test root's explicit pin
    # must never stand for a call that trusts Intel's root only.
    return hashlib.sha256(pem).digest(), root.fingerprint(_FINGERPRINT), pins


def lookup_pck(
    pem: bytes, root: x509.Certificate, at: datetime, pins: frozenset[bytes]
) -> VerifiedPck | None:
    """The earlier success for exactly ``pem`` under ``root`` when it holds at ``at``.

    None (verify from scratch) for anything else: unknown bytes or root, a time
    outside the window, a naive ``at`` (verify_chain refuses it), or a PEM over
    the size bound (refused by the parser, never hashed).
    """
    if at.tzinfo is None or len(pem) > MAX_CHAIN_PEM_BYTES:
        return None
    key = _key(pem, root, pins)
    held = _CACHE.get(key)
    if held is None or not held.not_before <= at <= held.not_after:
        return None
    return held


def remember_pck(
    pem: bytes,
    root: x509.Certificate,
    pins: frozenset[bytes],
    *,
    qe_key: ec.EllipticCurvePublicKey,
    path: tuple[x509.Certificate, ...],
    tcb: PckTcb,
) -> VerifiedPck:
    """Keep a chain that has just verified (call only after every check passed)."""
    entry = VerifiedPck(
        qe_key=qe_key,
        path=path,
        tcb=tcb,
        not_before=max(c.not_valid_before_utc for c in path),
        not_after=min(c.not_valid_after_utc for c in path),
    )
    key = _key(pem, root, pins)
    _CACHE.put(key, entry)
    return entry


def clear_pck_cache() -> None:
    """Forget every verified PCK chain (benchmarks measuring cold verification; tests)."""
    _CACHE.clear()


def cached_pck_count() -> int:
    """How many chains are held (tests)."""
    return len(_CACHE)
