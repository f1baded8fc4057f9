"""Verifier configuration: loaded once from TOML, validated, frozen, passed explicitly.

Errors name the file, the line and the key, because an operator editing a
config on a partner host has nothing else to go on.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.config_nvidia import NvidiaConfig, nvidia_config
from verifier.config_reader import ConfigError, Reader, check_private_key_file
from verifier.config_snp import SnpConfig, snp_config
from verifier.config_tdx import TdxConfig, tdx_config

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_PCR_SELECTION: Mapping[str, tuple[int, ...]] = {"sha256": tuple(range(8))}
# What a proposal may change (ProposedChange in operator.proto), each with its quorum.
PROPOSAL_KINDS = (
    "reference_values",
    "site",
    "host_site",
    "review",
    "trust_anchor",
    "break_glass",
    "boot_reference",
    "ima_policy",
    "gpu_policy",
    "snp_policy",
    "tdx_policy",
)
DEFAULT_APPROVALS = 2
# Break-glass waives the site clearance and the review: it takes one more person.
DEFAULT_APPROVALS_BY_KIND: Mapping[str, int] = {"break_glass": 3}
DEFAULT_PROPOSAL_TTL_HOURS = 72.0


@dataclass(frozen=True, slots=True)
class TlsConfig:
    certificate: Path
    private_key: Path
    client_ca: Path  # agents and operators must present a certificate issued by this CA
    # The CRL of client_ca (verifier.revocation): revoked certificates are refused,
    # and so is every call while it is unusable or stale. None: no revocation.
    client_crl: Path | None = None


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """The two-person rule: approvals needed per proposal kind, and how long a
    proposal waits for them. A quorum of 0 (the change applies when proposed) is
    accepted only with ``allow_without_approval = true``, for demos and tests."""

    required: Mapping[str, int]
    ttl_seconds: float

    @classmethod
    def without_approval(cls) -> ApprovalPolicy:
        return cls({kind: 0 for kind in PROPOSAL_KINDS}, DEFAULT_PROPOSAL_TTL_HOURS * 3600)

    @classmethod
    def default(cls) -> ApprovalPolicy:
        return cls(
            {kind: _default_approvals(kind) for kind in PROPOSAL_KINDS},
            DEFAULT_PROPOSAL_TTL_HOURS * 3600,
        )


def _default_approvals(kind: str) -> int:
    return DEFAULT_APPROVALS_BY_KIND.get(kind, DEFAULT_APPROVALS)


@dataclass(frozen=True, slots=True)
class VerifierConfig:
    listen: str
    database_url: str
    state_dir: Path
    insecure: bool  # plaintext gRPC; only ever set explicitly (demo, tests)
    tls: TlsConfig | None
    attestation_interval_seconds: float
    challenge_timeout_seconds: float
    enrollment_timeout_seconds: float
    pcr_selection: Mapping[str, tuple[int, ...]]
    ek_ca_certificates: tuple[Path, ...]
    require_ek_certificate: bool
    allow_sha1_signatures: bool
    keystore: Path  # KEK and manifest-signing key (verifier.keystore.FileKeyStore)
    blob_dir: Path  # encrypted checkpoints, one directory per manifest digest
    lease_seconds: float  # how long released keys stay valid without renewal
    release_freshness_seconds: float  # max age of the affirming verdict behind a release
    review_valid_days: int
    approvals: ApprovalPolicy
    audit_checkpoint_interval_seconds: float  # how often the verifier signs the audit head
    # NVIDIA GPU evidence ([verifier.nvidia]); None: GPU policies cannot be met.
    nvidia: NvidiaConfig | None = None
    # AMD SEV-SNP roots ([verifier.snp]); None: SNP policies cannot be met.
    snp: SnpConfig | None = None
    # Intel TDX root and collateral ([verifier.tdx]); None: TDX policies cannot be met.
    tdx: TdxConfig | None = None
    # One TPM may enroll as several hosts. Only for test rigs that share one swtpm
    # between host ids; in production one TPM attests one host.
    allow_shared_tpm: bool = False


def _pcr_selection(reader: Reader, raw: Any) -> dict[str, tuple[int, ...]]:
    if raw is None:
        return dict(DEFAULT_PCR_SELECTION)
    if not isinstance(raw, dict) or not raw:
        raise reader.fail("pcr_selection", "expected a table like { sha256 = [0, 1, 2, 7] }")
    selection: dict[str, tuple[int, ...]] = {}
    for bank, pcrs in raw.items():
        if bank not in ("sha1", "sha256", "sha384", "sha512"):
            raise reader.fail("pcr_selection", f"unknown PCR bank {bank!r}")
        if (
            not isinstance(pcrs, list)
            or not pcrs
            or not all(
                isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 23 for p in pcrs
            )
        ):
            raise reader.fail("pcr_selection", f"{bank}: expected a list of PCR indices 0-23")
        selection[bank] = tuple(sorted(set(pcrs)))
    return selection


def load_config(path: Path) -> VerifierConfig:
    """Read and validate a verifier config file; raise ConfigError naming line and key."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = set(document) - {"verifier"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s): {', '.join(sorted(unknown))}")
    raw = document.get("verifier", {})
    reader = Reader(path, text, "verifier", raw)
    reader.unknown_keys(
        {
            "listen", "database", "state_dir", "insecure", "tls", "attestation_interval_seconds",
            "challenge_timeout_seconds", "enrollment_timeout_seconds", "pcr_selection",
            "ek_ca_certificates", "require_ek_certificate", "allow_sha1_signatures",
            "keystore", "blob_dir", "lease_seconds", "release_freshness_seconds",
            "review_valid_days", "approvals", "audit_checkpoint_interval_seconds", "nvidia",
            "snp", "tdx", "allow_shared_tpm",
        }
    )  # fmt: skip
    base = path.parent
    state_dir = base / reader.get("state_dir", str, "/var/lib/weightgate", "a directory path")
    database = reader.get(
        "database", str, f"sqlite:///{state_dir / 'verifier.db'}", "a SQLAlchemy URL"
    )
    insecure = reader.get("insecure", bool, False, "true or false")
    tls = _tls(path, text, raw.get("tls"), base, insecure=insecure)
    ek_cas = reader.get("ek_ca_certificates", list, [], "a list of PEM file paths")
    if not all(isinstance(p, str) for p in ek_cas):
        raise reader.fail("ek_ca_certificates", "expected a list of PEM file paths")
    require_ek_cert = reader.get("require_ek_certificate", bool, True, "true or false")
    if require_ek_cert and not ek_cas:
        raise reader.fail(
            "ek_ca_certificates",
            "require_ek_certificate is true but no EK CA certificates are configured",
        )
    interval = reader.positive("attestation_interval_seconds", 30.0)
    challenge_timeout = reader.positive("challenge_timeout_seconds", 30.0)
    review_days = reader.get("review_valid_days", int, 90, "a whole number of days")
    if review_days <= 0:
        raise reader.fail("review_valid_days", "expected a positive number of days")
    return VerifierConfig(
        listen=reader.get("listen", str, DEFAULT_LISTEN, '"host:port"'),
        database_url=database,
        state_dir=state_dir,
        insecure=insecure,
        tls=tls,
        attestation_interval_seconds=interval,
        challenge_timeout_seconds=challenge_timeout,
        enrollment_timeout_seconds=reader.positive("enrollment_timeout_seconds", 300.0),
        pcr_selection=_pcr_selection(reader, raw.get("pcr_selection")),
        ek_ca_certificates=tuple(base / p for p in ek_cas),
        require_ek_certificate=require_ek_cert,
        allow_sha1_signatures=reader.get("allow_sha1_signatures", bool, False, "true or false"),
        keystore=base / reader.get("keystore", str, str(state_dir / "keystore"), "a file path"),
        blob_dir=base / reader.get("blob_dir", str, str(state_dir / "blobs"), "a directory path"),
        lease_seconds=reader.positive("lease_seconds", 300.0),
        # An affirming verdict must be at most about two rounds old to release keys.
        release_freshness_seconds=reader.positive(
            "release_freshness_seconds", 2 * interval + challenge_timeout
        ),
        review_valid_days=review_days,
        approvals=_approvals(path, text, raw.get("approvals")),
        audit_checkpoint_interval_seconds=reader.positive(
            "audit_checkpoint_interval_seconds", 3600.0
        ),
        nvidia=nvidia_config(path, text, raw.get("nvidia"), base),
        snp=snp_config(path, text, raw.get("snp"), base),
        tdx=tdx_config(path, text, raw.get("tdx"), base),
        allow_shared_tpm=reader.get("allow_shared_tpm", bool, False, "true or false"),
    )


