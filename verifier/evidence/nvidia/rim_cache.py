"""Verified RIMs reused in-process, while the time stays inside what was verified.

Verifying a RIM (XML-DSig with signxml, its signing chain) costs milliseconds,
and every GPU of a model asks for the same two RIMs every round. The result is
a function of the exact XML bytes, the pinned roots and the time: so a
VerifiedRim is reused for the same bytes and roots at any ``at`` between the
time it was verified and the earliest expiry on its signing path (validity is
an interval, so every such time is inside it). Outside that window, for other
bytes or other roots, it is verified again; failures are never remembered.

The signing path OCSP walks for a RIM (:func:`signing_path_cached`) is reused
the same way: under the digest of the exact bytes and the pinned roots, at any
time inside the validity of every certificate on the path (path building uses
no time, so that validity is the only thing the time can change).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from verifier.evidence.lru import BoundedLru
from verifier.evidence.nvidia.rim import (
    VerifiedRim,
    keyinfo_certificates,
    parse_rim_xml,
    verify_rim,
)
from verifier.evidence.nvidia.rim_chain import verify_signing_chain

__all__ = ["clear_rim_cache", "signing_path_cached", "verify_rim_cached"]

# RIMs (and signing paths) remembered, least recently used out: a fleet runs a
# handful of driver versions and VBIOS builds, two RIMs each per GPU model, so
# 256 is far more than in use at once; an entry is the parsed RIM (tens of KiB).
_MAX_ENTRIES = 256
_Key = tuple[bytes, tuple[bytes, ...]]
_CACHE: BoundedLru[_Key, VerifiedRim] = BoundedLru(_MAX_ENTRIES)
# (earliest, latest) time every certificate of the path is valid, and the path.
_PATHS: BoundedLru[_Key, tuple[datetime, datetime, tuple[x509.Certificate, ...]]] = BoundedLru(
    _MAX_ENTRIES
)


def _key(xml_bytes: bytes, pinned_roots: Sequence[x509.Certificate]) -> _Key:
    roots = tuple(sorted(root.fingerprint(hashes.SHA256()) for root in pinned_roots))
    return hashlib.sha256(xml_bytes).digest(), roots


def verify_rim_cached(
    xml_bytes: bytes, *, pinned_roots: Sequence[x509.Certificate], at: datetime
) -> VerifiedRim:
    """:func:`verify_rim`, or its earlier result when that still holds at ``at``."""
    key = _key(xml_bytes, pinned_roots)
    cached = _CACHE.get(key)
    if cached is not None and cached.verified_at <= at <= cached.valid_until:
        return cached
    verified = verify_rim(xml_bytes, pinned_roots=pinned_roots, at=at)
    _CACHE.put(key, verified)
    return verified


def signing_path_cached(
    xml_bytes: bytes, *, pinned_roots: Sequence[x509.Certificate], at: datetime
) -> tuple[x509.Certificate, ...]:
    """A RIM's verified KeyInfo path, leaf → pinned root, or its earlier result at ``at``.

    Parse, KeyInfo certificates and :func:`verify_signing_chain` (VerificationError
    on failure, never remembered).
    """
    key = _key(xml_bytes, pinned_roots)
    cached = _PATHS.get(key)
    if cached is not None and cached[0] <= at <= cached[1]:
        return cached[2]
    done: list[str] = []
    ders = keyinfo_certificates(parse_rim_xml(xml_bytes, done), done)
    path = verify_signing_chain(ders, pinned_roots=pinned_roots, at=at, done=done).certificates
    earliest = max(c.not_valid_before_utc for c in path)
    _PATHS.put(key, (earliest, min(c.not_valid_after_utc for c in path), path))
    return path


def clear_rim_cache() -> None:
    """Forget every reused RIM and signing path (benchmarks measuring cold verification; tests)."""
    _CACHE.clear()
    _PATHS.clear()
