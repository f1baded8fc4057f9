"""Replay a parsed event log into the PCR values it claims, one bank at a time.

:func:`replay` applies, in order:

1. the bank must be one the log declares (SHA-1 legacy logs: only ``sha1``) and one
   hashlib can compute;
2. the PCR0 start value: ``00..0L`` if a ``StartupLocality`` EV_NO_ACTION event
   (PFP 10.4.5.3; 17 bytes, PCR0, before any PCR0 extension, at most one) gives
   locality L in {0, 3}; ``00..04`` if the first extended PCR0 event is
   ``EV_EFI_HCRTM_EVENT`` (the TPM's ``_TPM_Hash_Start`` sets PCR0 to 4 before the
   H-CRTM digest is extended; an H-CRTM event anywhere else in PCR0 is refused);
   ``00..00`` otherwise. Every other PCR starts at zero;
3. every event is extended (``PCR = H(PCR || digest)``) except EV_NO_ACTION events
   (never extended, whatever digest they carry: SP800-155 and StartupLocality
   events have all-zero ones that ``tpm2_eventlog`` 5.4 wrongly extends) and events
   at PCR index 0xFFFFFFFF (Windows' non-extended events);
4. an extended event must carry a digest for the bank: otherwise its data would be
   trusted by policy without being bound by that bank's quote, so the bank is
   refused (:class:`ReplayError`) rather than replayed without it;
5. DRTM PCRs 17-22 reset to a different value and are not the firmware's to
   extend; an SRTM log that touches them is refused.

The result holds exactly the PCRs the log extends. There is no tolerance for known
firmware bugs (go-attestation appends the two missing ExitBootServices events to
``ebs_event_missing_eventlog``; we do not): a log that does not replay is rejected.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping

from verifier.evidence.tpm.eventlog import (
    EV_EFI_HCRTM_EVENT,
    EV_NO_ACTION,
    PCR_NOT_EXTENDED,
    EventLog,
)

__all__ = ["ReplayError", "compare_replay", "replay", "start_locality"]

_STARTUP_LOCALITY = b"StartupLocality\x00"
_STARTUP_LOCALITY_SIZE = len(_STARTUP_LOCALITY) + 1
# PFP 10.4.5.3: TPM2_Startup is sent at locality 0 or 3. H-CRTM (locality 4) is
# signalled by the EV_EFI_HCRTM_EVENT itself, never by this event.
_STARTUP_LOCALITIES = (0, 3)
_HCRTM_LOCALITY = 4
_DRTM_PCRS = range(17, 23)
_HASHERS: Mapping[str, Callable[[bytes], hashlib._Hash]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}


class ReplayError(ValueError):
    """A parsed log cannot be replayed in the requested bank.

    ``code`` is a short stable token for a verdict reason (never parse the message).
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def start_locality(log: EventLog) -> int:
    """The locality whose value PCR0 starts at: 0, 3 (StartupLocality) or 4 (H-CRTM)."""
    locality: int | None = None
    pcr0_extended = False
    for event in log.events:
        if event.pcr != 0:
            continue
        if event.event_type == EV_NO_ACTION:
            if not event.data.startswith(_STARTUP_LOCALITY):
                continue
            if len(event.data) != _STARTUP_LOCALITY_SIZE:
                raise ReplayError(
                    f"event {event.index}: StartupLocality data is {len(event.data)} bytes",
                    code="bad_startup_locality",
                )
            # After PCR0 has been extended the start value is history; a late or
            # repeated event could only be an attempt to rewrite it.
            if locality is not None or pcr0_extended:
                raise ReplayError(
                    f"event {event.index}: StartupLocality repeated or after a PCR0 extension",
                    code="bad_startup_locality",
                )
            locality = event.data[-1]
            if locality not in _STARTUP_LOCALITIES:
                raise ReplayError(
                    f"event {event.index}: StartupLocality {locality}",
                    code="bad_startup_locality",
                )
            continue
        if event.event_type == EV_EFI_HCRTM_EVENT:
            if pcr0_extended or locality is not None:
                raise ReplayError(
                    f"event {event.index}: H-CRTM event is not the first PCR0 measurement",
                    code="bad_hcrtm",
                )
            locality = _HCRTM_LOCALITY
        pcr0_extended = True
    return 0 if locality is None else locality


def replay(log: EventLog, *, bank: str) -> dict[int, bytes]:
    """PCR index -> value after every extension in ``bank`` (checks: module docstring)."""
    if bank not in log.banks:
        raise ReplayError(f"log has no {bank} bank (has {log.banks})", code="no_bank")
    try:
        size = hashlib.new(bank).digest_size
    except ValueError as exc:
        raise ReplayError(f"cannot compute {bank}", code="unsupported_bank") from exc
    locality = start_locality(log)
    # The named constructor where hashlib has one: hashlib.new looks the name up on
    # every call, a third of the cost of one extension.
    extend = _HASHERS.get(bank) or functools.partial(hashlib.new, bank)
    pcrs: dict[int, bytes] = {}
    for event in log.events:
        if event.event_type == EV_NO_ACTION or event.pcr == PCR_NOT_EXTENDED:
            continue
        if event.pcr in _DRTM_PCRS:
            raise ReplayError(
                f"event {event.index}: DRTM PCR {event.pcr} in a boot log", code="drtm_pcr"
            )
        digest = event.digests.get(bank)
        if digest is None:
            raise ReplayError(
                f"event {event.index} (PCR{event.pcr}) has no {bank} digest",
                code="missing_digest",
            )
        current = pcrs.get(event.pcr)
        if current is None:
            start = locality if event.pcr == 0 else 0
            current = start.to_bytes(size, "big")
        pcrs[event.pcr] = extend(current + digest).digest()
    return pcrs


def compare_replay(replayed: Mapping[int, bytes], quoted: Mapping[int, bytes]) -> list[int]:
    """The replayed PCRs whose quoted value differs or was not quoted, ascending.

    Quoted PCRs the log does not touch (PCR10 for IMA, application PCRs) are not the
    log's to explain and are ignored here; policy decides whether they must be zero.
    """
    return sorted(pcr for pcr, value in replayed.items() if quoted.get(pcr) != value)
