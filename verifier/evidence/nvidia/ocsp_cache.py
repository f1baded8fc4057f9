"""A cache of OCSP responses, so that verifying GPU evidence needs no network.

Keyed by (SHA-256 of the issuer's public key, serial): serials are unique only
per issuer, and keying on the key rather than the issuer's name keeps two CAs
with the same name apart. Only responses that :func:`check_ocsp` accepted at
insertion are stored, and for each key the one with the newest thisUpdate wins,
so a replayed older "good" can never displace a newer "revoked". Entries are
re-checked in full when used (freshness depends on the time of use).

With a directory, entries also live on disk as ``<keyhash>-<serial>.der``,
written atomically, so an air-gapped verifier can be filled by copying files in
(an operator carries responses fetched elsewhere) and survives restarts.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509 import ocsp as x509_ocsp

from verifier.evidence.nvidia.cert_digests import spki_sha256
from verifier.evidence.nvidia.ocsp import MAX_RESPONSE_BYTES, OcspPolicy, check_ocsp

CacheKey = tuple[bytes, int]


def cache_key(certificate: x509.Certificate, issuer: x509.Certificate) -> CacheKey:
    """(SHA-256 of the issuer's SubjectPublicKeyInfo, certificate serial)."""
    # spki_sha256 remembers the digest per issuer DER: every GPU asks for the same CAs.
    return spki_sha256(issuer), certificate.serial_number


def _this_update(response_der: bytes, serial: int) -> datetime | None:
    """Newest thisUpdate the response gives for ``serial``; None when unusable."""
    try:
        response = x509_ocsp.load_der_ocsp_response(response_der)
        if response.response_status is not x509_ocsp.OCSPResponseStatus.SUCCESSFUL:
            return None
        times = [s.this_update_utc for s in response.responses if s.serial_number == serial]
    except ValueError:
        return None
    return max(times, default=None)


class OcspCache:
    """Newest verified response per (issuer key, serial), in memory and optionally on disk."""

    def __init__(self, *, directory: Path | None = None) -> None:
        self._directory = directory
        self._entries: dict[CacheKey, tuple[datetime, bytes]] = {}

    def _path(self, key: CacheKey) -> Path | None:
        if self._directory is None:
            return None
        return self._directory / f"{key[0].hex()}-{key[1]:x}.der"

    def _entry(self, key: CacheKey) -> tuple[datetime, bytes] | None:
        entry = self._entries.get(key)
        path = self._path(key)
        if entry is not None or path is None or not path.is_file():
            return entry
        if path.stat().st_size > MAX_RESPONSE_BYTES:
            return None  # not ours: never read an unbounded file from a shared directory
        der = path.read_bytes()
        this_update = _this_update(der, key[1])
        if this_update is None:
            return None
        self._entries[key] = (this_update, der)
        return self._entries[key]

    def get(self, certificate: x509.Certificate, issuer: x509.Certificate) -> bytes | None:
        """The stored response for ``certificate``, unchecked: the caller runs check_ocsp."""
        entry = self._entry(cache_key(certificate, issuer))
        return None if entry is None else entry[1]

    def put(
        self,
        response_der: bytes,
        *,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        at: datetime,
        policy: OcspPolicy,
    ) -> bool:
        """Store ``response_der`` if it verifies and is newer than what is stored.

        Raises VerificationError (from check_ocsp) when the response is not valid
        at ``at``; returns False when a response at least as new is already held.
        Revoked and unknown answers are stored too: they are the newest truth.
        """
        status = check_ocsp(
            response_der,
            certificate=certificate,
            issuer=issuer,
            at=at,
            max_age=policy.max_age,
            trusted_responder_roots=policy.trusted_responder_roots,
            stale_grace=policy.stale_grace,
            clock_skew=policy.clock_skew,
        )
        key = cache_key(certificate, issuer)
        held = self._entry(key)
        if held is not None and held[0] >= status.this_update:
            return False
        self._entries[key] = (status.this_update, response_der)
        path = self._path(key)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a reader never sees half a response.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ocsp-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(response_der)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return True
