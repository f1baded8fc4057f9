"""The UEFI measured-boot event log, read as the kernel exports it.

The agent never parses it: the bytes go to the verifier untouched (it replays
them against the quote). A missing or unreadable log is reported with the
reason rather than treated as an error, because hosts without one (some VMs)
can still be attested on their PCRs alone if the reference allows it.
"""

from __future__ import annotations

from pathlib import Path

from agent.collectors.kernel_file import read_kernel_file
from weightgate.v1 import attestation_pb2

DEFAULT_PATH = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
MAX_SIZE = 8 * 1024 * 1024


def read_boot_log(path: Path) -> attestation_pb2.BootLog:
    data = read_kernel_file(path, MAX_SIZE, what="event log")
    if isinstance(data, str):
        return attestation_pb2.BootLog(unavailable=data)
    return attestation_pb2.BootLog(event_log=data)
