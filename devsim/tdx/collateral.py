"""DCAP collateral for a simulated TDX host, as Intel PCS serves it, signed by the TEST
TCB Signing key.

TDX TCB Info v3 (``{"tcbInfo": {...}, "signature": "<hex r||s>"}``) and TD QE
Identity v2 (``{"enclaveIdentity": {...}, "signature": ...}``): the signature is
ECDSA P-256 SHA-256 over the exact bytes of the member's value as served, so the
value is serialised once (compactly, as PCS does) and the response is assembled
around those bytes.

The TCB Info lists the simulated platform's own level first (UpToDate) and one
older level (OutOfDate) below it; the TDX module identity ``TDX_<major>`` and the
QE identity likewise rate the simulated module and QE UpToDate.

:class:`CollateralShape` lets a test serve other collateral, still validly signed:
other ``tcbEvaluationDataNumber`` values (collateral from before a TCB recovery)
or the TCB levels oldest first (against Intel's order, which the verifier refuses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from devsim.tdx.model import Platform
from devsim.tdx.pki import Validity

__all__ = ["CollateralShape", "qe_identity", "tcb_info"]

TCB_EVALUATION_NUMBER = 17
# tcbDate of the simulated platform's level and of the older one below it.
CURRENT_TCB_DATE = "2024-11-13T00:00:00Z"
OLDER_TCB_DATE = "2023-08-09T00:00:00Z"
_OLD_ADVISORIES = ["INTEL-SA-TEST-0001"]


@dataclass(frozen=True)
class CollateralShape:
    """What a test may change in the collateral (the defaults are what Intel serves)."""

    tcb_evaluation_number: int = TCB_EVALUATION_NUMBER
    qe_evaluation_number: int = TCB_EVALUATION_NUMBER
    # The platform's TCB levels oldest first: out of Intel's (newest first) order.
    levels_oldest_first: bool = False


DEFAULT_SHAPE = CollateralShape()


def _time(moment: datetime) -> str:
    # PCS's form: UTC, whole seconds, "Z".
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _signed_response(member: str, value: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> bytes:
    body = json.dumps(value, separators=(",", ":")).encode()
    r, s = decode_dss_signature(key.sign(body, ec.ECDSA(hashes.SHA256())))
    signature = (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()
    return b'{"' + member.encode() + b'":' + body + b',"signature":"' + signature.encode() + b'"}'


def _svns(values: tuple[int, ...] | bytes) -> list[dict[str, int]]:
    return [{"svn": value} for value in values]


def _module(platform: Platform) -> dict[str, str]:
    return {
        "mrsigner": platform.mr_signer_seam.hex(),
        "attributes": platform.seam_attributes.hex(),
        "attributesMask": "FFFFFFFFFFFFFFFF",
    }


def tcb_info(
    platform: Platform,
    validity: Validity,
    key: ec.EllipticCurvePrivateKey,
    *,
    shape: CollateralShape = DEFAULT_SHAPE,
) -> bytes:
    """The signed TDX TCB Info response for ``platform``'s FMSPC."""
    module_svn = platform.tee_tcb_svn[0]
    value = {
        "id": "TDX",
        "version": 3,
        "issueDate": _time(validity.not_before),
        "nextUpdate": _time(validity.not_after),
        "fmspc": platform.fmspc.hex(),
        "pceId": platform.pce_id.hex(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": shape.tcb_evaluation_number,
        "tdxModule": _module(platform),
        "tdxModuleIdentities": [
            {
                "id": f"TDX_{platform.module_major:02X}",
                **_module(platform),
                "tcbLevels": [
                    {
                        "tcb": {"isvsvn": module_svn},
                        "tcbDate": CURRENT_TCB_DATE,
                        "tcbStatus": "UpToDate",
                    },
                    {
                        "tcb": {"isvsvn": max(0, module_svn - 2)},
                        "tcbDate": OLDER_TCB_DATE,
                        "tcbStatus": "OutOfDate",
                        "advisoryIDs": _OLD_ADVISORIES,
                    },
                ],
            }
        ],
        "tcbLevels": _platform_levels(platform, shape),
    }
    return _signed_response("tcbInfo", value, key)


def _platform_levels(platform: Platform, shape: CollateralShape) -> list[dict[str, Any]]:
    older_sgx = tuple(max(0, svn - 1) for svn in platform.sgx_components)
    older_tdx = bytes(max(0, svn - 1) for svn in platform.tee_tcb_svn)
    levels: list[dict[str, Any]] = [
        {
            "tcb": {
                "sgxtcbcomponents": _svns(platform.sgx_components),
                "pcesvn": platform.pce_svn,
                "tdxtcbcomponents": _svns(platform.tee_tcb_svn),
            },
            "tcbDate": CURRENT_TCB_DATE,
            "tcbStatus": "UpToDate",
        },
        {
            "tcb": {
                "sgxtcbcomponents": _svns(older_sgx),
                "pcesvn": max(0, platform.pce_svn - 2),
                "tdxtcbcomponents": _svns(older_tdx),
            },
            "tcbDate": OLDER_TCB_DATE,
            "tcbStatus": "OutOfDate",
            "advisoryIDs": _OLD_ADVISORIES,
        },
    ]
    return levels[::-1] if shape.levels_oldest_first else levels


def qe_identity(
    platform: Platform,
    validity: Validity,
    key: ec.EllipticCurvePrivateKey,
    *,
    shape: CollateralShape = DEFAULT_SHAPE,
) -> bytes:
    """The signed TD QE Identity response naming the simulated QE."""
    qe = platform.qe
    value = {
        "id": "TD_QE",
        "version": 2,
        "issueDate": _time(validity.not_before),
        "nextUpdate": _time(validity.not_after),
        "tcbEvaluationDataNumber": shape.qe_evaluation_number,
        "miscselect": f"{qe.misc_select:08X}",
        "miscselectMask": "FFFFFFFF",
        "attributes": qe.attributes.hex().upper(),
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": qe.mr_signer.hex().upper(),
        "isvprodid": qe.isv_prod_id,
        "tcbLevels": [
            {"tcb": {"isvsvn": qe.isv_svn}, "tcbDate": CURRENT_TCB_DATE, "tcbStatus": "UpToDate"}
        ],
    }
    return _signed_response("enclaveIdentity", value, key)
