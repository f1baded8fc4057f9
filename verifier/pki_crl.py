"""Revoking certificates of the evaluation CA, and the signed CRL that tells the verifier.

``pki revoke`` records the revocation (verifier.pki_records, insert-only) and
then re-signs ``ca.crl`` from every revocation recorded; ``pki crl`` only
re-signs it. A CRL is good until its next_update (``--crl-days``, default 7)
and the verifier refuses every call once that has passed (fail closed), so
whoever keeps the CA must re-sign it well before: from cron, say, daily.

The CRL number grows by one with every CRL signed, read back from the current
``ca.crl``; if that file is lost the numbering starts again at 1, which our
verifier does not mind (it checks the signature and next_update, not the
number).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.pki import load_ca
from verifier.pki_files import PkiError, replace_file
from verifier.pki_records import (
    RevokedRecord,
    describe_certificate,
    issued,
    now_iso,
    parse_serial,
    record_revoked,
    revoked,
    serial_text,
)

CRL_FILE = "ca.crl"
CRL_DAYS = 7
# A CRL valid for longer than this hides a CA that has stopped re-signing it.
MAX_CRL_DAYS = 90
# Spelled as verifier.revocation.reason_name reads them back from the CRL.
# The RFC 5280 reasons that fit a leaf that is gone for good: no certificateHold
# (revocation here is final) and no CA or attribute-authority compromise.
REASONS: Mapping[str, x509.ReasonFlags] = MappingProxyType(
    {
        "unspecified": x509.ReasonFlags.unspecified,
        "key-compromise": x509.ReasonFlags.key_compromise,
        "affiliation-changed": x509.ReasonFlags.affiliation_changed,
        "superseded": x509.ReasonFlags.superseded,
        "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
        "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
    }
)


@dataclass(frozen=True)
class CrlWritten:
    path: Path
    number: int
    revoked: int
    next_update: datetime.datetime


@dataclass(frozen=True)
class Revocation:
    record: RevokedRecord
    already: bool  # revoked before (the first record stands); the CRL was re-signed anyway
    crl: CrlWritten


def revoke(
    directory: Path,
    *,
    serial: str | None = None,
    certificate: Path | None = None,
    reason: str,
    note: str = "",
    crl_days: int = CRL_DAYS,
) -> Revocation:
    """Revoke one certificate this CA issued (by serial, or by its file) and re-sign the CRL.

    Revoking a serial twice keeps the first record and re-signs the CRL, so a
    revocation whose CRL could not be written is finished by running it again.
    """
    if (serial is None) == (certificate is None):
        raise PkiError("give exactly one of --serial and --cert")
    if reason not in REASONS:
        raise PkiError(f"--reason {reason!r}: expected one of {', '.join(REASONS)}")
    _check_days(crl_days)
    ca_cert, _ = load_ca(directory)
    known = issued(directory, ca_cert)
    if certificate is not None:
        cert = _load_leaf(certificate, ca_cert, directory)
        key = serial_text(cert.serial_number)
        described = known.get(key) or describe_certificate(cert, kind="", file=str(certificate))
        name = described.name
    else:
        assert serial is not None
        key = parse_serial(serial)
        if key not in known:
            raise PkiError(
                f"serial {key}: not a certificate this CA issued (see `pki list`; "
                "or give the certificate file with --cert)"
            )
        name = known[key].name
    previous = revoked(directory).get(key)
    if previous is None:
        record = RevokedRecord(key, name, reason=reason, revoked_at=now_iso(), note=note)
        record_revoked(directory, record)
    else:
        record = previous
    return Revocation(record, previous is not None, write_crl(directory, days=crl_days))


def write_crl(
    directory: Path, *, days: int = CRL_DAYS, now: datetime.datetime | None = None
) -> CrlWritten:
    """(Re)sign ``ca.crl`` listing every revocation recorded, valid from ``now`` for ``days``.

    ``now`` is for tests that need a CRL from the past; the default is the clock.
    """
    _check_days(days)
    ca_cert, ca_key = load_ca(directory)
    moment = now or datetime.datetime.now(datetime.UTC)
    number = _current_number(directory / CRL_FILE, ca_key.public_key()) + 1
    next_update = moment + datetime.timedelta(days=days)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(moment)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    records = revoked(directory)
    for record in sorted(records.values(), key=lambda r: int(r.serial, 16)):
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(record.serial, 16))
            .revocation_date(datetime.datetime.fromisoformat(record.revoked_at))
        )
        # RFC 5280 5.3.1: "unspecified" is said by leaving the reason out.
        if record.reason != "unspecified":
            entry = entry.add_extension(x509.CRLReason(REASONS[record.reason]), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    crl = builder.sign(ca_key, hashes.SHA256())
    path = directory / CRL_FILE
    # Public like ca.crt: it is copied to the verifier, and it names serials, not people.
    replace_file(path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
    return CrlWritten(path, number, len(records), next_update)


def _check_days(days: int) -> None:
    if not 1 <= days <= MAX_CRL_DAYS:
        raise PkiError(f"--crl-days: expected 1 to {MAX_CRL_DAYS}, got {days}")


def _load_leaf(path: Path, ca: x509.Certificate, directory: Path) -> x509.Certificate:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"--cert {path}: cannot read a PEM certificate: {exc}") from None
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise PkiError(f"--cert {path}: not issued by the CA in {directory}") from None
    if cert.serial_number == ca.serial_number:
        raise PkiError(f"--cert {path}: that is the CA itself; replace the CA instead")
    return cert


def _current_number(path: Path, ca_key: ec.EllipticCurvePublicKey) -> int:
    """The number of the CRL at ``path`` if it is ours, else 0 (start again at 1)."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
        if not crl.is_signature_valid(ca_key):
            return 0
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except (OSError, ValueError, x509.ExtensionNotFound):
        return 0
    return number
