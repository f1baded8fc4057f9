"""Refusing revoked client certificates: the client CA's CRL, checked on every call.

gRPC has verified a caller's chain to the client CA before a handler runs, but
knows nothing of revocation, so without this a person who has left keeps
working access until their certificate expires. ``[verifier.tls] client_crl``
names a CRL signed by the client CA (``weightgate pki revoke`` writes one);
:meth:`ClientRevocationList.check` runs inside every authorization
(verifier.authz.Authorizer.require), for operators and agents alike.

The file is re-read when it changes (device, inode, size or mtime), so a
revocation takes effect at the next call without a restart; otherwise the
parsed list is cached and a call costs one ``stat``. Every way the CRL can be
unusable refuses every call with a reason, never admits one: unreadable,
unparsable, not signed by the client CA, without a next update, past its next
update (stale), or issued for another issuer than the caller's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from verifier.identity import Identity

log = logging.getLogger(__name__)

# A CRL of a few thousand revocations is well under 1 MiB; this bounds what a
# wrong path (a log file, a device) can make the verifier read on every change.
MAX_CRL_BYTES = 8 * 1024 * 1024
# Clocks of the CA's host and the verifier may differ a little.
CLOCK_SKEW = timedelta(minutes=5)
# What may sign a CRL (what is_signature_valid accepts, less the post-quantum kinds).
_ISSUER_KEYS = (
    rsa.RSAPublicKey,
    dsa.DSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)
_REFUSING = "refusing every call until it is fixed"


class RevocationError(Exception):
    """A call refused by the revocation check; the message starts with a stable code
    (``authz.revoked``, or ``authz.crl_unreadable`` / ``authz.crl_invalid`` /
    ``authz.crl_stale`` when the CRL itself is unusable)."""


def reason_name(flag: x509.ReasonFlags) -> str:
    """A CRL entry's reason as `pki revoke --reason` spells it (key_compromise → key-compromise)."""
    return flag.name.replace("_", "-")


@dataclass(frozen=True)
class _Crl:
    """One version of the CRL file, parsed and verified, or why it is unusable."""

    version: tuple[int, ...] | None  # (dev, inode, size, mtime): reload when it changes
    problem: str | None = None
    issuer: x509.Name | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    revoked: Mapping[int, str] | None = None  # serial → reason


class ClientRevocationList:
    """The CRL at ``path``, which must be signed by a certificate in the ``client_ca`` file."""

    def __init__(self, path: Path, client_ca: Path, *, now: Callable[[], datetime]) -> None:
        self._path = path
        self._issuers = x509.load_pem_x509_certificates(client_ca.read_bytes())
        self._now = now
        self._crl: _Crl | None = None

    def check(self, cert: x509.Certificate, identity: Identity) -> None:
        """Raise :class:`RevocationError` unless ``cert`` is known not to be revoked.

        Checks, in order: the CRL file is readable and parses (re-read if it
        changed); it is signed by the client CA; it has a next update that has
        not passed and a this-update not in the future; it is the CRL of the
        certificate's issuer; the certificate's serial is not on it.
        """
        crl = self._current()
        if crl.problem is not None:
            raise RevocationError(crl.problem)
        assert crl.next_update and crl.this_update and crl.revoked is not None
        now = self._now()
        if now > crl.next_update:
            raise RevocationError(
                f"authz.crl_stale: the client CRL {self._path} expired at "
                f"{crl.next_update:%Y-%m-%dT%H:%M:%SZ} (re-sign it: `weightgate pki crl`); "
                + _REFUSING
            )
        if crl.this_update > now + CLOCK_SKEW:
            raise RevocationError(
                f"authz.crl_invalid: the client CRL {self._path} is dated in the future "
                f"({crl.this_update:%Y-%m-%dT%H:%M:%SZ}); " + _REFUSING
            )
        if cert.issuer != crl.issuer:
            raise RevocationError(
                f"authz.crl_invalid: the client CRL does not cover {identity.name!r}'s issuer "
                f"{cert.issuer.rfc4514_string()!r}"
            )
        reason = crl.revoked.get(cert.serial_number)
        if reason is not None:
            raise RevocationError(
                f"authz.revoked: {identity.name!r} (serial {cert.serial_number:x}) "
                f"was revoked: {reason}"
            )

    def describe(self) -> str:
        """One line for the log: what the CRL holds now, or why every call is refused."""
        crl = self._current()
        if crl.problem is not None:
            return crl.problem
        stale = crl.next_update is not None and self._now() > crl.next_update
        return self._summary(crl) + (" - STALE: every call is refused" if stale else "")

    def _summary(self, crl: _Crl) -> str:
        assert crl.revoked is not None and crl.next_update is not None
        return (
            f"client CRL {self._path}: {len(crl.revoked)} revoked, "
            f"next update {crl.next_update:%Y-%m-%dT%H:%M:%SZ}"
        )

    def _current(self) -> _Crl:
        try:
            st = os.stat(self._path)
        except OSError as exc:
            crl = self._unusable(None, f"cannot read it: {exc.strerror}")
        else:
            version = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if self._crl is not None and self._crl.version == version:
                return self._crl
            crl = self._load(version)
        if crl.problem is None:
            log.info("loaded the %s", self._summary(crl))
        elif self._crl is None or self._crl.problem != crl.problem:
            log.error("%s", crl.problem)  # once per problem, not once per refused call
        self._crl = crl
        return crl

    def _unusable(self, version: tuple[int, ...] | None, problem: str) -> _Crl:
        code = "authz.crl_unreadable" if version is None else "authz.crl_invalid"
        return _Crl(version, problem=f"{code}: the client CRL {self._path}: {problem}; {_REFUSING}")

    def _load(self, version: tuple[int, ...]) -> _Crl:
        try:
            with self._path.open("rb") as source:
                data = source.read(MAX_CRL_BYTES + 1)
        except OSError as exc:
            return self._unusable(None, f"cannot read it: {exc.strerror}")
        if len(data) > MAX_CRL_BYTES:
            return self._unusable(version, f"larger than {MAX_CRL_BYTES} bytes")
        try:
            crl = (
                x509.load_pem_x509_crl(data)
                if data.lstrip().startswith(b"-----")
                else x509.load_der_x509_crl(data)
            )
            revoked = {entry.serial_number: _reason(entry) for entry in crl}
            signed = any(
                issuer.subject == crl.issuer
                and isinstance(key := issuer.public_key(), _ISSUER_KEYS)
                and crl.is_signature_valid(key)
                for issuer in self._issuers
            )
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            return self._unusable(version, f"not a usable CRL: {exc}")
        if not signed:
            return self._unusable(version, "not signed by the client CA")
        if crl.next_update_utc is None:
            return self._unusable(version, "it has no next update, so it cannot be known current")
        return _Crl(
            version,
            issuer=crl.issuer,
            this_update=crl.last_update_utc,
            next_update=crl.next_update_utc,
            revoked=revoked,
        )


def _reason(entry: x509.RevokedCertificate) -> str:
    try:
        flag = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return "unspecified"
    return reason_name(flag)
