"""A simulated NVIDIA GPU fleet.

Real formats (SPDM 1.1 reports with Hopper v1 opaque data, 5-certificate device
chains with an FWID extension, XML-DSig-signed SWID RIMs, OCSP responses), made
under freshly generated TEST roots that the verifier trusts only where they are
pinned explicitly. See :mod:`devsim.nvidia.fleet` for the directory layout.
"""

from devsim.nvidia.fleet import (
    MAX_GPUS,
    MAX_VALIDITY_DAYS,
    Fleet,
    FleetError,
    create_fleet,
    load_fleet,
)
from devsim.nvidia.model import GpuModel

__all__ = [
    "MAX_GPUS",
    "MAX_VALIDITY_DAYS",
    "Fleet",
    "FleetError",
    "GpuModel",
    "create_fleet",
    "load_fleet",
]
