"""A simulated SEV-SNP confidential VM on disk: create it once, load it, ask for reports.

Layout of a host directory (directories 0700, the private key 0600)::

    host.json         product line, launch measurement, chip id, TCB, validity
    trust/ark.pem     the TEST ARK (pin its SHA-256 explicitly; never AMD's)
    cert_chain.pem    ASK then ARK (PEM), as KDS serves /vcek/v1/<line>/cert_chain
    vcek.der          the chip's VCEK certificate (DER), as KDS serves it
    vcek_key.pem      the VCEK private key: signs the reports
    snp_policy.json   an SNP policy (verifier format) the simulated reports satisfy

The ARK and ASK keys are never written: once the host exists nobody can issue
another certificate under its ARK. ``host.json`` is written last, so a
half-made directory fails to load instead of loading half a host.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devsim.files import key_pem, make_private_dir
from devsim.snp import pki
from devsim.snp.certtable import ARK_GUID, ASK_GUID, VCEK_GUID, certificate_table
from devsim.snp.files import FILES, SnpHostError
from devsim.snp.model import PRODUCTS, Platform
from devsim.snp.report import (
    CHIP_ID_SIZE,
    MEASUREMENT_SIZE,
    REPORT_ID_SIZE,
    REPORT_VERSION,
    ReportIdentity,
    signed_report,
)
from devsim.x509util import pem

__all__ = ["MAX_VALIDITY_DAYS", "PRODUCT_NAMES", "SnpHost", "create_snp_host", "load_snp_host"]

FORMAT_VERSION = 1
# Ten years bounds a typo (36500) while leaving long-lived demo hosts possible.
MAX_VALIDITY_DAYS = 3650
PRODUCT_NAMES = tuple(PRODUCTS)
_HOST_KEYS = frozenset(
    {
        "format",
        "simulator",
        "product",
        "measurement",
        "chip_id",
        "report_id",
        "tcb",
        "ark_sha256",
        "created_at",
        "valid_until",
    }
)


@dataclass(frozen=True)
class SnpHost:
    """A loaded simulated SNP guest: its certificates, policy and the chip's signing key."""

    directory: Path
    platform: Platform
    measurement: bytes
    chip_id: bytes
    vcek_der: bytes
    cert_chain_pem: bytes  # ASK then ARK
    ark_pem: bytes
    created_at: datetime
    valid_until: datetime
    _identity: ReportIdentity = field(repr=False)
    _key: ec.EllipticCurvePrivateKey = field(repr=False)
    _ask_der: bytes = field(repr=False)
    _ark_der: bytes = field(repr=False)

    @property
    def product(self) -> str:
        return self.platform.product

    @property
    def tcb(self) -> int:
        """The raw TCB_VERSION every report carries as current, reported, committed, launch."""
        return self.platform.tcb

    @property
    def ark_path(self) -> Path:
        return self.directory / "trust" / "ark.pem"

    @property
    def ark_sha256(self) -> bytes:
        """SHA-256 of the TEST ARK certificate (DER): the pin a test gives the verifier."""
        return hashlib.sha256(self._ark_der).digest()

    @property
    def policy_path(self) -> Path:
        return self.directory / "snp_policy.json"

    def report(self, report_data: bytes) -> bytes:
        """A fresh 1184-byte v3 ATTESTATION_REPORT over ``report_data`` (exactly 64 bytes)."""
        return signed_report(self._identity, bytes(report_data), self._key)

    def certificate_table(self) -> bytes:
        """The GHCB certificate table (VCEK, ASK, ARK, DER) a host hands an extended report."""
        return certificate_table(
            [(VCEK_GUID, self.vcek_der), (ASK_GUID, self._ask_der), (ARK_GUID, self._ark_der)]
        )


