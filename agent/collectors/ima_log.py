"""The IMA runtime measurement list, sent from the entry the verifier asks for.

The agent does not interpret entries; it only finds where entry N starts so it
can skip what the verifier has already appraised this boot. The binary format
(``binary_runtime_measurements``, little-endian on the hosts we support) is, per
entry: PCR u32, SHA-1 template hash (20 bytes), template-name length u32 and
name, then, except for the legacy ``ima`` template, the template-data length u32
and data. Anything this walk cannot frame (the legacy template, a big-endian
list, a list shorter than the verifier expects because the host rebooted) is
sent whole, from entry 0: the verifier always accepts a full list.
"""

from __future__ import annotations

import struct
from pathlib import Path

from agent.collectors.kernel_file import read_kernel_file
from weightgate.v1 import attestation_pb2

DEFAULT_PATH = Path("/sys/kernel/security/ima/binary_runtime_measurements")
MAX_SIZE = 128 * 1024 * 1024
_HEADER = struct.Struct("<I20sI")
_LENGTH = struct.Struct("<I")
_MAX_NAME = 255
_MAX_PCR = 23


def entry_offset(raw: bytes, entry: int) -> int | None:
    """The byte offset where ``entry`` starts, or None if the walk cannot get there."""
    offset = 0
    for _ in range(entry):
        if offset + _HEADER.size > len(raw):
            return None
        pcr, _, name_length = _HEADER.unpack_from(raw, offset)
        if pcr > _MAX_PCR or not 0 < name_length <= _MAX_NAME:
            return None
        offset += _HEADER.size
        name = raw[offset : offset + name_length]
        offset += name_length
        if name == b"ima" or offset + _LENGTH.size > len(raw):
            return None
        (data_length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size + data_length
        if offset > len(raw):
            return None
    return offset


def read_ima_log(path: Path, from_entry: int) -> attestation_pb2.ImaLog:
    raw = read_kernel_file(path, MAX_SIZE, what="IMA list")
    if isinstance(raw, str):
        return attestation_pb2.ImaLog(unavailable=raw)
    offset = entry_offset(raw, from_entry) if from_entry else 0
    if offset is None:
        return attestation_pb2.ImaLog(entries=raw, first_entry=0)
    return attestation_pb2.ImaLog(entries=raw[offset:], first_entry=from_entry)
