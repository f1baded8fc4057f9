"""A crypto-agile UEFI event log for the demo's software TPM.

swtpm has no firmware, so nothing logs what the demo measures. This writes the
log a firmware would have written for the same measurements (TCG PC Client
PFP 10.2: a SHA-1-format Spec ID event, then TCG_PCR_EVENT2 records with SHA-1
and SHA-256 digests), so that the agent can send it and the verifier can
replay it against the quote like a real host's. Demo and tests only.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

from verifier.evidence.tpm.eventlog_encode import encode_event
from verifier.evidence.tpm.eventlog_model import Event

EV_NO_ACTION = 0x00000003
EV_SEPARATOR = 0x00000004
EV_IPL = 0x0000000D
EV_EFI_ACTION = 0x80000007
# The separator firmware measures into PCRs 0-7 at ReadyToBoot (PFP 3.3.2: 0 when
# pre-boot measurement succeeded); the verifier requires one in each of them.
SEPARATOR = b"\x00\x00\x00\x00"
FIRMWARE_PCRS = range(8)
_ALGORITHMS = {"sha1": 0x0004, "sha256": 0x000B}


def _spec_id_event() -> bytes:
    # platformClass, specVersionMinor, specVersionMajor, specErrata, uintnSize (2: UINT64)
    spec = b"Spec ID Event03\x00" + struct.pack("<IBBBB", 0, 0, 2, 0, 2)
    spec += struct.pack("<I", len(_ALGORITHMS))
    for name, alg_id in _ALGORITHMS.items():
        spec += struct.pack("<HH", alg_id, hashlib.new(name).digest_size)
    spec += b"\x00"  # vendorInfoSize
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec)) + spec


def build_event_log(measurements: Iterable[tuple[int, bytes]]) -> bytes:
    """The log of ``(pcr, data)`` measurements made with TPM2_PCR_Event, in order."""
    return build_typed_log((pcr, EV_IPL, data) for pcr, data in measurements)


def build_typed_log(measurements: Iterable[tuple[int, int, bytes]]) -> bytes:
    """The log of ``(pcr, event type, data)`` measurements made with TPM2_PCR_Event."""
    events = (
        Event(
            index=index,
            pcr=pcr,
            event_type=event_type,
            digests={name: hashlib.new(name, data).digest() for name in _ALGORITHMS},
            data=data,
            offset=0,  # not written
        )
        for index, (pcr, event_type, data) in enumerate(measurements, start=1)
    )
    return _spec_id_event() + b"".join(encode_event(event, _ALGORITHMS) for event in events)
