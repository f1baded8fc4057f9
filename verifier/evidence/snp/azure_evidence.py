"""Parse Azure SNP vTPM evidence and the HCL runtime claims (untrusted bytes).

The evidence is the JSON document trustee's ``az-snp-vtpm`` attester sends
(version 2)::

    {"version": 2,
     "tpm_quote": {"signature": HEX, "message": HEX, "pcrs": [HEX, ...]},
     "hcl_report": BASE64URL, "vcek": BASE64URL}

``message`` is the TPMS_ATTEST the vTPM signed, ``signature`` the bare RSA
signature over it (RSASSA-PKCS1-v1_5, SHA-256) by the vTPM attestation key,
``pcrs`` the SHA-256 bank's values from PCR 0 up, ``hcl_report`` the HCL report
(``hcl.py``), ``vcek`` the VCEK in DER. Only exactly this shape is accepted:
another version, an unknown or duplicated member, non-strict hex or base64url, or
a length out of bounds raises :class:`ParseError`, and nothing else escapes.

The runtime claims (``parse_runtime_claims``) are the JSON the paravisor hashes
into REPORT_DATA; its ``keys`` entry ``HCLAkPub`` (an RSA JWK) is the vTPM's
attestation key. Nothing here is authenticated.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from verifier.evidence.errors import ParseError
from verifier.evidence.json_members import unique_members
from verifier.evidence.snp.hcl import MAX_HCL_SIZE, HclReport, parse_hcl_report
from verifier.evidence.tpm.keys import MIN_RSA_BITS
from verifier.evidence.tpm.parse import QuoteInfo, parse_quote_attest
from verifier.evidence.tpm.parse_common import MAX_ATTEST_SIZE, MAX_SIGNATURE_SIZE

__all__ = [
    "AK_KID",
    "AzureVtpmEvidence",
    "RuntimeClaims",
    "parse_azure_evidence",
    "parse_runtime_claims",
]

# The vector is 6 KB: an HCL report (2.6 KB raw, 3.5 KB as base64url), a VCEK
# (1.3 KB DER), a quote and 24 PCRs in hex. 64 KiB bounds the JSON work.
MAX_EVIDENCE_SIZE = 64 * 1024
# A VCEK is about 1.3 KB of DER; 8 KiB leaves room and bounds the X.509 parse.
MAX_VCEK_SIZE = 8 * 1024
# A TPM has 24 PCRs per bank.
MAX_PCRS = 24
PCR_SIZE = 32  # the evidence carries the SHA-256 bank
# JSON nesting: the evidence is 2 deep, the runtime claims 3; deeper is not Azure's.
MAX_DEPTH = 8
# Runtime claims list the vTPM's AK and EK; a handful more is still plausible.
MAX_KEYS = 16
# RSA above 16384 bits is no real vTPM key and costs verification time.
MAX_RSA_BITS = 16384
AK_KID = "HCLAkPub"
EVIDENCE_VERSION = 2

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


@dataclass(frozen=True, slots=True)
class AzureVtpmEvidence:
    """Azure SNP vTPM evidence, split and parsed, nothing verified.

    ``attest`` is the exact TPMS_ATTEST bytes the signature is over; ``quote`` their
    parse. ``pcrs`` is None when the evidence carries no PCR values.
    """

    version: int
    attest: bytes
    quote: QuoteInfo
    signature: bytes
    pcrs: tuple[bytes, ...] | None
    hcl_report: bytes
    hcl: HclReport
    vcek: bytes


@dataclass(frozen=True, slots=True)
class RuntimeClaims:
    """The runtime claims' vTPM attestation key and VM configuration (unverified)."""

    ak: rsa.RSAPublicKey
    ak_bits: int
    vm_configuration: Mapping[str, Any]
    user_data: str | None


def _depth(value: Any, limit: int) -> int:
    if isinstance(value, dict):
        children = list(value.values())
    elif isinstance(value, list):
        children = value
    else:
        return 0
    if limit == 0:
        raise ParseError(f"JSON nested deeper than {MAX_DEPTH}")
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


