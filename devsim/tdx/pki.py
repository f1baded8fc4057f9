"""The TEST Intel SGX key hierarchy of a simulated TDX host.

It mirrors Intel's (Intel SGX PCK Certificate and CRL Profile): a self-signed
root signs the PCK Platform CA, which signs the platform's PCK certificate
(carrying the SGX extension 1.2.840.113741.1.13.1: PPID, TCB component SVNs,
PCESVN, CPUSVN, PCE-ID, FMSPC, SGX Type, PlatformInstanceID, Configuration);
the root also signs the TCB Signing certificate that signs TCB Info and QE
Identity, and the root CA CRL; the Platform CA signs the PCK CRL. Every key is
ECDSA P-256 and every signature ECDSA SHA-256, as Intel's.

Names say TEST and simulator ("Intel SGX Root CA (weightgate TEST simulator)"),
so nobody takes them for Intel's, and the verifier pins Intel's root by its key:
it trusts this one only where a test passes its SPKI SHA-256 explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from devsim.tdx.model import Platform
from devsim.x509util import Validity, builder, key_usage, simulator_name

__all__ = [
    "SGX_EXTENSION_OID",
    "Hierarchy",
    "Validity",
    "make_hierarchy",
    "sgx_extension",
]

TEST_ORG = "weightgate TEST (simulator, not Intel)"
ROOT_CN = "Intel SGX Root CA (weightgate TEST simulator)"
PLATFORM_CA_CN = "Intel SGX PCK Platform CA (weightgate TEST simulator)"
PCK_CN = "Intel SGX PCK Certificate (weightgate TEST simulator)"
TCB_SIGNING_CN = "Intel SGX TCB Signing (weightgate TEST simulator)"

SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_SGX_OID_DER = bytes.fromhex("2a864886f84d010d01")  # 1.2.840.113741.1.13.1
_SEQUENCE, _OID, _OCTET_STRING, _INTEGER, _ENUMERATED, _BOOLEAN = 0x30, 0x06, 0x04, 0x02, 0x0A, 0x01
_SGX_TYPE_STANDARD = 0


@dataclass(frozen=True)
class Hierarchy:
    """One simulated host's certificates, CRLs and the PCK key (CA keys are dropped)."""

    root: x509.Certificate
    platform_ca: x509.Certificate
    pck: x509.Certificate
    pck_key: ec.EllipticCurvePrivateKey
    tcb_signing: x509.Certificate
    tcb_signing_key: ec.EllipticCurvePrivateKey  # used once for the collateral, never saved
    root_crl: x509.CertificateRevocationList
    pck_crl: x509.CertificateRevocationList


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(encoded)]) + encoded + content


def _integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("SVNs are non-negative")
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")  # room for the sign bit
    return _der(_INTEGER, body)


def _entry(suffix: tuple[int, ...], value: bytes) -> bytes:
    # Every arc after the SGX prefix is below 128: one byte each.
    return _der(_SEQUENCE, _der(_OID, _SGX_OID_DER + bytes(suffix)) + value)


def sgx_extension(platform: Platform, *, ppid: bytes, instance_id: bytes) -> bytes:
    """DER of the SGX extension a PCK certificate for ``platform`` carries."""
    tcb = b"".join(
        _entry((2, number), _integer(svn))
        for number, svn in enumerate(platform.sgx_components, start=1)
    )
    tcb += _entry((2, 17), _integer(platform.pce_svn))
    tcb += _entry((2, 18), _der(_OCTET_STRING, platform.cpu_svn))
    configuration = b"".join(
        # dynamicPlatform, cachedKeys, SMTEnabled: a single-package server with SMT.
        _entry((7, number), _der(_BOOLEAN, b"\xff" if flag else b"\x00"))
        for number, flag in ((1, False), (2, True), (3, True))
    )
    return _der(
        _SEQUENCE,
        _entry((1,), _der(_OCTET_STRING, ppid))
        + _entry((2,), _der(_SEQUENCE, tcb))
        + _entry((3,), _der(_OCTET_STRING, platform.pce_id))
        + _entry((4,), _der(_OCTET_STRING, platform.fmspc))
        + _entry((5,), _der(_ENUMERATED, bytes([_SGX_TYPE_STANDARD])))
        + _entry((6,), _der(_OCTET_STRING, instance_id))
        + _entry((7,), _der(_SEQUENCE, configuration)),
    )


def _name(common_name: str) -> x509.Name:
    return simulator_name(common_name, TEST_ORG)


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    validity: Validity,
    *,
    ca: bool,
    extra: x509.UnrecognizedExtension | None = None,
) -> x509.Certificate:
    certificate = (
        builder(subject, issuer, public_key, validity)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        # A leaf here also asserts contentCommitment (non-repudiation).
        .add_extension(key_usage(ca=ca, content_commitment=not ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if extra is not None:
        certificate = certificate.add_extension(extra, critical=False)
    return certificate.sign(signer, hashes.SHA256())


def _crl(
    issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, validity: Validity
) -> x509.CertificateRevocationList:
    # Nothing is revoked: the simulated host's certificates are all good.
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(validity.not_before)
        .next_update(validity.not_after)
        .add_extension(x509.CRLNumber(1), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_hierarchy(
    platform: Platform, validity: Validity, *, ppid: bytes, instance_id: bytes
) -> Hierarchy:
    """A fresh TEST root, PCK Platform CA, PCK (for ``platform``), TCB Signing and CRLs."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    pck_key = ec.generate_private_key(ec.SECP256R1())
    signing_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(ROOT_CN)
    ca_name = _name(PLATFORM_CA_CN)
    root = _certificate(root_name, root_name, root_key.public_key(), root_key, validity, ca=True)
    ca = _certificate(ca_name, root_name, ca_key.public_key(), root_key, validity, ca=True)
    extension = x509.UnrecognizedExtension(
        SGX_EXTENSION_OID,
        sgx_extension(platform, ppid=ppid, instance_id=instance_id),
    )
    pck = _certificate(
        _name(PCK_CN), ca_name, pck_key.public_key(), ca_key, validity, ca=False, extra=extension
    )
    tcb_signing = _certificate(
        _name(TCB_SIGNING_CN), root_name, signing_key.public_key(), root_key, validity, ca=False
    )
    return Hierarchy(
        root=root,
        platform_ca=ca,
        pck=pck,
        pck_key=pck_key,
        tcb_signing=tcb_signing,
        tcb_signing_key=signing_key,
        root_crl=_crl(root, root_key, validity),
        pck_crl=_crl(ca, ca_key, validity),
    )
