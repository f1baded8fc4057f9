"""Good OCSP responses for every non-root certificate of the fleet's chains.

Each response is signed by the certificate's issuer itself (RFC 6960 4.2.2.2
item 2: no delegated responder to configure), names it by key hash, and is
written where the verifier's offline OCSP cache looks for it:
``<sha256 of the issuer's SubjectPublicKeyInfo>-<serial in hex>.der``
(verifier/evidence/nvidia/ocsp_cache.py; serials repeat across CAs, issuer
keys do not).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from devsim.nvidia.files import FILES
from devsim.nvidia.pki import Issued

# thisUpdate a little before the fleet was made, so that a verifier whose clock
# lags by minutes does not see a response from the future.
THIS_UPDATE_BACKDATE = timedelta(minutes=5)


def cache_name(certificate: x509.Certificate, issuer: x509.Certificate) -> str:
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"{hashlib.sha256(spki).hexdigest()}-{certificate.serial_number:x}.der"


def good_response(issued: Issued, *, now: datetime, next_update: datetime) -> bytes:
    """DER of a successful response saying ``issued.certificate`` is good."""
    issuer = issued.issuer
    if issuer is None:
        raise ValueError("a root has no OCSP answer (RFC 6960: it is trusted by configuration)")
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=issued.certificate,
            issuer=issuer.certificate,
            algorithm=hashes.SHA384(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=now - THIS_UPDATE_BACKDATE,
            next_update=next_update,
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.certificate)
        .sign(issuer.key, hashes.SHA384())
    )
    return response.public_bytes(serialization.Encoding.DER)


def write_responses(
    directory: Path, chain: Iterable[Issued], *, now: datetime, next_update: datetime
) -> int:
    """A response for every certificate of ``chain`` that has an issuer; how many written."""
    written = 0
    for issued in chain:
        if issued.issuer is None:
            continue
        name = cache_name(issued.certificate, issued.issuer.certificate)
        FILES.write_public(
            directory / name, good_response(issued, now=now, next_update=next_update)
        )
        written += 1
    return written
