"""The UEFI measured-boot event log, read as the kernel exports it.

The agent never parses it: the bytes go to the verifier untouched (it replays
them against the quote). A missing or unreadable log is reported with the
reason rather than treated as an error, because hosts without one (some VMs)
can still be attested on their PCRs alone if the reference allows it.
"""

from __future__ import annotations

from pathlib import Path

from weightgate.v1 import attestation_pb2

DEFAULT_PATH = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
# Real logs are tens to hundreds of KiB; securityfs files report size 0, so the
# read is bounded instead of trusting stat().
MAX_SIZE = 8 * 1024 * 1024


def read_boot_log(path: Path) -> attestation_pb2.BootLog:
    try:
        with path.open("rb") as log:
            data = log.read(MAX_SIZE + 1)
    except FileNotFoundError:
        return attestation_pb2.BootLog(unavailable=f"no event log at {path}")
    except OSError as exc:
        return attestation_pb2.BootLog(unavailable=f"cannot read {path}: {exc.strerror}")
    if len(data) > MAX_SIZE:
        return attestation_pb2.BootLog(unavailable=f"{path} is larger than {MAX_SIZE} bytes")
    if not data:
        return attestation_pb2.BootLog(unavailable=f"{path} is empty")
    return attestation_pb2.BootLog(event_log=data)
