"""What a simulated SEV-SNP platform reports: product line, CPUID, TCB, firmware.

Values are plausible for each product line (SEV-SNP Firmware ABI; AMD KDS),
not copied from any real chip: the CPUID family/model falls in the range the
verifier maps to the line, and the TCB_VERSION uses the line's byte layout
(Milan and Genoa: BOOT_LOADER byte 0, TEE byte 1, SNP byte 6, MICROCODE byte 7).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["PRODUCTS", "Platform", "encode_tcb"]


@dataclass(frozen=True)
class Platform:
    """A product line as the simulator presents it."""

    product: str  # AMD KDS product name: "Milan", "Genoa"
    cpuid_family: int
    cpuid_model: int
    cpuid_stepping: int
    spls: Mapping[str, int]  # component -> SPL, KDS names
    firmware: tuple[int, int, int]  # (major, minor, build)

    @property
    def tcb(self) -> int:
        return encode_tcb(self.spls)


def encode_tcb(spls: Mapping[str, int]) -> int:
    """A Milan/Genoa TCB_VERSION u64 from its SPLs (reserved bytes 2-5 zero)."""
    raw = bytearray(8)
    raw[0], raw[1] = spls["bootloader"], spls["tee"]
    raw[6], raw[7] = spls["snp"], spls["microcode"]
    return int.from_bytes(raw, "little")


PRODUCTS: Mapping[str, Platform] = MappingProxyType(
    {
        "Milan": Platform(
            product="Milan",
            cpuid_family=0x19,
            cpuid_model=0x01,
            cpuid_stepping=0x01,
            spls=MappingProxyType({"bootloader": 4, "tee": 0, "snp": 22, "microcode": 213}),
            firmware=(1, 55, 22),
        ),
        "Genoa": Platform(
            product="Genoa",
            cpuid_family=0x19,
            cpuid_model=0x11,
            cpuid_stepping=0x01,
            spls=MappingProxyType({"bootloader": 9, "tee": 0, "snp": 23, "microcode": 72}),
            firmware=(1, 55, 38),
        ),
    }
)