def _approvals(path: Path, text: str, raw: Any) -> ApprovalPolicy:
    if raw is None:
        return ApprovalPolicy.default()
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [verifier.approvals] must be a table")
    reader = Reader(path, text, "verifier.approvals", raw)
    reader.unknown_keys({*PROPOSAL_KINDS, "proposal_ttl_hours", "allow_without_approval"})
    allow_zero = reader.get("allow_without_approval", bool, False, "true or false")
    required: dict[str, int] = {}
    for kind in PROPOSAL_KINDS:
        count: int = reader.get(kind, int, _default_approvals(kind), "a number of approvers")
        if count < 0 or count > 16:
            raise reader.fail(kind, "expected 1 to 16 approvers")
        if count == 0 and not allow_zero:
            raise reader.fail(
                kind,
                "0 approvers switches the two-person rule off; "
                "set allow_without_approval = true if that is really meant",
            )
        required[kind] = count
    ttl: float = reader.get("proposal_ttl_hours", float, DEFAULT_PROPOSAL_TTL_HOURS, "hours")
    if not 0 < ttl <= 24 * 90:
        raise reader.fail("proposal_ttl_hours", "expected more than 0 and at most 2160 hours")
    return ApprovalPolicy(required, ttl * 3600)


def _tls(path: Path, text: str, raw: Any, base: Path, *, insecure: bool) -> TlsConfig | None:
    if insecure:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: [verifier.tls] is required (certificate, private_key, client_ca) "
            "unless insecure = true"
        )
    reader = Reader(path, text, "verifier.tls", raw)
    reader.unknown_keys({"certificate", "private_key", "client_ca", "client_crl"})
    crl = raw.get("client_crl")
    tls = TlsConfig(
        certificate=base / reader.get("certificate", str, None, "a PEM file path"),
        private_key=base / reader.get("private_key", str, None, "a PEM file path"),
        client_ca=base / reader.get("client_ca", str, None, "a PEM file path"),
        client_crl=None if crl is None else base / reader.get("client_crl", str, None, "a path"),
    )
    check_private_key_file(reader, "private_key", tls.private_key)
    # Only that it is there: its content is checked on every call, so a CRL that
    # goes stale later refuses calls rather than being accepted from a start check.
    if tls.client_crl is not None and not tls.client_crl.is_file():
        raise reader.fail("client_crl", f"{tls.client_crl} is not a file (`weightgate pki crl`)")
    return tls


