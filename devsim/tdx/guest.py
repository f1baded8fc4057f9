"""A simulated Intel TDX guest on disk: create it once, load it, ask for quotes.

Layout of a guest directory (directories 0700, the private keys 0600)::

    guest.json               MRTD, RTMRs, QE id, PPID, the TEST root's SPKI SHA-256, validity
    trust/root.pem           the TEST root (pin its SPKI SHA-256 explicitly; never Intel's)
    pck_chain.pem            PCK leaf, PCK Platform CA, root (PEM): what each quote carries
    pck_key.pem              the PCK leaf key: signs the QE report (as the PCE would)
    attestation_key.pem      the quoting enclave's attestation key: signs the quotes
    collateral/              as ``weightgate evidence verify tdx --collateral`` reads it:
      tcb_info.json          TDX TCB Info v3, signed by the TEST TCB Signing key
      qe_identity.json       TD QE Identity v2, signed likewise
      tcb_signing_chain.pem  TCB Signing then root (PCS's TCB-Info-Issuer-Chain)
      root_ca_crl.der        the root's CRL (DER), nothing revoked
      pck_crl.der            the PCK Platform CA's CRL (DER), nothing revoked
    tdx_policy.json          a TDX policy (verifier format) the simulated quotes satisfy

The root, Platform CA and TCB Signing keys are never written: once the guest
exists nobody can issue another certificate or collateral under its root.
Certificates, CRLs and collateral are valid for the same window. ``guest.json``
is written last, so a half-made directory fails to load instead of loading half
a guest.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devsim.files import key_pem, make_private_dir
from devsim.tdx import collateral, pki
from devsim.tdx.files import FILES, TdxGuestError
from devsim.tdx.model import PLATFORM, Platform
from devsim.tdx.quote import MEASUREMENT_SIZE, USER_DATA_SIZE, TdIdentity, signed_quote
from devsim.x509util import pem

__all__ = ["MAX_VALIDITY_DAYS", "TdxGuest", "create_tdx_guest", "load_tdx_guest"]

FORMAT_VERSION = 1
# Ten years bounds a typo (36500) while leaving long-lived demo guests possible.
MAX_VALIDITY_DAYS = 3650
_ID_SIZE = 16  # PPID and PlatformInstanceID
_GUEST_KEYS = frozenset(
    {
        "format",
        "simulator",
        "mrtd",
        "rtmrs",
        "qe_id",
        "ppid",
        "platform_instance_id",
        "root_spki_sha256",
        "created_at",
        "valid_until",
    }
)


def spki_sha256(certificate: x509.Certificate) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo: the value an Intel SGX root is pinned by."""
    der = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


@dataclass(frozen=True)
class TdxGuest:
    """A loaded simulated TDX guest: its registers, certificates and the QE/PCK signing keys."""

    directory: Path
    platform: Platform
    mr_td: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    pck_chain_pem: bytes  # PCK leaf, PCK Platform CA, root
    root_pem: bytes
    root_spki_sha256: bytes  # the pin a test gives the verifier
    created_at: datetime
    valid_until: datetime
    _identity: TdIdentity = field(repr=False)
    _attestation_key: ec.EllipticCurvePrivateKey = field(repr=False)
    _pck_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def root_path(self) -> Path:
        return self.directory / "trust" / "root.pem"

    @property
    def collateral_dir(self) -> Path:
        return self.directory / "collateral"

    @property
    def policy_path(self) -> Path:
        return self.directory / "tdx_policy.json"

    def quote(self, report_data: bytes) -> bytes:
        """A fresh v4 TDX quote whose REPORTDATA is ``report_data`` (exactly 64 bytes)."""
        return signed_quote(
            self._identity,
            bytes(report_data),
            attestation_key=self._attestation_key,
            pck_key=self._pck_key,
            pck_chain_pem=self.pck_chain_pem,
        )


