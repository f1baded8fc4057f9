"""Parsed TPM structures as JSON-able dicts, for ``evidence inspect`` and claims.

Display only: every value here was parsed by the strict parsers and none is
authenticated by being described. Bytes are hex; event data is summarised (the
first bytes, or decoded text where the PFP says it is text).
"""

from __future__ import annotations

from typing import Any

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.efi_events import parse_image_load_path
from verifier.evidence.tpm.efi_variables import parse_uefi_variable_prefix
from verifier.evidence.tpm.event_types import event_type_name
from verifier.evidence.tpm.eventlog import PCR_NOT_EXTENDED, Event
from verifier.evidence.tpm.keys import TpmaObject
from verifier.evidence.tpm.parse import (
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    PcrSelection,
    QuoteInfo,
    TpmPublic,
    TpmSignature,
)

__all__ = [
    "event_fields",
    "pcr_ranges",
    "public_fields",
    "quote_fields",
    "selection_text",
    "signature_fields",
]

# PFP event types whose data is text: EV_POST_CODE, EV_ACTION, EV_IPL, EV_EFI_ACTION,
# EV_EFI_HCRTM_EVENT ("HCRTM"); EV_S_CRTM_VERSION is UCS-2; EV_NO_ACTION starts with a
# NUL-terminated signature ("Spec ID Event03", "StartupLocality").
_ASCII_EVENTS = frozenset({0x00000001, 0x00000005, 0x0000000D, 0x80000007, 0x80000010})
_EV_S_CRTM_VERSION = 0x00000008
# EV_EFI_VARIABLE_DRIVER_CONFIG, _BOOT, _BOOT2, _AUTHORITY: a UEFI_VARIABLE_DATA.
_VARIABLE_EVENTS = frozenset({0x80000001, 0x80000002, 0x8000000C, 0x800000E0})
# EV_EFI_BOOT_SERVICES_APPLICATION, _DRIVER, EV_EFI_RUNTIME_SERVICES_DRIVER: an image.
_IMAGE_EVENTS = frozenset({0x80000003, 0x80000004, 0x80000005})
_EV_NO_ACTION = 0x00000003
_SUMMARY_BYTES = 24  # enough to recognise a structure, short enough for a table row
_SUMMARY_CHARS = 72
# Events whose data the PFP (or the boot loader) defines as text.


def pcr_ranges(pcrs: tuple[int, ...]) -> str:
    """(0, 1, 2, 3, 7) -> "0-3,7"."""
    parts: list[str] = []
    start = prev = None
    for pcr in (*pcrs, None):
        if pcr is not None and prev is not None and pcr == prev + 1:
            prev = pcr
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = pcr
    return ",".join(parts)


def selection_text(selection: tuple[PcrSelection, ...]) -> str:
    """``sha256:0-10,14+sha384:0,4,7``, in the quote's bank order."""
    return "+".join(f"{s.hash_algorithm}:{pcr_ranges(s.pcrs)}" for s in selection) or "(none)"


def quote_fields(info: QuoteInfo) -> dict[str, Any]:
    clock = info.clock_info
    return {
        "magic": f"0x{TPM_GENERATED_VALUE:08x} (TPM_GENERATED_VALUE)",
        "type": f"0x{TPM_ST_ATTEST_QUOTE:04x} (TPM_ST_ATTEST_QUOTE)",
        "qualified_signer": info.qualified_signer.hex(),
        "extra_data": info.extra_data.hex(),
        "clock_info": {
            "clock_ms": clock.clock,
            "reset_count": clock.reset_count,
            "restart_count": clock.restart_count,
            "safe": clock.safe,
        },
        "firmware_version": f"0x{info.firmware_version:016x}",
        "pcr_selection": {s.hash_algorithm: list(s.pcrs) for s in info.pcr_selection},
        "pcr_selection_text": selection_text(info.pcr_selection),
        "pcr_digest": info.pcr_digest.hex(),
    }


def public_fields(pub: TpmPublic, *, attributes_known: bool = True) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "key_type": pub.key_type,
        "key_bits": pub.key_bits,
        "scheme": pub.scheme or "null",
        "scheme_hash": pub.scheme_hash,
    }
    if pub.ecc_curve is not None:
        fields["curve"] = pub.ecc_curve
    if not attributes_known:
        # The TPMT_PUBLIC around a PEM key was made up here: its name and attributes
        # would describe our wrapper, not the TPM's key.
        fields["attributes"] = "unknown (PEM key)"
        return fields
    names = [flag.name for flag in TpmaObject if flag & pub.attributes and flag.name]
    fields.update(
        {
            "name_algorithm": pub.name_algorithm,
            "name": pub.name.hex(),
            "attributes": f"0x{pub.attributes:08x}",
            "attribute_names": names,
            "auth_policy": pub.auth_policy.hex(),
        }
    )
    return fields


def signature_fields(sig: TpmSignature) -> dict[str, Any]:
    return {
        "scheme": sig.scheme,
        "hash": sig.hash_algorithm,
        # ECDSA: the DER (r, s) that cryptography verifies, not the TPM's encoding.
        "signature_bytes": len(sig.signature),
    }


def _data_summary(event: Event) -> str:
    data = event.data
    if event.event_type in _ASCII_EVENTS and data.isascii():
        return _clip(data.rstrip(b"\0").decode("ascii"))
    if event.event_type == _EV_S_CRTM_VERSION:
        try:
            return _clip(data.decode("utf-16-le").rstrip("\0"))
        except UnicodeDecodeError:
            pass
    if event.event_type == _EV_NO_ACTION and b"\0" in data[:32]:
        # "Spec ID Event03", "StartupLocality" 03, "SP800-155 Event3" ...: signature, then
        # the short payload in hex.
        signature, rest = data.split(b"\0", 1)
        payload = rest.hex() if len(rest) <= 8 else f"(+{len(rest)} bytes)"
        return _clip(f"{signature.decode('ascii', 'replace')} {payload}".rstrip())
    described = _structured(event.event_type, data)
    if described is not None:
        return _clip(described)
    more = f"... ({len(data)} bytes)" if len(data) > _SUMMARY_BYTES else ""
    return data[:_SUMMARY_BYTES].hex() + more


def _structured(event_type: int, data: bytes) -> str | None:
    """A UEFI variable's name and size, or a loaded image's path; None if neither."""
    try:
        if event_type in _VARIABLE_EVENTS:
            variable, _ = parse_uefi_variable_prefix(data)
            return f"{variable.name} {{{variable.guid}}} {len(variable.value)} bytes"
        if event_type in _IMAGE_EVENTS:
            return parse_image_load_path(data)
    except ParseError:
        return None
    return None


def _clip(text: str) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= _SUMMARY_CHARS else text[: _SUMMARY_CHARS - 3] + "..."


def event_fields(event: Event) -> dict[str, Any]:
    return {
        "index": event.index,
        "pcr": "none (0xffffffff)" if event.pcr == PCR_NOT_EXTENDED else event.pcr,
        "type": event_type_name(event.event_type),
        "digests": {bank: digest.hex() for bank, digest in event.digests.items()},
        "data_size": len(event.data),
        "data": _data_summary(event),
    }