def config_for_demo(state_dir: Path, *, ek_ca_certificates: tuple[Path, ...]) -> VerifierConfig:
    """The demo's config: plaintext on loopback, SQLite in a temporary state dir."""
    return VerifierConfig(
        listen="127.0.0.1:0",
        database_url=f"sqlite:///{state_dir / 'verifier.db'}",
        state_dir=state_dir,
        insecure=True,
        tls=None,
        attestation_interval_seconds=2.0,
        challenge_timeout_seconds=20.0,
        enrollment_timeout_seconds=60.0,
        pcr_selection=dict(DEFAULT_PCR_SELECTION),
        ek_ca_certificates=ek_ca_certificates,
        require_ek_certificate=True,
        allow_sha1_signatures=False,
        keystore=state_dir / "keystore",
        blob_dir=state_dir / "blobs",
        lease_seconds=60.0,
        release_freshness_seconds=30.0,
        review_valid_days=90,
        # The plaintext demo has one anonymous identity, so nobody could approve:
        # changes apply when proposed. `make demo` itself runs with mutual TLS.
        approvals=ApprovalPolicy.without_approval(),
        audit_checkpoint_interval_seconds=3600.0,
        # The test rigs built on this config enroll several host ids on one swtpm.
        allow_shared_tpm=True,
    )


__all__ = [
    "ApprovalPolicy",
    "ConfigError",
    "TlsConfig",
    "VerifierConfig",
    "config_for_demo",
    "load_config",
]