def _der_crl(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def _policy(mr_td: bytes, rtmrs: tuple[bytes, ...]) -> bytes:
    doc = {
        "version": 1,
        "mrtd": [mr_td.hex()],
        # RTMR0-2 hold firmware, kernel and command line; RTMR3 is the guest's to
        # extend at run time, so it is not pinned.
        "rtmr0": [rtmrs[0].hex()],
        "rtmr1": [rtmrs[1].hex()],
        "rtmr2": [rtmrs[2].hex()],
        "allow_debug": False,
        "accepted_tcb_statuses": ["UpToDate"],
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


def create_tdx_guest(
    directory: Path,
    *,
    now: datetime | None = None,
    validity_days: int = 30,
    collateral_shape: collateral.CollateralShape = collateral.DEFAULT_SHAPE,
) -> TdxGuest:
    """Make a simulated TDX guest in ``directory`` (absent or empty).

    Keys, PPID, MRTD and RTMR0-2 are fresh; certificates, CRLs and collateral are
    valid from shortly before ``now`` (default: the current time) for
    ``validity_days``; ``collateral_shape`` changes what the collateral says (for
    tests: evaluation numbers, level order). Raises TdxGuestError for bad
    arguments or an unusable directory.
    """
    now = datetime.now(UTC) if now is None else now
    directory = Path(directory)
    FILES.check_create(
        directory, validity_days=validity_days, max_validity_days=MAX_VALIDITY_DAYS, now=now
    )
    platform = PLATFORM
    mr_td = secrets.token_bytes(MEASUREMENT_SIZE)
    rtmrs = (*(secrets.token_bytes(MEASUREMENT_SIZE) for _ in range(3)), bytes(MEASUREMENT_SIZE))
    qe_id = secrets.token_bytes(16) + bytes(USER_DATA_SIZE - 16)
    ppid, instance_id = secrets.token_bytes(_ID_SIZE), secrets.token_bytes(_ID_SIZE)
    validity = pki.Validity.starting(now, validity_days)
    hierarchy = pki.make_hierarchy(platform, validity, ppid=ppid, instance_id=instance_id)
    attestation_key = ec.generate_private_key(ec.SECP256R1())
    signing_key = hierarchy.tcb_signing_key

    make_private_dir(directory)
    trust = make_private_dir(directory / "trust")
    FILES.write_public(trust / "root.pem", pem(hierarchy.root))
    FILES.write_public(
        directory / "pck_chain.pem", pem(hierarchy.pck, hierarchy.platform_ca, hierarchy.root)
    )
    FILES.write_private(directory / "pck_key.pem", key_pem(hierarchy.pck_key))
    FILES.write_private(directory / "attestation_key.pem", key_pem(attestation_key))
    served = make_private_dir(directory / "collateral")
    FILES.write_public(
        served / "tcb_info.json",
        collateral.tcb_info(platform, validity, signing_key, shape=collateral_shape),
    )
    FILES.write_public(
        served / "qe_identity.json",
        collateral.qe_identity(platform, validity, signing_key, shape=collateral_shape),
    )
    FILES.write_public(served / "tcb_signing_chain.pem", pem(hierarchy.tcb_signing, hierarchy.root))
    FILES.write_public(served / "root_ca_crl.der", _der_crl(hierarchy.root_crl))
    FILES.write_public(served / "pck_crl.der", _der_crl(hierarchy.pck_crl))
    FILES.write_public(directory / "tdx_policy.json", _policy(mr_td, rtmrs))
    doc = {
        "format": FORMAT_VERSION,
        "simulator": "weightgate devsim.tdx: TEST root, not Intel's; never pin in production",
        "mrtd": mr_td.hex(),
        "rtmrs": [r.hex() for r in rtmrs],
        "qe_id": qe_id.hex(),
        "ppid": ppid.hex(),
        "platform_instance_id": instance_id.hex(),
        "root_spki_sha256": spki_sha256(hierarchy.root).hex(),
        "created_at": now.isoformat(),
        "valid_until": validity.not_after.isoformat(),
    }
    FILES.write_public(directory / "guest.json", json.dumps(doc, indent=2).encode() + b"\n")
    return load_tdx_guest(directory)


def _check_pck(
    path: Path, pck: x509.Certificate, ca: x509.Certificate, expected_extension: bytes
) -> None:
    if pck.issuer != ca.subject:
        raise TdxGuestError(f"{path}: the PCK certificate is not issued by the PCK Platform CA")
    try:
        extension = pck.extensions.get_extension_for_oid(pki.SGX_EXTENSION_OID).value
    except x509.ExtensionNotFound:
        raise TdxGuestError(f"{path}: the PCK certificate has no SGX extension") from None
    if not isinstance(extension, x509.UnrecognizedExtension) or (
        extension.value != expected_extension
    ):
        raise TdxGuestError(
            f"{path}: the PCK's SGX extension does not match guest.json and the platform"
        )


def load_tdx_guest(directory: Path) -> TdxGuest:
    """Load a guest made by :func:`create_tdx_guest`; TdxGuestError names the file at fault.

    Reads guest.json, the TEST root, the PCK chain and both keys (which must be
    private to their owner), and checks they belong together: the chain ends in
    trust/root.pem, whose SPKI SHA-256 guest.json names; the PCK certificate is
    for pck_key.pem, issued by the Platform CA, and its SGX extension carries the
    platform's FMSPC, PCE-ID and TCB and guest.json's PPID. Collateral and policy
    are the verifier's inputs and are not read here.
    """
    directory = Path(directory)
    meta = directory / "guest.json"
    doc = FILES.read_json_object(meta, format_version=FORMAT_VERSION, keys=_GUEST_KEYS)
    platform = PLATFORM
    mr_td = FILES.hex_bytes(doc.get("mrtd"), MEASUREMENT_SIZE, "mrtd", meta)
    raw_rtmrs = doc.get("rtmrs")
    if not isinstance(raw_rtmrs, list) or len(raw_rtmrs) != 4:
        raise TdxGuestError(f"{meta}: rtmrs must list 4 registers")
    r0, r1, r2, r3 = (FILES.hex_bytes(r, MEASUREMENT_SIZE, "rtmrs[]", meta) for r in raw_rtmrs)
    qe_id = FILES.hex_bytes(doc.get("qe_id"), USER_DATA_SIZE, "qe_id", meta)
    ppid = FILES.hex_bytes(doc.get("ppid"), _ID_SIZE, "ppid", meta)
    instance_id = FILES.hex_bytes(
        doc.get("platform_instance_id"), _ID_SIZE, "platform_instance_id", meta
    )

    root_path = directory / "trust" / "root.pem"
    (root,) = FILES.certificates(root_path, 1)
    root_spki = spki_sha256(root)
    if FILES.hex_bytes(doc.get("root_spki_sha256"), 32, "root_spki_sha256", meta) != root_spki:
        raise TdxGuestError(f"{meta}: root_spki_sha256 is not the SPKI SHA-256 of trust/root.pem")
    chain_path = directory / "pck_chain.pem"
    pck, ca, chain_root = FILES.certificates(chain_path, 3)
    if chain_root != root:
        raise TdxGuestError(f"{chain_path}: the third certificate is not trust/root.pem")
    expected = pki.sgx_extension(platform, ppid=ppid, instance_id=instance_id)
    _check_pck(chain_path, pck, ca, expected)
    pck_key_path = directory / "pck_key.pem"
    pck_key = FILES.read_private_key(pck_key_path)
    if pck.public_key() != pck_key.public_key():
        raise TdxGuestError(f"{chain_path}: the PCK certificate is not for {pck_key_path}")
    attestation_key = FILES.read_private_key(directory / "attestation_key.pem")
    rtmrs = (r0, r1, r2, r3)
    return TdxGuest(
        directory=directory,
        platform=platform,
        mr_td=mr_td,
        rtmrs=rtmrs,
        pck_chain_pem=FILES.read_file(chain_path),
        root_pem=FILES.read_file(root_path),
        root_spki_sha256=root_spki,
        created_at=FILES.timestamp(doc, "created_at", meta),
        valid_until=FILES.timestamp(doc, "valid_until", meta),
        _identity=TdIdentity(platform=platform, mr_td=mr_td, rtmrs=rtmrs, user_data=qe_id),
        _attestation_key=attestation_key,
        _pck_key=pck_key,
    )
