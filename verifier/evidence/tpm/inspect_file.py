"""Recognise a TPM evidence file and decode its fields, for ``evidence inspect``.

Kinds, tried in this order (each test is a strict parse, so the first that parses
is the answer; the order only puts cheap, distinctive prefixes first): PEM public
key or certificate, PCRS.json, TPMS_ATTEST (by its TPM_GENERATED magic), TPMT_SIGNATURE,
TPM2B_PUBLIC, TPMT_PUBLIC, DER certificate, UEFI event log, IMA runtime list
(binary or ASCII, by its first entry). A file whose prefix
says what it is but which does not parse is reported as that kind with the
parse error; anything else is ``unrecognised``, with a hint.

Nothing here is verified: inspecting a quote does not check its signature.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.describe import (
    event_fields,
    public_fields,
    quote_fields,
    signature_fields,
)
from verifier.evidence.tpm.eventlog import parse_event_log
from verifier.evidence.tpm.offline_ima_file import ima_list_fields, looks_like_ima, read_ima_list
from verifier.evidence.tpm.parse import (
    HASH_SIZES,
    TPM_GENERATED_VALUE,
    parse_quote_attest,
    parse_signature,
    parse_tpm2b_public,
    parse_tpmt_public,
)
from verifier.evidence.tpm.replay import ReplayError, start_locality

__all__ = ["Inspection", "inspect_bytes"]

_SIG_ALGS = (0x0014, 0x0016, 0x0018)  # TPM_ALG_RSASSA, RSAPSS, ECDSA
_KEY_TYPES = (0x0001, 0x0023)  # TPM_ALG_RSA, TPM_ALG_ECC
_NONCE_SIZES = (16, 20, 32, 48, 64)


@dataclass(frozen=True, slots=True)
class Inspection:
    """``kind`` is what the file is; ``error`` is set when it is that kind but broken."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "error": self.error, "hint": self.hint, "fields": self.fields}


def inspect_bytes(data: bytes) -> Inspection:
    """What ``data`` is, and its decoded fields (module docstring)."""
    for recognise in _RECOGNISERS:
        found = recognise(data)
        if found is not None:
            return found
    return Inspection("unrecognised", hint=_hint(data))


def _pem(data: bytes) -> Inspection | None:
    if not data.lstrip().startswith(b"-----BEGIN "):
        return None
    try:
        if b"CERTIFICATE-----" in data:
            return _certificate(x509.load_pem_x509_certificate(data), "pem")
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        return Inspection("pem", error=str(exc), hint="a PEM public key or certificate expected")
    return Inspection("pem_public_key", _key_fields(key))


def _key_fields(key: object) -> dict[str, Any]:
    fields: dict[str, Any] = {"type": type(key).__name__.removeprefix("_")}
    if isinstance(key, rsa.RSAPublicKey):
        fields.update(type="rsa", key_bits=key.key_size)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        fields.update(type="ecc", curve=key.curve.name, key_bits=key.key_size)
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        fields["spki_sha256"] = hashlib.sha256(spki).hexdigest()
    return fields


def _certificate(cert: x509.Certificate, encoding: str) -> Inspection:
    with warnings.catch_warnings():
        # Real TPM vendor CAs have attributes longer than RFC 5280's bounds (GCE's EK
        # intermediates: 79 and 84 characters); cryptography warns, we just print them.
        warnings.simplefilter("ignore", UserWarning)
        subject, issuer = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
    return Inspection(
        "x509_certificate",
        {
            "encoding": encoding,
            "subject": subject,
            "issuer": issuer,
            "serial": f"{cert.serial_number:x}",
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "sha256_fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
            "public_key": _key_fields(cert.public_key()),
        },
    )


def _pcrs_json(data: bytes) -> Inspection | None:
    if not data.lstrip().startswith(b"{"):
        return None
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None  # not JSON after all: let the hint say what it looks like
    banks = document.get("pcrs") if isinstance(document, dict) else None
    if not isinstance(banks, dict):
        hint = 'JSON, but not PCRS.json ({"pcrs": {"sha256": {"0": "<hex>", ...}}})'
        return Inspection("unrecognised", hint=hint)
    fields: dict[str, Any] = {}
    for bank, values in banks.items():
        size = HASH_SIZES.get(bank)
        ok = size is not None and isinstance(values, dict)
        try:
            decoded = {int(i): bytes.fromhex(v) for i, v in values.items()} if ok else {}
        except (ValueError, TypeError, AttributeError):
            ok = False
        if not ok or any(not 0 <= i <= 23 or len(v) != size for i, v in decoded.items()):
            error = f"pcrs.{bank}: expected PCR index 0-23 -> {size or '?'}-byte hex value"
            return Inspection("pcrs_json", fields, error=error)
        fields[bank] = {str(i): decoded[i].hex() for i in sorted(decoded)}
    return Inspection("pcrs_json", {"banks": sorted(fields), "pcrs": fields})


