"""Verified VCEK/VLEK chains reused in-process, while the time stays inside what was verified.

A chip's reports all come with the same VCEK (per TCB level) and the same
ASK/ARK, and checking them (decoding the VCEK's AMD extensions, two RSA-4096
PSS verifications, validity and CA checks) costs about half the report's own
P-384 signature. What :func:`~verifier.evidence.snp.authenticate.authenticate_report`
concludes about the chain (steps 1 and 2) is a function of the key
certificate, the intermediates offered (in order: the first one named as the
leaf's issuer is the one used), the pinned ARKs, and the time, and the time
only through each certificate's validity: an interval, so the path is valid at
every time from the latest notBefore to the earliest notAfter of leaf,
intermediate and ARK, and at no other.

So a success is kept under (SHA-256 of the key certificate's DER, SHA-256 of
each intermediate's DER in the order given, each pinned ARK's SHA-256 by
product line) with that window, and reused for identical inputs at any time
inside it. A time outside it or any other input: verified from scratch, which
also gives the real reason. Failures are never kept. The report's signature,
SIGNING_KEY, CPUID product, TCB and CHIP_ID checks run on every call.

Revocation is deliberately not part of what is kept: a chain verified before a
CRL listing its ASK arrived must not outlive that CRL. authenticate_report checks
the CRLs of each call (crl.check_revocation) against whatever chain it has,
looked up here or verified afresh, so an entry only ever saves the signature
and validity work, never the revocation check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from verifier.evidence.lru import BoundedLru
from verifier.evidence.snp.certs import AmdKeyCert
from verifier.evidence.snp.chain import AmdRoots, VerifiedChain

__all__ = [
    "cached_chain_count",
    "clear_chain_cache",
    "lookup_chain",
    "remember_chain",
]

# Chains remembered, least recently used out. One VCEK per chip and TCB level
# (VLEKs are per cloud provider): 4096 covers a fleet of a few thousand SNP
# hosts through a TCB update; an entry is a decoded AmdKeyCert (its certificate,
# about 1.4 KB) and a few small values. A miss only costs verifying again.
_MAX_ENTRIES = 4096
# Certificates offered beyond this are not hashed for a key (verified uncached);
# load_certificates bounds a bundle at 8.
_MAX_INTERMEDIATES = 8
_FINGERPRINT = hashes.SHA256()

_Key = tuple[bytes, tuple[bytes, ...], tuple[tuple[str, bytes], ...]]


@dataclass(frozen=True, slots=True)
class _Verified:
    key: AmdKeyCert
    intermediate_index: int  # which of the intermediates offered is the ASK/ASVK
    not_before: datetime
    not_after: datetime


_CACHE: BoundedLru[_Key, _Verified] = BoundedLru(_MAX_ENTRIES)


def _key(
    key_certificate: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: AmdRoots,
) -> _Key:
    return (
        key_certificate.fingerprint(_FINGERPRINT),
        tuple(c.fingerprint(_FINGERPRINT) for c in intermediates),
        tuple(sorted((line.value, pin) for line, pin in roots.fingerprints.items())),
    )


def lookup_chain(
    key_certificate: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: AmdRoots,
    at: datetime,
) -> VerifiedChain | None:
    """What read_key_cert + verify_key_chain concluded for identical inputs, if it holds at ``at``.

    The result holds the caller's own certificate objects (byte-identical to the
    verified ones). None (verify from scratch) for anything else, for a naive
    ``at`` (verify_key_chain refuses it) and for over-long intermediate lists.
    """
    if at.tzinfo is None or len(intermediates) > _MAX_INTERMEDIATES:
        return None
    cache_key = _key(key_certificate, intermediates, roots)
    held = _CACHE.get(cache_key)
    if held is None or not held.not_before <= at <= held.not_after:
        return None
    key = held.key
    if key.certificate is not key_certificate:
        key = replace(key, certificate=key_certificate)
    return VerifiedChain(
        key=key,
        intermediate=intermediates[held.intermediate_index],
        ark=roots.arks[key.product],
        verified_at=at,
    )


def remember_chain(
    key_certificate: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: AmdRoots,
    chain: VerifiedChain,
) -> None:
    """Keep a chain verify_key_chain has just verified from these exact inputs."""
    if len(intermediates) > _MAX_INTERMEDIATES:
        return
    index = next((i for i, c in enumerate(intermediates) if c is chain.intermediate), None)
    if index is None:  # not one of the objects offered: nothing to point at
        return
    path = (chain.key.certificate, chain.intermediate, chain.ark)
    entry = _Verified(
        key=chain.key,
        intermediate_index=index,
        not_before=max(c.not_valid_before_utc for c in path),
        not_after=min(c.not_valid_after_utc for c in path),
    )
    cache_key = _key(key_certificate, intermediates, roots)
    _CACHE.put(cache_key, entry)


def clear_chain_cache() -> None:
    """Forget every verified chain (benchmarks measuring cold verification; tests)."""
    _CACHE.clear()


def cached_chain_count() -> int:
    """How many chains are held (tests)."""
    return len(_CACHE)
