"""AMD product lines and the TCB_VERSION layouts that depend on them.

A TCB_VERSION is a little-endian u64 of security patch levels (SPLs). Its byte
layout is per product line (SEV-SNP Firmware ABI, TCB_VERSION): Milan and Genoa
put BOOT_LOADER, TEE at bytes 0-1, SNP at 6 and MICROCODE at 7; Turin adds an
FMC SPL and moves the others: FMC, BOOT_LOADER, TEE, SNP at bytes 0-3 and
MICROCODE at 7. A report does not say which layout it uses (v2 reports do not
even name the CPU), so a TCB is decoded only once the product line is known from
the authenticated VCEK/VLEK.

The bytes no named component uses are reserved; the VCEK/VLEK still certifies
them, as its spl4-7 extensions (go-sev-guest ``kds.TCBParts``): Milan and Genoa
bytes 2-5 are spl4-7; Turin bytes 4-6 are spl5-7 (real Turin VCEKs carry no
spl4, and Turin has no byte for it). :data:`TCB_LAYOUT` is that map, so the
whole u64 can be rebuilt from a certificate and compared (authenticate.py).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "TCB_LAYOUT",
    "ProductLine",
    "TcbVersion",
    "decode_tcb",
    "product_from_cpuid",
    "product_from_name",
]


class ProductLine(enum.Enum):
    """The AMD KDS product line, which selects the ARK and the TCB layout."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"


# Product line -> the certificate SPL name at each TCB_VERSION byte, 0 (least
# significant) to 7. "spl4".."spl7" are the reserved SPL extensions.
_MILAN_GENOA = ("bootloader", "tee", "spl4", "spl5", "spl6", "spl7", "snp", "microcode")
TCB_LAYOUT: Mapping[ProductLine, tuple[str, ...]] = MappingProxyType(
    {
        ProductLine.MILAN: _MILAN_GENOA,
        ProductLine.GENOA: _MILAN_GENOA,
        ProductLine.TURIN: ("fmc", "bootloader", "tee", "snp", "spl5", "spl6", "spl7", "microcode"),
    }
)


@dataclass(frozen=True, slots=True)
class TcbVersion:
    """Decoded SPLs; ``fmc`` is None on Milan/Genoa, which have no FMC SPL."""

    raw: int
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    def components(self) -> dict[str, int]:
        """Component name -> SPL, in the names AMD's KDS uses (blSPL -> "bootloader")."""
        parts = {
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }
        if self.fmc is not None:
            parts = {"fmc": self.fmc, **parts}
        return parts

    def to_json(self) -> dict[str, int | str]:
        return {"raw": f"0x{self.raw:016x}", **self.components()}


def decode_tcb(raw: int, product: ProductLine) -> TcbVersion:
    """The SPLs of a raw TCB_VERSION in ``product``'s layout."""
    if not 0 <= raw < 1 << 64:
        raise ValueError("a TCB_VERSION is a u64")
    b = raw.to_bytes(8, "little")
    if product is ProductLine.TURIN:
        return TcbVersion(raw, bootloader=b[1], tee=b[2], snp=b[3], microcode=b[7], fmc=b[0])
    return TcbVersion(raw, bootloader=b[0], tee=b[1], snp=b[6], microcode=b[7])


def product_from_name(product_name: str) -> ProductLine | None:
    """The product line of a VCEK/VLEK productName ("Milan-B0", "Genoa", "Turin")."""
    line = product_name.split("-", 1)[0]
    for product in ProductLine:
        if product.value == line:
            return product
    return None


# CPUID family -> ((first model, last model, product line), ...). Genoa includes the
# Zen 4c parts Bergamo/Siena at 0xA0-0xAF, which KDS serves as "Genoa" (the
# trustee Genoa vector is model 0xA0; a table stopping at 0x1F misclassifies it).
_CPUID_MODELS: dict[int, tuple[tuple[int, int, ProductLine], ...]] = {
    0x19: (
        (0x00, 0x0F, ProductLine.MILAN),
        (0x10, 0x1F, ProductLine.GENOA),
        (0xA0, 0xAF, ProductLine.GENOA),
    ),
    0x1A: ((0x00, 0x11, ProductLine.TURIN),),
}


def product_from_cpuid(family: int, model: int) -> ProductLine | None:
    """The product line a v3+ report's CPUID names, or None when the table has no entry.

    None is not a failure: the product line always comes from the certificate;
    this only lets a report whose CPUID contradicts the certificate be caught.
    """
    for first, last, product in _CPUID_MODELS.get(family, ()):
        if first <= model <= last:
            return product
    return None
