"""What a simulated Intel TDX platform reports: TCB, TDX module, quoting enclave.

Values are shaped like a Sapphire Rapids host running TDX module 1.x (Intel TDX
DCAP Quote Generation Library, "Quote Format"; Intel SGX PCK Certificate and CRL
Profile), not copied from any real machine. The TCB Info a simulated guest
ships lists exactly this platform as UpToDate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["PLATFORM", "Platform", "QeModel"]


@dataclass(frozen=True)
class QeModel:
    """The TD quoting enclave as its QE report (SGX report body) and QE Identity name it."""

    mr_signer: bytes  # 32
    mr_enclave: bytes  # 32
    isv_prod_id: int
    isv_svn: int
    misc_select: int
    attributes: bytes  # 16
    auth_data: bytes  # QE auth data: 32 bytes in every Intel QE


@dataclass(frozen=True)
class Platform:
    """A TDX host as its PCK certificate and TD reports present it."""

    fmspc: bytes  # 6
    pce_id: bytes  # 2
    sgx_components: tuple[int, ...]  # 16 SVNs
    pce_svn: int
    tee_tcb_svn: bytes  # 16: [0] module minor SVN, [1] module major version, [2] late ucode
    mr_seam: bytes  # 48: the TDX module's measurement
    mr_signer_seam: bytes  # 48: zero for Intel's module
    seam_attributes: bytes  # 8
    td_attributes: bytes  # 8, little-endian bits; bit 0 (DEBUG) clear
    xfam: bytes  # 8
    qe: QeModel

    @property
    def cpu_svn(self) -> bytes:
        """CPUSVN as the PCK certificate and the QE report carry it: the component SVNs."""
        return bytes(self.sgx_components)

    @property
    def module_major(self) -> int:
        return self.tee_tcb_svn[1]


def _test_value(label: str, size: int) -> bytes:
    # Derived from a label, not random: every simulated host runs "the same" module
    # and QE, as real hosts of one platform do; the TD's own registers are fresh.
    return hashlib.shake_256(b"weightgate devsim.tdx TEST " + label.encode()).digest(size)


PLATFORM = Platform(
    fmspc=bytes.fromhex("50806f000000"),
    pce_id=bytes.fromhex("0000"),
    sgx_components=(3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0),
    pce_svn=13,
    tee_tcb_svn=bytes([5, 1, 3]) + bytes(13),
    mr_seam=_test_value("MRSEAM", 48),
    mr_signer_seam=bytes(48),
    seam_attributes=bytes(8),
    # SEPT_VE_DISABLE (bit 28), as cloud TDs launch; DEBUG (bit 0) off.
    td_attributes=(1 << 28).to_bytes(8, "little"),
    # x87, SSE, AVX, AVX-512 state, PKRU, AMX: a typical TD's XFAM.
    xfam=bytes.fromhex("e71a060000000000"),
    qe=QeModel(
        mr_signer=_test_value("QE MRSIGNER", 32),
        mr_enclave=_test_value("QE MRENCLAVE", 32),
        isv_prod_id=2,  # the TD QE's product id
        isv_svn=4,
        misc_select=0,
        attributes=bytes([0x11]) + bytes(15),  # INIT | PROVISIONKEY, as the TD QE's
        auth_data=bytes(range(32)),
    ),
)
