"""The measured-boot reference document: its format, and its strict loader.

A reference is a JSON document (version 1); every key not marked optional is
required and unknown keys are refused, so that a typo cannot weaken it:

.. code-block:: text

    {
      "kind": "weightgate.boot-reference", "version": 1,
      "bank": "sha256",                 # bank of every digest below, and of the facts
      "secure_boot_required": true,
      "pk": [FP, ...], "kek": [FP, ...], "db": [FP, ...],
                                        # allowed X.509 certificates (FP: SHA-256 of
                                        # the DER, hex); every certificate the
                                        # variable holds must be listed
      "db_hashes": [SHA256, ...],       # optional: allowed SHA-256 entries in db
      "dbx_required": [SHA256 or FP, ...],  # dbx must contain at least these
      "boot_applications": {"match": "sequence" | "set", "digests": [DIGEST, ...]},
                                        # PCR4 EFI applications: exactly this sequence,
                                        # or each one from this (non-empty) set
      "kernel_cmdlines": [{"exact": TEXT} | {"regex": PATTERN}, ...],
                                        # every measured command line must match one
                                        # (regex: Python re.fullmatch)
      "kernel_digests": [DIGEST, ...],  # optional: GRUB-loaded kernels (PCR9)
      "initrd_digests": [DIGEST, ...],  # optional: initrds (PCR9)
      "boot_file_digests": [DIGEST, ...],  # optional: every other file GRUB measures
                                        # into PCR9 (grub.cfg, grubenv, modules, fonts...)
      "grub_command_verbs": [VERB, ...],  # optional: the only GRUB commands the boot
                                        # may run (e.g. "set", "insmod", "linux")
      "driver_digests": [DIGEST, ...],  # optional, may be empty: every PCR2 event but
                                        # its separator (UEFI drivers, option ROMs,
                                        # firmware blobs); [] allows none
      "firmware_versions": [TEXT | null, ...],  # S-CRTM versions; null: none logged
      "allow_sha1_only_logs": false,    # optional; true only with "bank": "sha1"
      "allowed_quirks": [QUIRK_ID, ...] # optional: event_quirks.QUIRKS ids
    }

The three PCR9 lists work together: with any of them present, every file digest
measured into PCR9 must be in one of them (their union), and
PCR9 must replay to the quote. A file's name is logged beside its digest but not
hashed, so it cannot say which list a digest belongs to; a kernel renamed
``normal.mod`` is still a digest nobody approved. ``kernel_digests`` and
``initrd_digests`` additionally check the files GRUB's ``linux``/``initrd``
commands name.

``driver_digests`` closes PCR2, where firmware measures the UEFI drivers it loads
(Driver#### variables, option ROMs: EV_EFI_BOOT_SERVICES_DRIVER,
EV_EFI_RUNTIME_SERVICES_DRIVER) and firmware blobs (EV_EFI_PLATFORM_FIRMWARE_BLOB,
EV_EFI_PLATFORM_FIRMWARE_BLOB2). Secure Boot would refuse an unsigned driver;
without it, a reference over facts (not raw PCRs) would not notice one. With the
key, every PCR2 event other than its separator must carry a listed
digest (``tpm.boot.unexpected_driver``), whatever event type the log gives it
(the type is not hashed), and PCR2 must be quoted and replay. Unlike the digest
lists above, an empty list is allowed and means "no driver": a proposal lists
the digests of its log's PCR2 events whenever PCR2 is verified, replayed in the
reference's bank to the value the known-good host's TPM reported for it
(``--pcrs``), so a host that loads no driver is proposed ``[]``. When ``--pcrs``
leaves PCR2 out, so is the key, and ``reference propose`` warns that the
reference will not appraise drivers.

Refused at load, besides malformed values: an empty ``dbx_required`` with Secure
Boot required, an empty ``set`` of boot applications, an empty
``firmware_versions``, an empty optional digest list other than ``driver_digests``
(omit the key instead), unknown quirk ids, and ``allow_sha1_only_logs`` with a
bank other than sha1.
Appraisal is in boot_reference.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from verifier.evidence.tpm.event_quirks import QUIRKS

__all__ = [
    "REFERENCE_KIND",
    "REFERENCE_VERSION",
    "REQUIRED_PCRS",
    "BootReference",
    "BootReferenceError",
    "load_boot_reference",
]

REFERENCE_KIND = "weightgate.boot-reference"
REFERENCE_VERSION = 1
_BANK_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
REQUIRED_PCRS = (0, 4, 7)  # firmware version, boot applications, Secure Boot
_REQUIRED = frozenset(
    {"kind", "version", "bank", "secure_boot_required", "pk", "kek", "db", "dbx_required"}
    | {"boot_applications", "kernel_cmdlines", "firmware_versions"}
)
_OPTIONAL = frozenset(
    {"db_hashes", "kernel_digests", "initrd_digests", "boot_file_digests", "grub_command_verbs"}
    | {"driver_digests", "allow_sha1_only_logs", "allowed_quirks"}
)


class BootReferenceError(ValueError):
    """A reference document is malformed, ambiguous or permissive."""


@dataclass(frozen=True)
class BootReference:
    """A validated reference (build it with :func:`load_boot_reference`)."""

    bank: str
    secure_boot_required: bool
    pk: frozenset[str]
    kek: frozenset[str]
    db: frozenset[str]
    db_hashes: frozenset[str]
    dbx_required: tuple[str, ...]
    app_match: Literal["sequence", "set"]
    app_digests: tuple[str, ...]
    cmdline_exact: frozenset[str]
    cmdline_patterns: tuple[re.Pattern[str], ...]
    kernel_digests: frozenset[str] | None
    initrd_digests: frozenset[str] | None
    boot_file_digests: frozenset[str] | None
    grub_command_verbs: frozenset[str] | None  # None: any but boot_commands' denied ones
    driver_digests: frozenset[str] | None  # None: PCR2 not read; empty: no driver allowed
    firmware_versions: frozenset[str | None]
    allow_sha1_only_logs: bool
    allowed_quirks: frozenset[str]

    @property
    def pcr9_digests(self) -> frozenset[str] | None:
        """Every digest PCR9 may carry, or None when the reference does not read PCR9."""
        lists = (self.kernel_digests, self.initrd_digests, self.boot_file_digests)
        if all(digests is None for digests in lists):
            return None
        return frozenset().union(*(digests for digests in lists if digests is not None))


def _hex_values(values: object, key: str, size: int) -> tuple[str, ...]:
    """A list of hex strings of ``size`` bytes each, lowercased."""
    if not isinstance(values, list):
        raise BootReferenceError(f"{key}: expected a list")
    out: list[str] = []
    for value in values:
        if not isinstance(value, str) or not re.fullmatch(rf"[0-9a-fA-F]{{{2 * size}}}", value):
            raise BootReferenceError(f"{key}: {value!r} is not {size} bytes of hex")
        out.append(value.lower())
    return tuple(out)


def _hex_list(doc: Mapping[str, Any], key: str, size: int) -> tuple[str, ...]:
    """Like _hex_values, for a set-like key: duplicates are refused as a likely typo."""
    out = _hex_values(doc.get(key, []), key, size)
    if len(set(out)) != len(out):
        raise BootReferenceError(f"{key}: duplicate entries")
    return out


def _optional_digests(doc: Mapping[str, Any], key: str, size: int) -> frozenset[str] | None:
    if key not in doc:
        return None
    values = _hex_list(doc, key, size)
    if not values:  # absent means "not checked"; empty would read as "anything"
        raise BootReferenceError(f"{key}: empty (omit the key to not check it)")
    return frozenset(values)


def _driver_digests(doc: Mapping[str, Any], size: int) -> frozenset[str] | None:
    """Like _optional_digests, but empty is a meaning of its own: no driver at all."""
    if "driver_digests" not in doc:
        return None
    return frozenset(_hex_list(doc, "driver_digests", size))


def _cmdlines(doc: Mapping[str, Any]) -> tuple[frozenset[str], tuple[re.Pattern[str], ...]]:
    entries = doc["kernel_cmdlines"]
    if not isinstance(entries, list):
        raise BootReferenceError("kernel_cmdlines: expected a list")
    exact: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for entry in entries:
        if not isinstance(entry, dict) or len(entry) != 1 or not entry.keys() <= {"exact", "regex"}:
            raise BootReferenceError(f"kernel_cmdlines: {entry!r} is not {{exact|regex: text}}")
        (kind, text), *_ = entry.items()
        if not isinstance(text, str):
            raise BootReferenceError(f"kernel_cmdlines: {kind} must be a string")
        if kind == "exact":
            exact.add(text)
            continue
        try:
            patterns.append(re.compile(text))
        except re.error as exc:
            raise BootReferenceError(f"kernel_cmdlines: bad regex {text!r}: {exc}") from exc
    return frozenset(exact), tuple(patterns)


def _verbs(doc: Mapping[str, Any]) -> frozenset[str] | None:
    if "grub_command_verbs" not in doc:
        return None
    verbs = doc["grub_command_verbs"]
    if not isinstance(verbs, list) or not all(
        isinstance(v, str) and v and " " not in v and v != "!" for v in verbs
    ):
        raise BootReferenceError("grub_command_verbs: a list of GRUB command names")
    return frozenset(verbs)


def _flag(doc: Mapping[str, Any], key: str, *, default: bool) -> bool:
    value = doc.get(key, default)
    if not isinstance(value, bool):
        raise BootReferenceError(f"{key}: expected true or false")
    return value


def load_boot_reference(doc: Mapping[str, Any]) -> BootReference:
    """Validate a reference document (format: module docstring)."""
    keys = set(doc)
    if missing := _REQUIRED - keys:
        raise BootReferenceError(f"missing keys: {sorted(missing)}")
    if unknown := keys - _REQUIRED - _OPTIONAL:
        raise BootReferenceError(f"unknown keys: {sorted(unknown)}")
    # type() is int: JSON's true and 1.0 compare equal to 1 but are not a version.
    if (
        doc["kind"] != REFERENCE_KIND
        or type(doc["version"]) is not int
        or (doc["version"] != REFERENCE_VERSION)
    ):
        raise BootReferenceError(f"not a {REFERENCE_KIND} version {REFERENCE_VERSION} document")
    bank = doc["bank"]
    if not isinstance(bank, str) or bank not in _BANK_SIZES:
        raise BootReferenceError(f"bank: {bank!r} is not one of {sorted(_BANK_SIZES)}")
    size = _BANK_SIZES[bank]
    secure_boot = _flag(doc, "secure_boot_required", default=False)
    dbx = _hex_list(doc, "dbx_required", 32)
    if secure_boot and not dbx:
        raise BootReferenceError("dbx_required: empty; Secure Boot needs a revocation floor")
    apps = doc["boot_applications"]
    if not isinstance(apps, dict) or set(apps) != {"match", "digests"}:
        raise BootReferenceError("boot_applications: expected {match, digests}")
    if apps["match"] not in ("sequence", "set"):
        raise BootReferenceError("boot_applications.match: 'sequence' or 'set'")
    # A sequence may repeat a digest (the same image loaded twice); a set may not.
    app_digests = _hex_values(apps["digests"], "boot_applications.digests", size)
    if apps["match"] == "set" and len(set(app_digests)) != len(app_digests):
        raise BootReferenceError("boot_applications.digests: duplicate entries")
    if apps["match"] == "set" and not app_digests:
        raise BootReferenceError("boot_applications: an empty set allows nothing; use sequence")
    versions = doc["firmware_versions"]
    if not isinstance(versions, list) or not versions:
        raise BootReferenceError("firmware_versions: a non-empty list of strings or null")
    if not all(v is None or isinstance(v, str) for v in versions):
        raise BootReferenceError("firmware_versions: entries are strings or null")
    quirks = doc.get("allowed_quirks", [])
    if not isinstance(quirks, list) or not all(isinstance(q, str) and q in QUIRKS for q in quirks):
        raise BootReferenceError(f"allowed_quirks: known ids are {sorted(QUIRKS)}")
    sha1 = _flag(doc, "allow_sha1_only_logs", default=False)
    if sha1 and bank != "sha1":
        raise BootReferenceError(
            "allow_sha1_only_logs needs bank sha1 (the only one such logs have)"
        )
    exact, patterns = _cmdlines(doc)
    return BootReference(
        bank=bank,
        secure_boot_required=secure_boot,
        pk=frozenset(_hex_list(doc, "pk", 32)),
        kek=frozenset(_hex_list(doc, "kek", 32)),
        db=frozenset(_hex_list(doc, "db", 32)),
        db_hashes=frozenset(_hex_list(doc, "db_hashes", 32)),
        dbx_required=dbx,
        app_match=apps["match"],
        app_digests=app_digests,
        cmdline_exact=exact,
        cmdline_patterns=patterns,
        kernel_digests=_optional_digests(doc, "kernel_digests", size),
        initrd_digests=_optional_digests(doc, "initrd_digests", size),
        boot_file_digests=_optional_digests(doc, "boot_file_digests", size),
        grub_command_verbs=_verbs(doc),
        driver_digests=_driver_digests(doc, size),
        firmware_versions=frozenset(versions),
        allow_sha1_only_logs=sha1,
        allowed_quirks=frozenset(quirks),
    )
