"""Appraise an authenticated SNP report against a policy: every violation, named.

Only an :class:`AuthenticatedReport` is accepted, so values from a report whose
signature or chain did not verify never reach reference comparison. Every rule
runs; the result is the list of all violations (empty: the report conforms).
"""

from __future__ import annotations

import hmac

from verifier.evidence.snp.authenticate import AuthenticatedReport
from verifier.evidence.snp.certs import KeyKind
from verifier.evidence.snp.policy import SnpPolicy
from verifier.evidence.snp.tcb import TcbVersion
from verifier.verdict import Reason

__all__ = ["CHECK_POLICY", "CHECK_REPORT_DATA", "appraise_report", "check_report_data"]

CHECK_POLICY = "snp.policy"
CHECK_REPORT_DATA = "snp.report.report_data"
REPORT_DATA_SIZE = 64


def _r(code: str, detail: str) -> Reason:
    return Reason(f"snp.policy.{code}", detail)


def _guest_policy(policy: SnpPolicy, auth: AuthenticatedReport) -> list[Reason]:
    report = auth.report
    guest = report.policy
    reasons: list[Reason] = []
    if guest.debug_allowed and not policy.allow_debug:
        reasons.append(_r("debug_allowed", "guest policy allows debugging (host can read memory)"))
    if guest.smt_allowed and not policy.allow_smt:
        reasons.append(_r("smt_allowed", "guest policy allows SMT"))
    if guest.migration_agent_allowed and not policy.allow_migration_agent:
        reasons.append(_r("migration_agent_allowed", "guest policy allows a migration agent"))
    if policy.require_single_socket and not guest.single_socket_required:
        reasons.append(_r("single_socket_required", "guest policy does not require one socket"))
    if report.vmpl > policy.max_vmpl:
        reasons.append(_r("vmpl_too_high", f"VMPL {report.vmpl} > {policy.max_vmpl}"))
    if report.version < policy.min_report_version:
        reasons.append(
            _r("version_too_old", f"report version {report.version} < {policy.min_report_version}")
        )
    if report.guest_svn < policy.min_guest_svn:
        reasons.append(
            _r("guest_svn_too_low", f"GUEST_SVN {report.guest_svn} < {policy.min_guest_svn}")
        )
    if auth.key.kind not in policy.allowed_signing_keys:
        reasons.append(_r("signing_key_not_allowed", f"{auth.key.kind.value}-signed reports"))
    elif auth.key.kind is KeyKind.VLEK and auth.key.csp_id not in policy.allowed_csp_ids:
        # A VLEK is issued to one cloud provider (its cspId): only the listed ones
        # count. A VLEK without a cspId names no provider, so it matches none.
        reasons.append(_r("csp_not_allowed", f"VLEK cspId {auth.key.csp_id!r} is not allowed"))
    if report.mask_chip_id and not policy.allow_masked_chip_id:
        reasons.append(_r("chip_id_masked", "MASK_CHIP_ID is set (the report hides its chip)"))
    if guest.cxl_allowed and not policy.allow_cxl:
        reasons.append(
            _r("cxl_allowed", "guest policy allows CXL-attached memory (CXL_ALLOW, bit 21)")
        )
    return reasons


def _version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version)


def _platform(policy: SnpPolicy, auth: AuthenticatedReport) -> list[Reason]:
    report = auth.report
    info = report.platform_info
    reasons: list[Reason] = []
    if policy.require_ciphertext_hiding and not info.ciphertext_hiding_enabled:
        reasons.append(
            _r(
                "ciphertext_hiding_off",
                f"PLATFORM_INFO 0x{info.raw:x}: CIPHERTEXT_HIDING_EN (bit 4) is clear",
            )
        )
    if policy.require_alias_check and not info.alias_check_complete:
        reasons.append(
            _r(
                "alias_check_incomplete",
                f"PLATFORM_INFO 0x{info.raw:x}: ALIAS_CHECK_COMPLETE (bit 5) is clear "
                "(no BadRAM memory-alias check)",
            )
        )
    minimum = policy.min_firmware
    if minimum is not None:
        # A "major.minor" minimum compares major and minor only; with a build, all three.
        low = [
            f"{name} {_version_text(version)} < {_version_text(minimum)}"
            for name, version in (
                ("CURRENT", report.current_version),
                ("COMMITTED", report.committed_version),
            )
            if version[: len(minimum)] < minimum
        ]
        if low:
            reasons.append(_r("firmware_too_old", "firmware " + ", ".join(low)))
    return reasons


