"""Offline RIMs: pinned-root files, NVIDIA RIM ids, importing into and serving from the store.

A RIM's signed content does not carry the id verify_devices looks it up by: the
SWID tagId is a hash, and a VBIOS id names the board (project, SKU, chip) which the
content does not. So an import files a RIM under an id that comes from
``--rim-id``, from NVIDIA's file name, or (driver RIMs only) from the content,
and refuses an id whose chip and version disagree with the signed content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from verifier.evidence.nvidia.rim import MAX_RIM_BYTES, VerifiedRim
from verifier.evidence.nvidia.rim_store import FileRimStore
from verifier.verdict import VerificationError

__all__ = [
    "ImportOutcome",
    "RimChoice",
    "StoreRimSource",
    "check_rim_id",
    "import_rim_file",
    "load_root_file",
    "rim_id_from_name",
]

# A root file holds one CA certificate, or a few during a rotation.
MAX_ROOT_FILE_BYTES = 64 * 1024

_ID = re.compile(
    r"NV_(?:GPU_DRIVER_GH100|GPU_CC_DRIVER_GB100)_[0-9]+(?:\.[0-9]+)*"
    r"|NV_GPU_VBIOS_[0-9A-Z]{4}_[0-9A-Z]{4}_[0-9A-Z]{3}_[0-9A-F]{10}"
    r"|NV_SWITCH_BIOS_[0-9A-Z]{4}_[0-9A-Z]{4}_[0-9A-Z]{3}_[0-9A-F]{10}"
)
# The wheel's sample VBIOS RIMs: project_sku_chip_version_PROD.swidtag.
_VBIOS_FILE = re.compile(r"([0-9A-Z]{4})_([0-9A-Z]{4})_([0-9A-Z]{3})_([0-9A-F]{10})_")
_DRIVER_PREFIX = {"GH100": "NV_GPU_DRIVER_GH100_", "GB100": "NV_GPU_CC_DRIVER_GB100_"}
_FIRMWARE_VERSION = re.compile(r"[0-9A-Fa-f]{2}(\.[0-9A-Fa-f]{2}){4}")


class RootFileError(ValueError):
    """A root file that cannot be used (unreadable, not PEM, not the pinned root)."""


def load_root_file(path: Path, *, expected_sha256: str | None, what: str) -> list[x509.Certificate]:
    """Certificates of a PEM root file; each must have ``expected_sha256`` unless None."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_ROOT_FILE_BYTES + 1)
    except OSError as exc:
        raise RootFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_ROOT_FILE_BYTES:
        raise RootFileError(f"{what} {path}: larger than {MAX_ROOT_FILE_BYTES} bytes")
    try:
        roots = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise RootFileError(f"{what} {path}: not PEM certificates") from None
    for root in roots:
        fingerprint = root.fingerprint(hashes.SHA256()).hex()
        if expected_sha256 is not None and fingerprint != expected_sha256:
            raise RootFileError(
                f"{what} {path}: {root.subject.rfc4514_string()} (SHA-256 {fingerprint}) is "
                f"not NVIDIA's pinned root ({expected_sha256}); a test root needs the "
                "explicit --allow-other-* option"
            )
    return roots


def rim_id_from_name(path: Path) -> str | None:
    """NVIDIA's RIM id as NVIDIA names the file, or None."""
    found = _ID.search(path.name)
    if found is not None:
        return found.group(0)
    vbios = _VBIOS_FILE.match(path.name)
    return None if vbios is None else "NV_GPU_VBIOS_" + "_".join(vbios.groups())


def _firmware_shaped(version: str) -> bool:
    return bool(_FIRMWARE_VERSION.fullmatch(version))


def rim_id_from_content(rim: VerifiedRim) -> str | None:
    """A driver RIM's id, which its content fully names (chip and version); else None."""
    version = rim.content.colloquial_version
    prefix = _DRIVER_PREFIX.get(rim.content.product)
    if prefix is None or not version or _firmware_shaped(version):
        return None
    return prefix + version