def _attest(data: bytes) -> Inspection | None:
    if len(data) < 6 or int.from_bytes(data[:4], "big") != TPM_GENERATED_VALUE:
        return None
    st = int.from_bytes(data[4:6], "big")
    try:
        return Inspection("tpms_attest_quote", quote_fields(parse_quote_attest(data)))
    except ParseError as exc:
        if exc.code == "not_a_quote":
            # certify (0x8017), creation (0x801a), ...: not decoded here.
            return Inspection("tpms_attest", {"type": f"0x{st:04x}"}, hint="not a quote")
        return Inspection("tpms_attest_quote", error=str(exc))


def _tpm_structure(
    kind: str, parse: Callable[[bytes], Any], describe: Callable[[Any], dict[str, Any]]
) -> Callable[[bytes], Inspection | None]:
    def recognise(data: bytes) -> Inspection | None:
        try:
            return Inspection(kind, describe(parse(data)))
        except ParseError:
            return None

    return recognise


def _signature(data: bytes) -> Inspection | None:
    if len(data) < 2 or int.from_bytes(data[:2], "big") not in _SIG_ALGS:
        return None
    return _tpm_structure("tpmt_signature", parse_signature, signature_fields)(data)


def _tpm2b_public(data: bytes) -> Inspection | None:
    if len(data) < 2 or int.from_bytes(data[:2], "big") != len(data) - 2:
        return None
    return _tpm_structure("tpm2b_public", parse_tpm2b_public, public_fields)(data)


def _tpmt_public(data: bytes) -> Inspection | None:
    if len(data) < 2 or int.from_bytes(data[:2], "big") not in _KEY_TYPES:
        return None
    return _tpm_structure("tpmt_public", parse_tpmt_public, public_fields)(data)


def _der_certificate(data: bytes) -> Inspection | None:
    if not data.startswith(b"\x30\x82"):
        return None
    try:
        return _certificate(x509.load_der_x509_certificate(data), "der")
    except ValueError:
        return None


def _event_log(data: bytes) -> Inspection | None:
    try:
        log = parse_event_log(data)
    except ParseError as exc:
        # The Spec ID signature at the first event's data says "event log" for sure.
        if data[32:47] == b"Spec ID Event03":
            return Inspection("uefi_event_log", error=str(exc))
        return None
    try:
        locality: int | str = start_locality(log)
    except ReplayError as exc:
        locality = f"refused: {exc}"
    fields: dict[str, Any] = {
        "format": log.format,
        "banks": list(log.banks),
        "pcr0_start_locality": locality,
        "event_count": len(log.events),
    }
    if log.spec_id is not None:
        fields["spec_version"] = ".".join(map(str, log.spec_id.spec_version))
        fields["declared_algorithms"] = [
            a.name or f"0x{a.alg_id:04x}" for a in log.spec_id.algorithms
        ]
    fields["events"] = [event_fields(event) for event in log.events]
    return Inspection("uefi_event_log", fields)


def _ima_list(data: bytes) -> Inspection | None:
    if not looks_like_ima(data):
        return None
    try:
        return Inspection("ima_runtime_list", ima_list_fields(read_ima_list(data)))
    except ParseError as exc:
        return Inspection("ima_runtime_list", error=str(exc))


def _hint(data: bytes) -> str:
    if not data:
        return "the file is empty"
    head = data[:4096]
    text = head.strip()
    if text and all(c in b"0123456789abcdefABCDEF" for c in text):
        return "hex text: a nonce? `evidence verify tpm --nonce` takes it as it is"
    if len(data) in _NONCE_SIZES:
        return f"{len(data)} raw bytes: a digest or a nonce? (--nonce takes hex: xxd -p FILE)"
    return (
        "expected a TPMS_ATTEST quote, TPMT_SIGNATURE, TPM2B_PUBLIC/TPMT_PUBLIC, "
        "PEM key or certificate, UEFI event log, IMA runtime list or PCRS.json"
    )


_RECOGNISERS: tuple[Callable[[bytes], Inspection | None], ...] = (
    _pem,
    _pcrs_json,
    _attest,
    _signature,
    _tpm2b_public,
    _tpmt_public,
    _der_certificate,
    _event_log,
    _ima_list,
)
