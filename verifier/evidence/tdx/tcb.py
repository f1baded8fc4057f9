"""TCB status of a TDX platform from authenticated TCB Info and QE Identity.

The algorithm of Intel's Quote Verification Library (TDX, TCB Info v3):

1. the TCB Info must be for the PCK's FMSPC (compared as bytes, so the case of
   the hex in the JSON does not matter) and PCE-ID;
2. platform level: the first level whose 16 SGX component SVNs and PCESVN are
   all <= the PCK certificate's, and whose TDX component SVNs are <= TEE_TCB_SVN
   (levels come highest first: the parser refuses any other order, see
   ``level_order.py``, so the first match is the level Intel's QVL picks);
   when TEE_TCB_SVN[1] (the TDX module's
   major version) is non-zero and the TCB Info has module identities, bytes 0
   and 1 are judged by the module identity instead. No level: ``not_supported``;
3. TDX module: ``TDX_<major>`` identity (or ``tdxModule`` for major 0) must match
   MRSIGNERSEAM and SEAMATTRIBUTES under its mask; its level is the first whose
   ISVSVN <= TEE_TCB_SVN[0]; an OutOfDate / Revoked module lowers the status;
4. QE identity (when given): MRSIGNER, ISVPRODID, MISCSELECT and ATTRIBUTES under
   their masks; the QE level by ISVSVN; an OutOfDate / Revoked QE lowers the status.

TEE_TCB_SVN is the only TDX TCB judged: the SVNs of the TDX module the TD was
launched under. A TD 1.5 body also carries TEE_TCB_SVN2, the SVNs of the module
running now (they differ after a TD-preserving module update); it is parsed and
reported as a claim but not evaluated. This is a deliberate, stated deviation
from judging the module that runs now: a TD is rated by the module it launched
under, so an in-place update is not credited (what ran before it may already
have exposed the TD) and a TD 1.5 quote whose launch module is out of date
stays out of date.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from verifier.evidence.tdx.collateral import EnclaveTcbLevel, QeIdentity, TcbInfo
from verifier.evidence.tdx.pck_extension import PckTcb
from verifier.evidence.tdx.quote import EnclaveReport, TdReport
from verifier.verdict import Reason

__all__ = ["TcbResult", "evaluate_qe_identity", "evaluate_tcb", "lower_status"]

_OUT_OF_DATE = "OutOfDate"
_REVOKED = "Revoked"


@dataclass(frozen=True, slots=True)
class TcbResult:
    """The status and the level it came from (``superseded_at``: when a newer level
    appeared, the start of an OutOfDate platform's grace window)."""

    status: str
    tcb_date: datetime
    superseded_at: datetime | None
    advisory_ids: tuple[str, ...]
    module_status: str | None


def lower_status(status: str, other: str) -> str:
    """``status`` after a module or QE whose status is ``other`` (QVL's converge rules)."""
    if other == _REVOKED:
        return _REVOKED
    if other == _OUT_OF_DATE:
        if status in ("UpToDate", "SWHardeningNeeded"):
            return _OUT_OF_DATE
        if status in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    return status


def _enclave_level(levels: Sequence[EnclaveTcbLevel], isv_svn: int) -> EnclaveTcbLevel | None:
    return next((level for level in levels if isv_svn >= level.isv_svn), None)


def _masked_equal(value: bytes, mask: bytes, expected: bytes) -> bool:
    masked = bytes(v & m for v, m in zip(value, mask, strict=True))
    return hmac.compare_digest(masked, expected)


def _module_status(info: TcbInfo, body: TdReport) -> tuple[str | None, list[Reason]]:
    major = body.tee_tcb_svn[1]
    if major == 0 or not info.module_identities:
        module = info.tdx_module
        wanted = "tdxModule"
    else:
        wanted = f"TDX_{major:02X}"
        found = [m for m in info.module_identities if m.id.upper() == wanted]
        if not found:
            return None, [Reason("tdx.tcb.module_unknown", f"TCB Info has no {wanted} identity")]
        module = found[0]
    reasons = []
    if not hmac.compare_digest(module.mr_signer, body.mr_signer_seam):
        reasons.append(Reason("tdx.tcb.module_mismatch", f"MRSIGNERSEAM is not {wanted}'s"))
    if not _masked_equal(body.seam_attributes, module.attributes_mask, module.attributes):
        reasons.append(Reason("tdx.tcb.module_mismatch", f"SEAMATTRIBUTES are not {wanted}'s"))
    if reasons or not module.levels:
        return None, reasons
    level = _enclave_level(module.levels, body.tee_tcb_svn[0])
    if level is None:
        return None, [Reason("tdx.tcb.not_supported", f"no {wanted} level for ISVSVN")]
    return level.status, []


def evaluate_tcb(
    info: TcbInfo, pck: PckTcb, body: TdReport
) -> tuple[TcbResult | None, list[Reason]]:
    """The platform's TCB status (steps 1-3 of the module docstring), or the reasons none."""
    if info.fmspc != pck.fmspc or info.pce_id != pck.pce_id:
        detail = f"TCB Info is for FMSPC {info.fmspc.hex()}, the PCK's is {pck.fmspc.hex()}"
        return None, [Reason("tdx.tcb.fmspc_mismatch", detail)]
    use_module = body.tee_tcb_svn[1] != 0 and bool(info.module_identities)
    first_tdx = 2 if use_module else 0
    previous: datetime | None = None
    for level in info.levels:
        sgx_ok = all(
            have >= need
            for have, need in zip(pck.sgx_tcb_components, level.sgx_components, strict=True)
        )
        tdx_ok = all(body.tee_tcb_svn[i] >= level.tdx_components[i] for i in range(first_tdx, 16))
        if sgx_ok and pck.pce_svn >= level.pce_svn and tdx_ok:
            break
        previous = level.tcb_date
    else:
        return None, [Reason("tdx.tcb.not_supported", "no TCB level matches the platform")]
    status = level.status
    module_status = None
    if use_module:
        module_status, reasons = _module_status(info, body)
        if reasons:
            return None, reasons
        if module_status is not None:
            status = lower_status(status, module_status)
    else:
        _, reasons = _module_status(info, body)
        if reasons:
            return None, reasons
    return TcbResult(status, level.tcb_date, previous, level.advisory_ids, module_status), []


def evaluate_qe_identity(
    identity: QeIdentity, qe: EnclaveReport
) -> tuple[str | None, list[Reason]]:
    """The QE's TCB status under ``identity`` (step 4), or the reasons it has none."""
    reasons = []
    if not hmac.compare_digest(identity.mr_signer, qe.mr_signer):
        reasons.append(Reason("tdx.qe.identity_mismatch", "QE MRSIGNER is not the TD QE's"))
    if identity.isv_prod_id != qe.isv_prod_id:
        reasons.append(Reason("tdx.qe.identity_mismatch", f"QE ISVPRODID {qe.isv_prod_id}"))
    if qe.misc_select & identity.misc_select_mask != identity.misc_select:
        reasons.append(Reason("tdx.qe.identity_mismatch", "QE MISCSELECT differs"))
    if not _masked_equal(qe.attributes, identity.attributes_mask, identity.attributes):
        reasons.append(Reason("tdx.qe.identity_mismatch", "QE ATTRIBUTES differ"))
    if reasons:
        return None, reasons
    level = _enclave_level(identity.levels, qe.isv_svn)
    if level is None:
        return None, [Reason("tdx.qe.not_supported", f"no QE level for ISVSVN {qe.isv_svn}")]
    return level.status, []
