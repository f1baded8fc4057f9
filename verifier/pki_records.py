"""What the evaluation CA has issued and revoked: insert-only records in its directory.

``issued/<serial>.json`` is written by every ``pki issue`` (who the certificate
names, its kind, roles or host, expiry), so a serial on a CRL or in a refusal
can be traced back to a person or a host even after the certificate file has
been handed out and deleted here. ``revoked/<serial>.json`` is written by
``pki revoke``. Both are written once and never changed (a revocation cannot
be undone; issue a new certificate instead), mode 0600 in 0700 directories: the
records say who holds access, which is for the CA's custodian only.

Serials are lowercase hexadecimal without a prefix throughout.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from verifier.identity import HOST_URN, ROLE_URN
from verifier.pki_files import PkiError, private_directory, write_new

ISSUED_DIR = "issued"
REVOKED_DIR = "revoked"
# The CA certificate lives beside the leaves; it is never a leaf.
CA_CERTIFICATE = "ca.crt"
# X.509 serials are at most 20 octets (RFC 5280 4.1.2.2).
_SERIAL = re.compile(r"[0-9a-f]{1,40}")
# A record is a few hundred bytes; refuse to parse anything far bigger.
MAX_RECORD_BYTES = 64 * 1024


@dataclass(frozen=True)
class IssuedRecord:
    serial: str
    name: str  # the certificate's CN: the audit log's actor
    kind: str  # operator, agent, server, or "unrecorded" (issued before records were kept)
    roles: tuple[str, ...]
    host_id: str | None
    not_after: str  # ISO 8601, UTC
    certificate: str  # the file it was written to, relative to the PKI directory


@dataclass(frozen=True)
class RevokedRecord:
    serial: str
    name: str
    reason: str  # an RFC 5280 reason, spelled as `pki revoke --reason` takes it
    revoked_at: str  # ISO 8601, UTC
    note: str  # free text for the custodian; never leaves the CA directory


R = TypeVar("R", IssuedRecord, RevokedRecord)


def serial_text(serial: int) -> str:
    return format(serial, "x")


def parse_serial(text: str) -> str:
    """A serial as the user typed it (hex, any case, optional 0x and colons) in our spelling."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    cleaned = cleaned.lstrip("0") or "0"
    if not _SERIAL.fullmatch(cleaned):
        raise PkiError(
            f"--serial {text!r}: expected a hexadecimal serial number (at most 40 digits)"
        )
    return cleaned


def record_issued(directory: Path, cert: x509.Certificate, *, kind: str, file: Path) -> None:
    """Note a certificate just issued from the CA in ``directory``."""
    record = describe_certificate(cert, kind=kind, file=file.name)
    records = private_directory(directory / ISSUED_DIR)
    write_new(records / f"{record.serial}.json", _json(asdict(record)), 0o600)


def record_revoked(directory: Path, record: RevokedRecord) -> None:
    """Note a revocation; raises PkiError if the serial was revoked before."""
    records = private_directory(directory / REVOKED_DIR)
    write_new(records / f"{record.serial}.json", _json(asdict(record)), 0o600)


def describe_certificate(cert: x509.Certificate, *, kind: str, file: str) -> IssuedRecord:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = str(names[0].value) if names else "?"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    roles = tuple(sorted(u.removeprefix(ROLE_URN) for u in uris if u.startswith(ROLE_URN)))
    hosts = [u.removeprefix(HOST_URN) for u in uris if u.startswith(HOST_URN)]
    return IssuedRecord(
        serial=serial_text(cert.serial_number),
        name=name,
        kind=kind,
        roles=roles,
        host_id=hosts[0] if hosts else None,
        not_after=_iso(cert.not_valid_after_utc),
        certificate=file,
    )


def issued(directory: Path, ca: x509.Certificate) -> dict[str, IssuedRecord]:
    """Every certificate the CA issued, by serial: the records, plus leaf certificates
    in ``directory`` from before records were kept (kind "unrecorded")."""
    found = {r.serial: r for r in _read_all(directory / ISSUED_DIR, IssuedRecord)}
    for path in sorted(directory.glob("*.crt")):
        if path.name == CA_CERTIFICATE:
            continue
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            cert.verify_directly_issued_by(ca)
        except (OSError, ValueError, TypeError, InvalidSignature):
            continue  # not one of ours: nothing to list or revoke
        record = describe_certificate(cert, kind="unrecorded", file=path.name)
        found.setdefault(record.serial, record)
    return found


def revoked(directory: Path) -> dict[str, RevokedRecord]:
    """Every revocation recorded, by serial."""
    return {r.serial: r for r in _read_all(directory / REVOKED_DIR, RevokedRecord)}


def _read_all(records: Path, kind: type[R]) -> Iterator[R]:
    if not records.is_dir():
        return
    for path in sorted(records.glob("*.json")):
        try:
            if path.stat().st_size > MAX_RECORD_BYTES:
                raise ValueError("too large")
            raw = json.loads(path.read_bytes())
            if not isinstance(raw, dict) or raw.get("serial") != path.stem:
                raise ValueError("not a record of this serial")
            values = {f.name: raw[f.name] for f in fields(kind)}
        except (OSError, ValueError, KeyError, RecursionError) as exc:
            raise PkiError(f"{path}: unreadable record: {exc!r}") from None
        if isinstance(values.get("roles"), list):
            values["roles"] = tuple(values["roles"])
        yield kind(**values)


def _json(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_iso() -> str:
    return _iso(datetime.datetime.now(datetime.UTC))
