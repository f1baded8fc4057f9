"""Verified RIMs reused in-process, while the time stays inside what was verified.

Verifying a RIM (XML-DSig with signxml, its signing chain) costs milliseconds,
and every GPU of a model asks for the same two RIMs every round. The result is
a function of the exact XML bytes, the pinned roots and the time: so a
VerifiedRim is reused for the same bytes and roots at any ``at`` between the
time it was verified and the earliest expiry on its signing path (validity is
an interval, so every such time is inside it). Outside that window, for other
bytes or other roots, it is verified again; failures are never remembered.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from verifier.evidence.nvidia.rim import VerifiedRim, verify_rim

_MAX_ENTRIES = 256
_Key = tuple[bytes, tuple[bytes, ...]]
_CACHE: OrderedDict[_Key, VerifiedRim] = OrderedDict()
_LOCK = threading.Lock()


def verify_rim_cached(
    xml_bytes: bytes, *, pinned_roots: Sequence[x509.Certificate], at: datetime
) -> VerifiedRim:
    """:func:`verify_rim`, or its earlier result when that still holds at ``at``."""
    roots = tuple(sorted(root.fingerprint(hashes.SHA256()) for root in pinned_roots))
    key = (hashlib.sha256(xml_bytes).digest(), roots)
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None and cached.verified_at <= at <= cached.valid_until:
            _CACHE.move_to_end(key)
            return cached
    verified = verify_rim(xml_bytes, pinned_roots=pinned_roots, at=at)
    with _LOCK:
        _CACHE[key] = verified
        _CACHE.move_to_end(key)
        while len(_CACHE) > _MAX_ENTRIES:
            _CACHE.popitem(last=False)
    return verified


def clear_rim_cache() -> None:
    """Forget every reused RIM (benchmarks measuring cold verification; tests)."""
    with _LOCK:
        _CACHE.clear()
