"""Parse an AMD SEV-SNP ATTESTATION_REPORT (SEV-SNP Firmware ABI, ATTESTATION_REPORT).

The report is 1184 (0x4A0) bytes: a body at 0x000..0x29F that the firmware signs,
and a 512-byte signature at 0x2A0 whose first two 72-byte fields are ECDSA P-384
r and s, little-endian. Parsing only checks structure and keeps the signed bytes
as the exact input slice; the signature, certificates and values are judged by
authentication and appraisal. Every failure is a :class:`ParseError`.

Reserved fields inside the signed body are not required to be zero: they are the
firmware's to fill, nothing here reads them, and a later firmware that uses one
must not make a genuine report unparsable. The unsigned tail of the signature
area must be zero (nothing legitimate is there).

A signed report does NOT have one byte encoding: ECDSA signatures are malleable,
so if (r, s) verifies then so does (r, n - s), and anyone can turn a genuine
report into a second, different byte string that authenticates just as well.
Whatever identifies a report (a cache key, a replay or duplicate check, a log
digest) must therefore be taken from ``signed_bytes`` (0x000..0x29F, which the
signature fixes), never from the whole 0x4A0 bytes or from (r, s).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from verifier.evidence.errors import ParseError

__all__ = [
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "AttestationReport",
    "GuestPolicy",
    "PlatformInfo",
    "SigningKey",
    "parse_guest_policy",
    "parse_report",
    "report_bytes",
]

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0  # the body the signature covers: bytes 0x000..0x29F
SIGNATURE_FIELD_SIZE = 72  # r and s are each a 72-byte little-endian field
# The layouts this parser knows (ABI 1.51+: v2; CPUID fields: v3; mitigation vectors: v5).
SUPPORTED_VERSIONS = frozenset({2, 3, 5})
# Hex input: two characters a byte plus room for line breaks every 16-64 bytes.
# Anything longer is not one report, and is refused before any decoding work.
MAX_HEX_INPUT = 2 * REPORT_SIZE + 1024

# Guest policy bits (ABI, GUEST_POLICY).
_POLICY_SMT = 1 << 16
_POLICY_RESERVED_ONE = 1 << 17  # must be 1 (the firmware refuses to launch otherwise)
_POLICY_MIGRATE_MA = 1 << 18
_POLICY_DEBUG = 1 << 19
_POLICY_SINGLE_SOCKET = 1 << 20
_POLICY_CXL_ALLOW = 1 << 21
_POLICY_MEM_AES_256_XTS = 1 << 22
_POLICY_RAPL_DIS = 1 << 23
_POLICY_CIPHERTEXT_HIDING = 1 << 24
_POLICY_PAGE_SWAP_DISABLE = 1 << 25


class SigningKey(enum.IntEnum):
    """Which key signed the report (report flags bits 4:2)."""

    VCEK = 0  # per chip, chained to the ASK
    VLEK = 1  # per cloud provider, chained to the ASVK
    NONE = 7  # the report is not signed


@dataclass(frozen=True, slots=True)
class GuestPolicy:
    """The guest policy the VM was launched with (decoded from the u64)."""

    raw: int
    abi_major: int
    abi_minor: int
    smt_allowed: bool
    migration_agent_allowed: bool
    debug_allowed: bool
    single_socket_required: bool
    cxl_allowed: bool
    mem_aes_256_xts_required: bool
    rapl_disabled: bool
    ciphertext_hiding_required: bool
    page_swap_disabled: bool

    def to_json(self) -> dict[str, object]:
        return {
            "raw": f"0x{self.raw:016x}",
            "abi": f"{self.abi_major}.{self.abi_minor}",
            "smt_allowed": self.smt_allowed,
            "migration_agent_allowed": self.migration_agent_allowed,
            "debug_allowed": self.debug_allowed,
            "single_socket_required": self.single_socket_required,
        }


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    """PLATFORM_INFO: platform state when the report was made."""

    raw: int
    smt_enabled: bool
    tsme_enabled: bool
    ecc_enabled: bool
    rapl_disabled: bool
    ciphertext_hiding_enabled: bool
    alias_check_complete: bool


@dataclass(frozen=True, slots=True)
class AttestationReport:
    """An ATTESTATION_REPORT as parsed. TCBs are raw u64s: their layout is per
    product line, which only the certificate tells (see ``tcb.decode_tcb``)."""

    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: PlatformInfo
    author_key_en: bool
    mask_chip_id: bool
    signing_key: int  # a SigningKey value, or another (reserved) value as found
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid_family: int | None  # v3+ only
    cpuid_model: int | None
    cpuid_stepping: int | None
    chip_id: bytes
    committed_tcb: int
    current_version: tuple[int, int, int]  # firmware (major, minor, build)
    committed_version: tuple[int, int, int]
    launch_tcb: int
    launch_mit_vector: int | None  # v5 only
    current_mit_vector: int | None
    signed_bytes: bytes  # exactly input[0x000:0x2A0], never rebuilt; the report's identity
    r: int
    s: int


def parse_guest_policy(raw: int) -> GuestPolicy:
    """Decode a guest policy u64."""
    return GuestPolicy(
        raw=raw,
        abi_major=(raw >> 8) & 0xFF,
        abi_minor=raw & 0xFF,
        smt_allowed=bool(raw & _POLICY_SMT),
        migration_agent_allowed=bool(raw & _POLICY_MIGRATE_MA),
        debug_allowed=bool(raw & _POLICY_DEBUG),
        single_socket_required=bool(raw & _POLICY_SINGLE_SOCKET),
        cxl_allowed=bool(raw & _POLICY_CXL_ALLOW),
        mem_aes_256_xts_required=bool(raw & _POLICY_MEM_AES_256_XTS),
        rapl_disabled=bool(raw & _POLICY_RAPL_DIS),
        ciphertext_hiding_required=bool(raw & _POLICY_CIPHERTEXT_HIDING),
        page_swap_disabled=bool(raw & _POLICY_PAGE_SWAP_DISABLE),
    )


def _platform_info(raw: int) -> PlatformInfo:
    return PlatformInfo(
        raw=raw,
        smt_enabled=bool(raw & 1),
        tsme_enabled=bool(raw & 2),
        ecc_enabled=bool(raw & 4),
        rapl_disabled=bool(raw & 8),
        ciphertext_hiding_enabled=bool(raw & 16),
        alias_check_complete=bool(raw & 32),
    )


def report_bytes(data: bytes) -> bytes:
    """The raw report from ``data``: raw bytes as is, or ASCII hex (whitespace allowed).

    Raises ParseError (``too_large``, ``malformed``) only.
    """
    data = bytes(data)
    if len(data) == REPORT_SIZE:
        return data
    if len(data) > MAX_HEX_INPUT:
        raise ParseError(f"{len(data)} bytes: not one SNP report", code="too_large")
    text = b"".join(data.split()).removeprefix(b"0x")
    if not text or len(text) % 2 or not all(c in b"0123456789abcdefABCDEF" for c in text):
        code = "truncated" if len(data) < REPORT_SIZE else "trailing_bytes"
        raise ParseError(
            f"{len(data)} bytes: neither a {REPORT_SIZE}-byte report nor hex", code=code
        )
    return bytes.fromhex(text.decode("ascii"))


def _version_triple(word: bytes) -> tuple[int, int, int]:
    build, minor, major = word[0], word[1], word[2]
    return (major, minor, build)


def parse_report(data: bytes) -> AttestationReport:
    """Parse one report (raw or hex). Checks, in order: size (exactly 0x4A0 bytes
    after hex decoding: short or trailing input is refused), version in 2/3/5,
    policy bit 17 set, VMPL 0-3, the unsigned signature tail zero."""
    raw = report_bytes(data)
    if len(raw) != REPORT_SIZE:
        code = "truncated" if len(raw) < REPORT_SIZE else "trailing_bytes"
        raise ParseError(f"report is {len(raw)} bytes, not {REPORT_SIZE}", code=code)
    version, guest_svn, policy_raw = struct.unpack_from("<IIQ", raw, 0x000)
    if version not in SUPPORTED_VERSIONS:
        raise ParseError(f"report version {version} is not 2, 3 or 5", code="unsupported_version")
    if not policy_raw & _POLICY_RESERVED_ONE:
        raise ParseError("guest policy bit 17 (reserved, must be 1) is clear", code="bad_policy")
    vmpl, signature_algo, current_tcb, platform_info, flags = struct.unpack_from(
        "<IIQQI", raw, 0x030
    )
    if vmpl > 3:
        raise ParseError(f"VMPL {vmpl} (0-3 exist)", code="bad_vmpl")
    if any(raw[SIGNED_SIZE + 2 * SIGNATURE_FIELD_SIZE :]):
        raise ParseError("reserved bytes after the signature are not zero", code="reserved_nonzero")
    (reported_tcb,) = struct.unpack_from("<Q", raw, 0x180)
    (committed_tcb,) = struct.unpack_from("<Q", raw, 0x1E0)
    (launch_tcb,) = struct.unpack_from("<Q", raw, 0x1F0)
    v3 = version >= 3
    v5 = version >= 5
    r_field = raw[SIGNED_SIZE : SIGNED_SIZE + SIGNATURE_FIELD_SIZE]
    s_field = raw[SIGNED_SIZE + SIGNATURE_FIELD_SIZE : SIGNED_SIZE + 2 * SIGNATURE_FIELD_SIZE]
    return AttestationReport(
        version=version,
        guest_svn=guest_svn,
        policy=parse_guest_policy(policy_raw),
        family_id=raw[0x010:0x020],
        image_id=raw[0x020:0x030],
        vmpl=vmpl,
        signature_algo=signature_algo,
        current_tcb=current_tcb,
        platform_info=_platform_info(platform_info),
        author_key_en=bool(flags & 1),
        mask_chip_id=bool(flags & 2),
        signing_key=(flags >> 2) & 7,
        report_data=raw[0x050:0x090],
        measurement=raw[0x090:0x0C0],
        host_data=raw[0x0C0:0x0E0],
        id_key_digest=raw[0x0E0:0x110],
        author_key_digest=raw[0x110:0x140],
        report_id=raw[0x140:0x160],
        report_id_ma=raw[0x160:0x180],
        reported_tcb=reported_tcb,
        cpuid_family=raw[0x188] if v3 else None,
        cpuid_model=raw[0x189] if v3 else None,
        cpuid_stepping=raw[0x18A] if v3 else None,
        chip_id=raw[0x1A0:0x1E0],
        committed_tcb=committed_tcb,
        current_version=_version_triple(raw[0x1E8:0x1EC]),
        committed_version=_version_triple(raw[0x1EC:0x1F0]),
        launch_tcb=launch_tcb,
        launch_mit_vector=struct.unpack_from("<Q", raw, 0x1F8)[0] if v5 else None,
        current_mit_vector=struct.unpack_from("<Q", raw, 0x200)[0] if v5 else None,
        signed_bytes=raw[:SIGNED_SIZE],
        r=int.from_bytes(r_field, "little"),
        s=int.from_bytes(s_field, "little"),
    )
