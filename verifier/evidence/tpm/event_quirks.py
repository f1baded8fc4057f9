"""Vendor quirks: named, scoped exceptions to the event-log checks.

Real firmware and boot loaders break the PC Client PFP in a few recurring ways.
Each way we tolerate is a :class:`Quirk` with a stable id. ``check_events`` never
skips such an event silently: it reports ``tpm.eventlog.quirk.<id>`` (one reason per
quirk per log, naming the events), and a measured-boot reference must list the id
in ``allowed_quirks`` for appraisal to accept it. Anything outside a quirk's exact
scope is reported under the ordinary code.

Adding a quirk needs a real log that shows it (see tpm/PROVENANCE.md) and a scope
as narrow as that log allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from verifier.evidence.tpm.event_types import EventType as Ev

__all__ = [
    "AFTER_SEPARATOR_QUIRKS",
    "PCR1_CONFIG_AFTER_SEPARATOR",
    "PCR2_DRIVER_AFTER_SEPARATOR",
    "QUIRKS",
    "SHIM_AUTHORITY_PADDING",
    "SYSTEMD_BOOT_TRUNCATED_NUL",
    "Quirk",
    "quirk_code",
]


@dataclass(frozen=True, slots=True)
class Quirk:
    """One tolerated deviation: who does it, where we saw it, what exactly it permits."""

    id: str
    producer: str
    seen_in: tuple[str, ...]
    permits: str


def quirk_code(quirk_id: str) -> str:
    """The reason code ``check_events`` reports for a quirk."""
    return f"tpm.eventlog.quirk.{quirk_id}"


PCR1_CONFIG_AFTER_SEPARATOR = Quirk(
    id="pcr1_config_after_separator",
    producer=(
        "firmware that measures Boot####/BootOrder, DeployedMode/AuditMode, SMBIOS tables "
        "or platform flags into PCR1 after it has written the separators: seen with the "
        "S-CRTM version GUID 546bfb1e-1d0c-4055-a4ad-4ef4bf17b83a (Supermicro, Inspur, "
        "Lenovo ThinkSystem SR645, Intel Boot Guard clients) and Lenovo ThinkPad BIOSes"
    ),
    seen_in=(
        "go-attestation/crypto_agile_eventlog",
        "go-tpm-tools/eventlogs/arch-linux-workstation.bin",
        "go-tpm-tools/eventlogs/glinux-alex.bin",
        "keylime/binary_bios_measurements",
        "python3-uefi-eventlog/inspur__inspur.bin",
        "python3-uefi-eventlog/sr645__rk049-s26.bin",
        "python3-uefi-eventlog/supermicro__201123-eventlog.bin",
        "rust-keylime/uefi_log.bin",
        "tpm2-tools/event-arch-linux.bin",
        "tpm2-tools/event-postcode.bin",
        "tpm2-tss/binary_measurements_pc_client.bin",
    ),
    permits=(
        "PCR1 after its separator: EV_EFI_VARIABLE_BOOT(2), EV_EFI_VARIABLE_DRIVER_CONFIG, "
        "EV_EFI_HANDOFF_TABLES(2), EV_PLATFORM_CONFIG_FLAGS (their data checks still apply)"
    ),
)
PCR2_DRIVER_AFTER_SEPARATOR = Quirk(
    id="pcr2_driver_after_separator",
    producer=(
        "Lenovo firmware loading an option-ROM driver (and logging a vendor event of "
        "type 0x00008401) after ReadyToBoot"
    ),
    seen_in=("rust-keylime/uefi_log.bin",),
    permits=(
        "PCR2 after its separator: EV_EFI_BOOT_SERVICES_DRIVER and the vendor type 0x00008401"
    ),
)
SHIM_AUTHORITY_PADDING = Quirk(
    id="shim_authority_padding",
    producer=(
        "shim without rhboot/shim commit 8a27a48 (go-attestation issue #157) mis-sizes "
        "its EV_EFI_VARIABLE_AUTHORITY events: in every log that shows it, 6 bytes follow "
        "VariableData and the digest covers all but the last of them"
    ),
    seen_in=(
        "go-attestation/sb_cert_eventlog",
        "go-tpm-tools/attestations/gce-cos-85-*/eventlog.bin",
        "go-tpm-tools/eventlogs/cos-85-amd-sev.bin",
        "go-tpm-tools/eventlogs/debian-10.bin",
        "python3-uefi-eventlog/rhel__bootlog-5.0.0-rhel-20210423T133156Z_8b0347a.bin",
        "tpm2-tools/event-postcode.bin",
    ),
    permits=(
        "EV_EFI_VARIABLE_AUTHORITY with exactly 6 bytes after VariableData whose digest "
        "is H(data[:-1]); only VariableData is read from it"
    ),
)
SYSTEMD_BOOT_TRUNCATED_NUL = Quirk(
    id="systemd_boot_truncated_nul",
    producer=(
        "older systemd-boot, measuring the kernel command line into PCR8 (the Fedora 37 "
        "log, systemd 251, uses PCR12 correctly), logs the UTF-16 string with one byte "
        "of its 2-byte terminator and hashes it whole"
    ),
    seen_in=(
        "go-tpm-tools/eventlogs/arch-linux-workstation.bin",
        "tpm2-tools/event-arch-linux.bin",
    ),
    permits=(
        "PCR8 EV_IPL whose data is UTF-16 text with a 1-byte terminator and whose digest "
        "is H(data + 00)"
    ),
)

QUIRKS: Mapping[str, Quirk] = MappingProxyType(
    {
        q.id: q
        for q in (
            PCR1_CONFIG_AFTER_SEPARATOR,
            PCR2_DRIVER_AFTER_SEPARATOR,
            SHIM_AUTHORITY_PADDING,
            SYSTEMD_BOOT_TRUNCATED_NUL,
        )
    }
)

# (PCR, event type) pairs each structural quirk lets through after the separator.
AFTER_SEPARATOR_QUIRKS: Mapping[tuple[int, int], Quirk] = MappingProxyType(
    {
        (1, Ev.EV_EFI_VARIABLE_BOOT): PCR1_CONFIG_AFTER_SEPARATOR,
        (1, Ev.EV_EFI_VARIABLE_BOOT2): PCR1_CONFIG_AFTER_SEPARATOR,
        (1, Ev.EV_EFI_VARIABLE_DRIVER_CONFIG): PCR1_CONFIG_AFTER_SEPARATOR,
        (1, Ev.EV_EFI_HANDOFF_TABLES): PCR1_CONFIG_AFTER_SEPARATOR,
        (1, Ev.EV_EFI_HANDOFF_TABLES2): PCR1_CONFIG_AFTER_SEPARATOR,
        (1, Ev.EV_PLATFORM_CONFIG_FLAGS): PCR1_CONFIG_AFTER_SEPARATOR,
        (2, Ev.EV_EFI_BOOT_SERVICES_DRIVER): PCR2_DRIVER_AFTER_SEPARATOR,
        (2, 0x00008401): PCR2_DRIVER_AFTER_SEPARATOR,
    }
)