def _load_json(data: bytes, what: str, limit: int) -> Any:
    if len(data) > limit:
        raise ParseError(f"{what} over {limit} bytes", code="too_large")
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=unique_members)
    except ParseError as exc:
        raise ParseError(f"{what}: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ParseError(f"{what} is not UTF-8 JSON") from None
    _depth(doc, MAX_DEPTH)
    return doc


def _members(doc: Any, what: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ParseError(f"{what} is not a JSON object")
    missing = required - doc.keys()
    unknown = doc.keys() - required - optional
    if missing or unknown:
        raise ParseError(f"{what}: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return doc


def _text(value: Any, what: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise ParseError(f"{what} is not a strict {'hex' if pattern is _HEX else 'base64url'}")
    return value


def _hex(value: Any, what: str, *, low: int, high: int) -> bytes:
    raw = bytes.fromhex(_text(value, what, _HEX))
    if not low <= len(raw) <= high:
        raise ParseError(f"{what}: {len(raw)} bytes, expected {low}..{high}")
    return raw


def _b64url(value: Any, what: str, *, high: int) -> bytes:
    text = _text(value, what, _B64URL)
    if len(text) > (high + 2) // 3 * 4:
        raise ParseError(f"{what} over {high} bytes", code="too_large")
    bare = text.rstrip("=")
    try:
        raw = base64.b64decode(bare + "=" * (-len(bare) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ParseError(f"{what} is not base64url") from None
    if not raw or len(raw) > high:
        raise ParseError(f"{what}: {len(raw)} bytes, expected 1..{high}")
    return raw


def _pcrs(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > MAX_PCRS:
        raise ParseError(f"tpm_quote.pcrs is not a list of at most {MAX_PCRS} values")
    return tuple(
        _hex(v, f"tpm_quote.pcrs[{i}]", low=PCR_SIZE, high=PCR_SIZE) for i, v in enumerate(value)
    )


def parse_azure_evidence(data: bytes) -> AzureVtpmEvidence:
    """Parse the evidence JSON (module docstring), its TPMS_ATTEST (a quote) and its
    HCL report. Raises ParseError only; ``code`` is ``too_large`` for an over-long
    input or member, else that of the failing part."""
    doc = _members(
        _load_json(data, "Azure evidence", MAX_EVIDENCE_SIZE),
        "Azure evidence",
        {"version", "tpm_quote", "hcl_report", "vcek"},
        set(),
    )
    version = doc["version"]
    if type(version) is not int or version != EVIDENCE_VERSION:
        raise ParseError(f"Azure evidence version {version!r}, expected {EVIDENCE_VERSION}")
    quote = _members(doc["tpm_quote"], "tpm_quote", {"signature", "message"}, {"pcrs"})
    attest = _hex(quote["message"], "tpm_quote.message", low=1, high=MAX_ATTEST_SIZE)
    signature = _hex(quote["signature"], "tpm_quote.signature", low=1, high=MAX_SIGNATURE_SIZE)
    pcrs = _pcrs(quote["pcrs"]) if "pcrs" in quote else None
    hcl_report = _b64url(doc["hcl_report"], "hcl_report", high=MAX_HCL_SIZE)
    vcek = _b64url(doc["vcek"], "vcek", high=MAX_VCEK_SIZE)
    try:
        info = parse_quote_attest(attest)
    except ParseError as exc:
        raise ParseError(f"tpm_quote.message: {exc}", code=exc.code) from None
    try:
        hcl = parse_hcl_report(hcl_report)
    except ParseError as exc:
        raise ParseError(f"hcl_report: {exc}", code=exc.code) from None
    return AzureVtpmEvidence(
        version=version,
        attest=attest,
        quote=info,
        signature=signature,
        pcrs=pcrs,
        hcl_report=hcl_report,
        hcl=hcl,
        vcek=vcek,
    )


def _jwk_int(value: Any, what: str, max_bytes: int) -> int:
    if not isinstance(value, str) or "=" in value:
        raise ParseError(f"{what} is not unpadded base64url")  # RFC 7515 2: no padding
    raw = _b64url(value, what, high=max_bytes)
    return int.from_bytes(raw, "big")


def _attestation_key(jwk: Mapping[str, Any]) -> tuple[rsa.RSAPublicKey, int]:
    if jwk.get("kty") != "RSA":
        raise ParseError(
            f"{AK_KID} is not an RSA key (kty {jwk.get('kty')!r})", code="ak_unsupported"
        )
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "sign" not in ops):
        raise ParseError(f"{AK_KID} key_ops {ops!r} lack 'sign'", code="ak_unsupported")
    n = _jwk_int(jwk.get("n"), f"{AK_KID}.n", MAX_RSA_BITS // 8)
    e = _jwk_int(jwk.get("e"), f"{AK_KID}.e", 8)
    if n.bit_length() < MIN_RSA_BITS:
        raise ParseError(f"{AK_KID} is RSA-{n.bit_length()}", code="ak_weak_key")
    try:
        # Checks e odd and >= 3, n odd and > e.
        key = rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise ParseError(f"{AK_KID} is not a valid RSA key: {exc}", code="ak_invalid") from None
    return key, n.bit_length()


def parse_runtime_claims(data: bytes) -> RuntimeClaims:
    """The runtime claims JSON: ``keys`` must hold exactly one ``HCLAkPub`` entry,
    an RSA JWK (``kty`` RSA, ``key_ops`` including ``sign`` when present) of
    2048..16384 bits. ParseError codes: ``ak_missing``, ``ak_unsupported``,
    ``ak_weak_key``, ``ak_invalid``, else ``malformed``/``too_large``."""
    doc = _load_json(data, "runtime claims", MAX_HCL_SIZE)
    if not isinstance(doc, dict):
        raise ParseError("runtime claims are not a JSON object")
    keys = doc.get("keys")
    if not isinstance(keys, list) or len(keys) > MAX_KEYS:
        raise ParseError(f"runtime claims: 'keys' is not a list of at most {MAX_KEYS}")
    if not all(isinstance(k, dict) for k in keys):
        raise ParseError("runtime claims: a 'keys' entry is not an object")
    found = [k for k in keys if k.get("kid") == AK_KID]
    if len(found) != 1:
        # Two AKs would leave it open which one the quote must be signed by.
        raise ParseError(f"runtime claims hold {len(found)} {AK_KID} keys", code="ak_missing")
    ak, bits = _attestation_key(found[0])
    config = doc.get("vm-configuration", {})
    user_data = doc.get("user-data")
    if not isinstance(config, dict) or not (user_data is None or isinstance(user_data, str)):
        raise ParseError("runtime claims: bad 'vm-configuration' or 'user-data'")
    return RuntimeClaims(ak=ak, ak_bits=bits, vm_configuration=config, user_data=user_data)
