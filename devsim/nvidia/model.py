"""What the simulated GPUs are: one Hopper model, one firmware, named as NVIDIA names it.

Every simulated GPU of a fleet is the same board with the same driver and VBIOS,
so one driver RIM and one VBIOS RIM cover them all (as on a real HGX host); only
the device identity (keys, serials, FWID) differs per GPU. The versions are
made up so that a simulated RIM id never names a real NVIDIA RIM; the shapes
(dotted decimal driver, dotted hex VBIOS, board ids) are NVIDIA's, so the
verifier's parsers and RIM-id rules apply unchanged.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

DIGEST_SIZE = 48  # SHA-384, what Hopper negotiates for SPDM measurements
BLOCK_COUNT = 64  # a GPU reports 64 measurement blocks (SPDM indexes 1..64)
NVDEC_RIM_INDEX = 35  # skipped by appraisal when NVDEC0 is disabled (status 0x55)

# RIM entries (0-based; entry k is SPDM block k+1) each RIM keeps active, as in
# NVIDIA's GH100 RIMs: the VBIOS RIM covers 0-6 and 8-12, the driver RIM 7 and
# 21-40. No index is active in both (the verifier refuses such a pair).
VBIOS_INDEXES = frozenset({*range(7), *range(8, 13)})
DRIVER_INDEXES = frozenset({7, *range(21, 41)})
# Entries with two accepted values, the report carrying the second: NVIDIA lists
# alternatives for a few indexes (23, 24, 35 in the 545.00 driver RIM), and the
# verifier must accept any of them.
TWO_ALTERNATIVES = frozenset({23, 24})

_DECIMAL_VERSION = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6}){1,5}")
_VBIOS_VERSION = re.compile(r"[0-9a-f]{2}(\.[0-9a-f]{2}){4}")
_BOARD_ID = re.compile(r"[0-9A-Z]{4}")
_CHIP_SKU = re.compile(r"[0-9A-Z]{3}")


@dataclass(frozen=True)
class GpuModel:
    """The board and firmware every GPU of a fleet simulates."""

    chip: str = "GH100"  # the verifier names driver RIMs by this (leaf issuer's CN)
    arch: str = "HOPPER"  # the evidence-file label NVIDIA's tools use
    driver_version: str = "590.99.01"
    vbios_version: str = "96.00.9e.00.01"  # lower case, as a report shows it
    project: str = "G520"  # HGX SXM board project, as on real H100/H200 boards
    project_sku: str = "0280"
    chip_sku: str = "895"
    board_id: int = 0x4A1

    def __post_init__(self) -> None:
        if not _DECIMAL_VERSION.fullmatch(self.driver_version):
            raise ValueError(f"driver version {self.driver_version!r} is not dotted decimal")
        if not _VBIOS_VERSION.fullmatch(self.vbios_version):
            raise ValueError(f"VBIOS version {self.vbios_version!r} is not 5 lower-case hex bytes")
        if not (_BOARD_ID.fullmatch(self.project) and _BOARD_ID.fullmatch(self.project_sku)):
            raise ValueError("project and project SKU are 4 characters [0-9A-Z]")
        if not _CHIP_SKU.fullmatch(self.chip_sku):
            raise ValueError("chip SKU is 3 characters [0-9A-Z]")
        if self.chip != "GH100" or self.arch != "HOPPER":
            # Only the Hopper layouts (FWID extension, opaque v1) are simulated.
            raise ValueError("only GH100 / HOPPER is simulated")
        if not 0 <= self.board_id < 1 << 32:
            raise ValueError("board id is a u32")

    @property
    def vbios_rim_version(self) -> str:
        """The VBIOS version as RIMs write it (upper-case hex)."""
        return self.vbios_version.upper()

    @property
    def driver_rim_id(self) -> str:
        """NVIDIA's RIM id for the driver (NV_GPU_DRIVER_GH100_<version>)."""
        return f"NV_GPU_DRIVER_{self.chip}_{self.driver_version}"

    @property
    def vbios_rim_id(self) -> str:
        """NVIDIA's RIM id for the VBIOS (NV_GPU_VBIOS_<project>_<sku>_<chip sku>_<version>)."""
        compact = self.vbios_version.replace(".", "").upper()
        return f"NV_GPU_VBIOS_{self.project}_{self.project_sku}_{self.chip_sku}_{compact}"

    def golden(self, index: int) -> tuple[bytes, ...]:
        """Accepted values of RIM entry ``index``; the report carries the last one.

        Derived from the firmware versions, so identical firmware measures the
        same on every GPU and in every fleet, as real firmware does.
        """
        if index in DRIVER_INDEXES:
            source = f"driver {self.driver_version}"
        elif index in VBIOS_INDEXES:
            source = f"vbios {self.vbios_version}"
        else:
            return (bytes(DIGEST_SIZE),)  # unmeasured: zeros, inactive in both RIMs
        count = 2 if index in TWO_ALTERNATIVES else 1
        return tuple(
            hashlib.sha384(f"weightgate devsim {self.chip} {source} {index} {n}".encode()).digest()
            for n in range(count)
        )

    def measurement(self, index: int) -> bytes:
        """What SPDM block ``index + 1`` of every simulated GPU reports."""
        return self.golden(index)[-1]

    def to_json(self) -> dict[str, object]:
        return {
            "chip": self.chip,
            "arch": self.arch,
            "driver_version": self.driver_version,
            "vbios_version": self.vbios_version,
            "project": self.project,
            "project_sku": self.project_sku,
            "chip_sku": self.chip_sku,
            "board_id": self.board_id,
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> GpuModel:
        """Raises ValueError when a field is missing or not what the simulator makes."""
        strings = ("chip", "arch", "driver_version", "vbios_version", "project")
        values: dict[str, str] = {}
        for key in (*strings, "project_sku", "chip_sku"):
            value = doc.get(key)
            if not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
            values[key] = value
        board_id = doc.get("board_id")
        if not isinstance(board_id, int) or isinstance(board_id, bool):
            raise ValueError("board_id must be an integer")
        return cls(board_id=board_id, **values)