def _policy(platform: Platform, measurement: bytes) -> bytes:
    doc = {
        "version": 1,
        "allowed_measurements": [measurement.hex()],
        "min_tcb": {platform.product: dict(platform.spls)},
        "allowed_signing_keys": ["VCEK"],
        "allow_debug": False,
        # The simulated guest policy allows SMT (as cloud guests do), so the policy must.
        "allow_smt": True,
        "allow_migration_agent": False,
        "max_vmpl": 0,
        "min_report_version": REPORT_VERSION,
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


def _check_request(directory: Path, product: str, validity_days: int, now: datetime) -> Platform:
    if product not in PRODUCTS:
        raise SnpHostError(f"--product must be one of {', '.join(PRODUCTS)}, got {product!r}")
    FILES.check_create(
        directory, validity_days=validity_days, max_validity_days=MAX_VALIDITY_DAYS, now=now
    )
    return PRODUCTS[product]


def create_snp_host(
    directory: Path,
    *,
    product: str = "Genoa",
    now: datetime | None = None,
    validity_days: int = 30,
) -> SnpHost:
    """Make a simulated SNP guest of ``product`` ("Genoa" or "Milan") in ``directory``.

    ``directory`` must be absent or empty. Keys, chip id and launch measurement are
    fresh; certificates are valid from shortly before ``now`` (default: the current
    time) for ``validity_days``. Raises SnpHostError for bad arguments or an
    unusable directory.
    """
    now = datetime.now(UTC) if now is None else now
    directory = Path(directory)
    platform = _check_request(directory, product, validity_days, now)
    measurement = secrets.token_bytes(MEASUREMENT_SIZE)
    chip_id = secrets.token_bytes(CHIP_ID_SIZE)
    validity = pki.Validity.starting(now, validity_days)
    hierarchy = pki.make_hierarchy(platform.product, platform.spls, chip_id, validity)

    make_private_dir(directory)
    trust = make_private_dir(directory / "trust")
    FILES.write_public(trust / "ark.pem", pem(hierarchy.ark))
    FILES.write_public(directory / "cert_chain.pem", pem(hierarchy.ask) + pem(hierarchy.ark))
    FILES.write_public(
        directory / "vcek.der", hierarchy.vcek.public_bytes(serialization.Encoding.DER)
    )
    FILES.write_private(directory / "vcek_key.pem", key_pem(hierarchy.vcek_key))
    FILES.write_public(directory / "snp_policy.json", _policy(platform, measurement))
    doc = {
        "format": FORMAT_VERSION,
        "simulator": "weightgate devsim.snp: TEST ARK, not AMD; never pin in production",
        "product": platform.product,
        "measurement": measurement.hex(),
        "chip_id": chip_id.hex(),
        "report_id": secrets.token_bytes(REPORT_ID_SIZE).hex(),
        "tcb": f"0x{platform.tcb:016x}",
        "ark_sha256": hierarchy.ark.fingerprint(hashes.SHA256()).hex(),
        "created_at": now.isoformat(),
        "valid_until": validity.not_after.isoformat(),
    }
    FILES.write_public(directory / "host.json", json.dumps(doc, indent=2).encode() + b"\n")
    return load_snp_host(directory)


def _check_vcek(
    path: Path, vcek: x509.Certificate, ask: x509.Certificate, platform: Platform, chip_id: bytes
) -> None:
    if vcek.issuer != ask.subject:
        raise SnpHostError(f"{path}: not issued by the ASK in cert_chain.pem")
    found = {
        e.oid.dotted_string: e.value.value
        for e in vcek.extensions
        if isinstance(e.value, x509.UnrecognizedExtension)
    }
    expected = pki.vcek_extensions(platform.product, platform.spls, chip_id)
    for oid, value in expected.items():
        if found.get(oid) != value:
            raise SnpHostError(
                f"{path}: AMD extension {oid} does not match host.json (product, TCB or chip_id)"
            )


def load_snp_host(directory: Path) -> SnpHost:
    """Load a host made by :func:`create_snp_host`; SnpHostError names the file at fault.

    Reads host.json, the TEST ARK, the ASK/ARK chain, the VCEK and its key (which
    must be private to its owner), and checks they belong together: the VCEK is
    for this key, issued by the ASK, and its AMD extensions name the product
    line, TCB and chip id of host.json. The policy is the verifier's input and
    is not read here.
    """
    directory = Path(directory)
    meta = directory / "host.json"
    doc = FILES.read_json_object(meta, format_version=FORMAT_VERSION, keys=_HOST_KEYS)
    product = doc.get("product")
    if not isinstance(product, str) or product not in PRODUCTS:
        raise SnpHostError(f"{meta}: product must be one of {', '.join(PRODUCTS)}")
    platform = PRODUCTS[product]
    if doc.get("tcb") != f"0x{platform.tcb:016x}":
        raise SnpHostError(f"{meta}: tcb must be 0x{platform.tcb:016x} for {product}")
    measurement = FILES.hex_bytes(doc.get("measurement"), MEASUREMENT_SIZE, "measurement", meta)
    chip_id = FILES.hex_bytes(doc.get("chip_id"), CHIP_ID_SIZE, "chip_id", meta)
    report_id = FILES.hex_bytes(doc.get("report_id"), REPORT_ID_SIZE, "report_id", meta)

    ark_path = directory / "trust" / "ark.pem"
    (ark,) = FILES.certificates(ark_path, 1)
    chain_path = directory / "cert_chain.pem"
    ask, chain_ark = FILES.certificates(chain_path, 2)
    if chain_ark != ark:
        raise SnpHostError(f"{chain_path}: the second certificate is not trust/ark.pem")
    if doc.get("ark_sha256") != ark.fingerprint(hashes.SHA256()).hex():
        raise SnpHostError(f"{meta}: ark_sha256 is not the SHA-256 of trust/ark.pem")
    vcek_path = directory / "vcek.der"
    vcek_der = FILES.read_file(vcek_path)
    try:
        vcek = x509.load_der_x509_certificate(vcek_der)
    except ValueError:
        raise SnpHostError(f"{vcek_path}: not a DER certificate") from None
    key_path = directory / "vcek_key.pem"
    key = FILES.read_private_key(key_path)
    if vcek.public_key() != key.public_key():
        raise SnpHostError(f"{vcek_path}: not the certificate of {key_path}")
    _check_vcek(vcek_path, vcek, ask, platform, chip_id)
    der = serialization.Encoding.DER
    return SnpHost(
        directory=directory,
        platform=platform,
        measurement=measurement,
        chip_id=chip_id,
        vcek_der=vcek_der,
        cert_chain_pem=FILES.read_file(chain_path),
        ark_pem=FILES.read_file(ark_path),
        created_at=FILES.timestamp(doc, "created_at", meta),
        valid_until=FILES.timestamp(doc, "valid_until", meta),
        _identity=ReportIdentity(
            platform=platform, measurement=measurement, chip_id=chip_id, report_id=report_id
        ),
        _key=key,
        _ask_der=ask.public_bytes(der),
        _ark_der=ark.public_bytes(der),
    )
