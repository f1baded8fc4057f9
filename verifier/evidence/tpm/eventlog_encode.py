"""Write an :class:`EventLog` back to the bytes firmware writes (the inverse of
:func:`~verifier.evidence.tpm.eventlog.parse_event_log`).

For every log the parser accepts and whose Spec ID declares only algorithms it
knows, ``encode_event_log(parse_event_log(raw)) == raw``: the parser keeps every
byte that matters (the Spec ID event's data, each event's digests in their order,
its data), and this module adds none. Digests of algorithms the parser does not
know are not kept, so such logs cannot be written back (ValueError).

Used to build logs for the demo's software TPM and, in tests, to turn a parsed
log into a mutated one without hand-assembled byte offsets.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from verifier.evidence.tpm.eventlog_model import Event, EventLog

__all__ = ["encode_event", "encode_event_log"]

_LEGACY_HEADER = struct.Struct("<II20sI")  # pcr, type, sha1 digest, data size
_EVENT2_HEADER = struct.Struct("<III")  # pcr, type, digest count
_ALG_ID = struct.Struct("<H")
_SIZE = struct.Struct("<I")
_SHA1_SIZE = 20


def _legacy(event: Event) -> bytes:
    digest = event.digests.get("sha1")
    if digest is None or len(digest) != _SHA1_SIZE or len(event.digests) != 1:
        raise ValueError(f"event {event.index}: a SHA-1 format event has one SHA-1 digest")
    return _LEGACY_HEADER.pack(event.pcr, event.event_type, digest, len(event.data)) + event.data


def encode_event(event: Event, alg_ids: Mapping[str, int]) -> bytes:
    """One ``TCG_PCR_EVENT2``; ``alg_ids``: algorithm name -> TPM_ALG_ID (the Spec ID's)."""
    parts = [_EVENT2_HEADER.pack(event.pcr, event.event_type, len(event.digests))]
    for name, digest in event.digests.items():
        alg_id = alg_ids.get(name)
        if alg_id is None:
            raise ValueError(f"event {event.index}: {name} is not declared by the Spec ID")
        parts += (_ALG_ID.pack(alg_id), digest)
    parts += (_SIZE.pack(len(event.data)), event.data)
    return b"".join(parts)


def encode_event_log(log: EventLog) -> bytes:
    """The log's bytes: its first event in the SHA-1 format (the Spec ID event of a
    crypto-agile log), every other in its log's format; ValueError if it cannot be
    written as parsed (see the module docstring)."""
    if not log.events:
        raise ValueError("an event log has at least one event")
    first, rest = log.events[0], log.events[1:]
    if log.spec_id is None:
        return b"".join(_legacy(event) for event in log.events)
    if any(a.name is None for a in log.spec_id.algorithms):
        raise ValueError("the Spec ID declares an algorithm whose digests were not kept")
    alg_ids = {a.name: a.alg_id for a in log.spec_id.algorithms if a.name is not None}
    return _legacy(first) + b"".join(encode_event(event, alg_ids) for event in rest)