def _tcb(policy: SnpPolicy, auth: AuthenticatedReport) -> list[Reason]:
    minimum = policy.min_tcb.get(auth.product)
    if minimum is None:
        return [_r("product_not_allowed", f"no minimum TCB for {auth.product.value}: denied")]
    reasons: list[Reason] = []
    # Every TCB the guest's secrets have lived under must be at least the minimum:
    # LAUNCH (when they were provisioned), COMMITTED and CURRENT (now), and
    # REPORTED (what the signing key is derived from).
    tcbs: tuple[tuple[str, TcbVersion], ...] = (
        ("CURRENT_TCB", auth.current_tcb),
        ("REPORTED_TCB", auth.reported_tcb),
        ("COMMITTED_TCB", auth.committed_tcb),
        ("LAUNCH_TCB", auth.launch_tcb),
    )
    for name, tcb in tcbs:
        components = tcb.components()
        low = [
            f"{c} {components[c]} < {m}" for c, m in sorted(minimum.items()) if components[c] < m
        ]
        if low:
            reasons.append(_r("tcb_too_old", f"{name}: " + ", ".join(low)))
    if auth.current_tcb.raw != auth.committed_tcb.raw and not policy.allow_provisional_firmware:
        reasons.append(
            _r(
                "provisional_firmware",
                f"CURRENT_TCB 0x{auth.current_tcb.raw:016x} != "
                f"COMMITTED_TCB 0x{auth.committed_tcb.raw:016x} (firmware not committed)",
            )
        )
    return reasons


def _values(policy: SnpPolicy, auth: AuthenticatedReport) -> list[Reason]:
    report = auth.report
    reasons: list[Reason] = []
    if report.measurement not in policy.allowed_measurements:
        reasons.append(
            _r("measurement_not_allowed", f"MEASUREMENT {report.measurement.hex()} is not allowed")
        )
    if policy.host_data is not None and not hmac.compare_digest(policy.host_data, report.host_data):
        reasons.append(_r("host_data_mismatch", f"HOST_DATA {report.host_data.hex()}"))
    allowed_ids = policy.allowed_id_key_digests
    if allowed_ids is not None and report.id_key_digest not in allowed_ids:
        reasons.append(
            _r("id_key_not_allowed", f"ID_KEY_DIGEST {report.id_key_digest.hex()} is not allowed")
        )
    allowed_authors = policy.allowed_author_key_digests
    if allowed_authors is not None and (
        not report.author_key_en or report.author_key_digest not in allowed_authors
    ):
        shown = report.author_key_digest.hex() if report.author_key_en else "none"
        reasons.append(_r("author_key_not_allowed", f"AUTHOR_KEY_DIGEST {shown} is not allowed"))
    return reasons


def appraise_report(policy: SnpPolicy, auth: AuthenticatedReport) -> list[Reason]:
    """Every policy violation of ``auth``: guest policy (debug, SMT, migration agent,
    single socket, CXL), VMPL, report version, GUEST_SVN, signing key kind, a VLEK's
    cloud provider (cspId), a masked CHIP_ID, platform state (ciphertext hiding,
    alias check), CURRENT / COMMITTED firmware version, product line and
    minimum TCB of CURRENT / REPORTED / COMMITTED / LAUNCH, provisional firmware,
    MEASUREMENT, HOST_DATA, ID and author key digests (``snp.policy.*``)."""
    if not isinstance(auth, AuthenticatedReport):
        raise TypeError("appraise_report takes an AuthenticatedReport")
    return [
        *_guest_policy(policy, auth),
        *_platform(policy, auth),
        *_tcb(policy, auth),
        *_values(policy, auth),
    ]


def check_report_data(expected: bytes, auth: AuthenticatedReport) -> list[Reason]:
    """``snp.report.report_data_mismatch`` unless REPORT_DATA equals ``expected``.

    ``expected`` shorter than 64 bytes is zero-padded (guests put a 32- or 48-byte
    digest first); REPORT_DATA is where the verifier's nonce and the host's key are
    bound, so a mismatch means a replayed or foreign report.
    """
    if not expected or len(expected) > REPORT_DATA_SIZE:
        raise ValueError(f"expected REPORT_DATA must be 1-{REPORT_DATA_SIZE} bytes")
    padded = expected.ljust(REPORT_DATA_SIZE, b"\0")
    if hmac.compare_digest(padded, auth.report.report_data):
        return []
    return [Reason("snp.report.report_data_mismatch", "REPORT_DATA is not the expected value")]
