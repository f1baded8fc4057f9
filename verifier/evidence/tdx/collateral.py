"""DCAP collateral: TDX TCB Info (v3) and TD QE Identity (v2) JSON, as Intel PCS serves them.

A response is ``{"tcbInfo": {...}, "signature": "<hex r||s>"}`` (or
``"enclaveIdentity"``). Intel signs the exact bytes of the member's value as
served (ECDSA P-256 / SHA-256), so the raw span is cut from the input, never
re-serialised. Parsing (:func:`parse_tcb_info`, :func:`parse_qe_identity`)
checks structure and bounds and that TCB levels are in the order Intel's status
algorithm needs (``level_order.py``), and raises ParseError only;
:func:`check_collateral` authenticates one response against the TCB signing
chain (verified to the pinned root by the caller) and checks
``issueDate <= at <= nextUpdate``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from verifier.evidence.errors import ParseError
from verifier.evidence.tdx.level_order import require_descending
from verifier.verdict import Reason

__all__ = [
    "TCB_STATUSES",
    "EnclaveTcbLevel",
    "ModuleIdentity",
    "QeIdentity",
    "TcbInfo",
    "TcbLevel",
    "check_collateral",
    "parse_qe_identity",
    "parse_tcb_info",
]

# A TCB Info is 2-5 KB; 1 MiB bounds what a hostile file costs to decode.
MAX_COLLATERAL_BYTES = 1024 * 1024
# Real TCB Infos have about 10 levels; 256 bounds the evaluation loop.
MAX_TCB_LEVELS = 256
MAX_EVALUATION_NUMBER = 0xFFFFFFFF  # a uint32 in Intel's QVL
TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    }
)


@dataclass(frozen=True, slots=True)
class TcbLevel:
    sgx_components: tuple[int, ...]
    pce_svn: int
    tdx_components: tuple[int, ...]
    tcb_date: datetime
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EnclaveTcbLevel:
    isv_svn: int
    tcb_date: datetime
    status: str


@dataclass(frozen=True, slots=True)
class ModuleIdentity:
    """``tdxModule`` (id "") or one of ``tdxModuleIdentities`` ("TDX_01", ...)."""

    id: str
    mr_signer: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[EnclaveTcbLevel, ...]


@dataclass(frozen=True, slots=True)
class TcbInfo:
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    evaluation_number: int
    tdx_module: ModuleIdentity
    module_identities: tuple[ModuleIdentity, ...]
    levels: tuple[TcbLevel, ...]
    signed_bytes: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class QeIdentity:
    issue_date: datetime
    next_update: datetime
    evaluation_number: int
    misc_select: int
    misc_select_mask: int
    attributes: bytes
    attributes_mask: bytes
    mr_signer: bytes
    isv_prod_id: int
    levels: tuple[EnclaveTcbLevel, ...]
    signed_bytes: bytes
    signature: bytes


def _fail(message: str) -> ParseError:
    return ParseError(f"collateral: {message}")


def _members(data: bytes) -> dict[str, tuple[Any, bytes]]:
    """Top-level member name -> (decoded value, raw bytes of the value)."""
    if len(data) > MAX_COLLATERAL_BYTES:
        raise ParseError("collateral: too large", code="too_large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail("not UTF-8") from None
    decoder = json.JSONDecoder()
    members: dict[str, tuple[Any, bytes]] = {}
    pos = _skip(text, 0)
    if text[pos : pos + 1] != "{":
        raise _fail("not a JSON object")
    pos = _skip(text, pos + 1)
    try:
        while True:
            key, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, pos)
            if not isinstance(key, str) or text[pos : pos + 1] != ":":
                raise _fail("malformed member")
            start = _skip(text, pos + 1)
            value, pos = decoder.raw_decode(text, start)
            if key in members:
                raise _fail(f"member {key!r} twice")
            members[key] = (value, text[start:pos].encode("utf-8"))
            pos = _skip(text, pos)
            if text[pos : pos + 1] == "}":
                break
            if text[pos : pos + 1] != ",":
                raise _fail("malformed object")
            pos = _skip(text, pos + 1)
    except (ValueError, RecursionError) as exc:
        raise _fail(f"not JSON: {exc}") from None
    if text[pos + 1 :].strip():
        raise _fail("bytes after the object")
    return members


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _get(doc: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = doc.get(key)
    # bool is an int in Python; no field here is a boolean.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _fail(f"{what}.{key} missing or not {kind.__name__}")
    return value


def _hex(doc: dict[str, Any], key: str, size: int, what: str) -> bytes:
    text = _get(doc, key, str, what)
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise _fail(f"{what}.{key} is not hex") from None
    if len(value) != size:
        raise _fail(f"{what}.{key} is {len(value)} bytes, expected {size}")
    return value


def _date(doc: dict[str, Any], key: str, what: str) -> datetime:
    text = _get(doc, key, str, what)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _fail(f"{what}.{key} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise _fail(f"{what}.{key} has no time zone")
    return value


def _status(doc: dict[str, Any], what: str) -> str:
    status = _get(doc, "tcbStatus", str, what)
    if status not in TCB_STATUSES:
        raise _fail(f"{what}.tcbStatus {status!r} is unknown")
    return str(status)


def _list(doc: dict[str, Any], key: str, what: str) -> list[Any]:
    value: list[Any] = _get(doc, key, list, what)
    if not value or len(value) > MAX_TCB_LEVELS:
        raise _fail(f"{what}.{key} has {len(value)} entries")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"{what} is not an object")
    return value


def _svn(value: Any, limit: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise _fail(f"{what} is not an integer 0..{limit}")
    return value


def _components(doc: dict[str, Any], key: str, what: str) -> tuple[int, ...]:
    items = _get(doc, key, list, what)
    if len(items) != 16:
        raise _fail(f"{what}.{key} has {len(items)} components, expected 16")
    return tuple(_svn(_object(i, what).get("svn"), 0xFF, f"{what}.{key}.svn") for i in items)


def _enclave_levels(doc: dict[str, Any], what: str) -> tuple[EnclaveTcbLevel, ...]:
    levels = []
    for raw in _list(doc, "tcbLevels", what):
        level = _object(raw, f"{what}.tcbLevels[]")
        tcb = _object(level.get("tcb"), f"{what}.tcbLevels[].tcb")
        levels.append(
            EnclaveTcbLevel(
                isv_svn=_svn(tcb.get("isvsvn"), 0xFFFF, f"{what}.isvsvn"),
                tcb_date=_date(level, "tcbDate", what),
                status=_status(level, what),
            )
        )
    keys = [(x.isv_svn,) for x in levels]
    require_descending(keys, [x.tcb_date for x in levels], f"{what}.tcbLevels")
    return tuple(levels)


def _module(doc: dict[str, Any], what: str, *, with_levels: bool) -> ModuleIdentity:
    return ModuleIdentity(
        id=str(doc.get("id", "")) if with_levels else "",
        mr_signer=_hex(doc, "mrsigner", 48, what),
        attributes=_hex(doc, "attributes", 8, what),
        attributes_mask=_hex(doc, "attributesMask", 8, what),
        levels=_enclave_levels(doc, what) if with_levels else (),
    )


def _signed(data: bytes, member: str) -> tuple[dict[str, Any], bytes, bytes]:
    members = _members(data)
    if set(members) != {member, "signature"}:
        raise _fail(f"expected members {member!r} and 'signature', got {sorted(members)}")
    body, raw = members[member]
    signature_hex = members["signature"][0]
    if not isinstance(signature_hex, str):
        raise _fail("signature is not a string")
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        raise _fail("signature is not hex") from None
    if len(signature) != 64:
        raise _fail(f"signature of {len(signature)} bytes, expected 64 (r||s)")
    return _object(body, member), raw, signature


def parse_tcb_info(data: bytes) -> TcbInfo:
    """A PCS TDX TCB Info response (id "TDX", version 3); ParseError only."""
    doc, raw, signature = _signed(data, "tcbInfo")
    what = "tcbInfo"
    if doc.get("id") != "TDX" or doc.get("version") != 3:
        raise _fail("tcbInfo is not a TDX TCB Info version 3")
    levels = []
    for item in _list(doc, "tcbLevels", what):
        level = _object(item, "tcbLevels[]")
        tcb = _object(level.get("tcb"), "tcbLevels[].tcb")
        advisories = level.get("advisoryIDs", [])
        if not isinstance(advisories, list) or not all(isinstance(a, str) for a in advisories):
            raise _fail("advisoryIDs is not a list of strings")
        levels.append(
            TcbLevel(
                sgx_components=_components(tcb, "sgxtcbcomponents", what),
                pce_svn=_svn(tcb.get("pcesvn"), 0xFFFF, "pcesvn"),
                tdx_components=_components(tcb, "tdxtcbcomponents", what),
                tcb_date=_date(level, "tcbDate", what),
                status=_status(level, what),
                advisory_ids=tuple(advisories),
            )
        )
    require_descending(
        [(*x.sgx_components, x.pce_svn, *x.tdx_components) for x in levels],
        [x.tcb_date for x in levels],
        "tcbInfo.tcbLevels",
    )
    identities = doc.get("tdxModuleIdentities", [])
    if not isinstance(identities, list) or len(identities) > MAX_TCB_LEVELS:
        raise _fail("tdxModuleIdentities is not a list")
    return TcbInfo(
        issue_date=_date(doc, "issueDate", what),
        next_update=_date(doc, "nextUpdate", what),
        fmspc=_hex(doc, "fmspc", 6, what),
        pce_id=_hex(doc, "pceId", 2, what),
        evaluation_number=_svn(
            doc.get("tcbEvaluationDataNumber"), MAX_EVALUATION_NUMBER, "tcbEvaluationDataNumber"
        ),
        tdx_module=_module(
            _object(doc.get("tdxModule"), "tdxModule"), "tdxModule", with_levels=False
        ),
        module_identities=tuple(
            _module(
                _object(m, f"tdxModuleIdentities[{n}]"),
                f"tdxModuleIdentities[{n}]",
                with_levels=True,
            )
            for n, m in enumerate(identities)
        ),
        levels=tuple(levels),
        signed_bytes=raw,
        signature=signature,
    )


def parse_qe_identity(data: bytes) -> QeIdentity:
    """A PCS TD QE identity response (id "TD_QE", version 2); ParseError only."""
    doc, raw, signature = _signed(data, "enclaveIdentity")
    what = "enclaveIdentity"
    if doc.get("id") != "TD_QE" or doc.get("version") != 2:
        raise _fail("enclaveIdentity is not a TD_QE identity version 2")
    return QeIdentity(
        issue_date=_date(doc, "issueDate", what),
        next_update=_date(doc, "nextUpdate", what),
        evaluation_number=_svn(
            doc.get("tcbEvaluationDataNumber"), MAX_EVALUATION_NUMBER, "tcbEvaluationDataNumber"
        ),
        misc_select=int.from_bytes(_hex(doc, "miscselect", 4, what), "big"),
        misc_select_mask=int.from_bytes(_hex(doc, "miscselectMask", 4, what), "big"),
        attributes=_hex(doc, "attributes", 16, what),
        attributes_mask=_hex(doc, "attributesMask", 16, what),
        mr_signer=_hex(doc, "mrsigner", 32, what),
        isv_prod_id=_svn(doc.get("isvprodid"), 0xFFFF, "isvprodid"),
        levels=_enclave_levels(doc, what),
        signed_bytes=raw,
        signature=signature,
    )


def check_collateral(
    collateral: TcbInfo | QeIdentity,
    *,
    signing_key: ec.EllipticCurvePublicKey,
    at: datetime,
    what: str,
) -> list[Reason]:
    """Every problem with one collateral response at ``at``.

    Checks: the signature by the TCB signing key over the exact served bytes
    (``tdx.collateral.signature_invalid``; nothing else is checked after it
    fails); ``issueDate <= at`` (``tdx.collateral.not_yet_valid``);
    ``at <= nextUpdate`` (``tdx.collateral.expired``).
    """
    sig = collateral.signature
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        signing_key.verify(der, collateral.signed_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return [Reason("tdx.collateral.signature_invalid", f"{what} is not signed by TCB Signing")]
    reasons = []
    if at < collateral.issue_date:
        reasons.append(
            Reason("tdx.collateral.not_yet_valid", f"{what} issued {collateral.issue_date}")
        )
    if at > collateral.next_update:
        reasons.append(
            Reason("tdx.collateral.expired", f"{what} next update {collateral.next_update} is past")
        )
    return reasons