def check_rim_id(rim_id: str, rim: VerifiedRim) -> str | None:
    """Why ``rim_id`` does not fit the signed content, or None if it does."""
    content = rim.content
    version = content.colloquial_version
    for chip, prefix in _DRIVER_PREFIX.items():
        if rim_id.startswith(prefix):
            if content.product != chip or _firmware_shaped(version):
                return f"{rim_id} names a {chip} driver RIM; the RIM is {content.product} {version}"
            if rim_id != prefix + version:
                return f"{rim_id} does not match the RIM's version {version}"
            return None
    if rim_id.startswith(("NV_GPU_VBIOS_", "NV_SWITCH_BIOS_")):
        switch = rim_id.startswith("NV_SWITCH_BIOS_")
        if switch != (content.product == "LS10") or not _firmware_shaped(version):
            return f"{rim_id} does not fit the RIM ({content.product} {version})"
        if not rim_id.endswith("_" + version.replace(".", "").upper()):
            return f"{rim_id} does not match the RIM's version {version}"
        return None
    return f"{rim_id} is not an NVIDIA RIM id this verifier knows"


@dataclass(frozen=True)
class ImportOutcome:
    path: Path
    status: str  # stored / already present / refused
    rim_id: str | None = None
    digest: str | None = None
    reason: str = ""  # "code: detail" when refused
    valid_until: datetime | None = None


def import_rim_file(
    store: FileRimStore, path: Path, *, at: datetime, rim_id: str | None = None
) -> ImportOutcome:
    """Verify ``path`` at ``at`` and file it under its NVIDIA RIM id; never raises for a bad RIM."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_RIM_BYTES + 1)
    except OSError as exc:
        return ImportOutcome(path, "refused", reason=f"unreadable: {exc.strerror or exc}")
    # Verify first (the store verifies again on import), so that nothing about an
    # unverified file, its id included, is trusted.
    try:
        rim = store.verify(data, at=at)
    except VerificationError as exc:
        return ImportOutcome(path, "refused", reason=str(exc.reason))
    named = rim_id or rim_id_from_name(path) or rim_id_from_content(rim)
    if named is None:
        return ImportOutcome(
            path,
            "refused",
            digest=rim.sha256,
            reason="nvidia.rim.id_unknown: neither the file name nor the content names its "
            "NVIDIA RIM id; give --rim-id",
        )
    problem = check_rim_id(named, rim)
    if problem is not None:
        return ImportOutcome(
            path, "refused", named, rim.sha256, f"nvidia.rim.id_mismatch: {problem}"
        )
    present = rim.sha256 in store.digests_for_rim_id(named)
    store.import_bytes(data, at=at, rim_id=named)
    status = "already present" if present else "stored"
    return ImportOutcome(path, status, named, rim.sha256, valid_until=rim.valid_until)


@dataclass(frozen=True)
class RimChoice:
    rim_id: str
    digest: str | None  # None: nothing stored under the id verifies at ``at``
    candidates: int  # stored contents under the id that verify at ``at``
    valid_until: datetime | None


class StoreRimSource:
    """Serves verify_devices' ``rims=`` from a FileRimStore and records what it chose.

    NVIDIA reissues different contents under one id. Of those that verify at
    ``at``, the one whose signing path stays valid longest (the most recent
    issue, what NVIDIA's service would serve now) is used; ties by digest.
    """

    def __init__(self, store: FileRimStore, *, at: datetime) -> None:
        self._store, self._at = store, at
        self.chosen: dict[str, RimChoice] = {}

    def __call__(self, rim_id: str) -> bytes | None:
        found = self._store.rims_for_rim_id(rim_id, at=self._at)
        if not found:
            self.chosen[rim_id] = RimChoice(rim_id, None, 0, None)
            return None
        rim, data = max(found, key=lambda pair: (pair[0].valid_until, pair[0].sha256))
        self.chosen[rim_id] = RimChoice(rim_id, rim.sha256, len(found), rim.valid_until)
        return data
