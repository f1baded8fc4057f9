"""Test PKIs for the simulated fleet: a device identity hierarchy and a RIM signing one.

The device hierarchy mirrors NVIDIA's Hopper chain (leaf first, as NVML returns
it): FMC leaf (per GPU, carries the FWID) <- GSP BROM (per GPU) <- provisioner
ICA <- GH100 identity CA <- device identity root, and the device sends a copy
of the root as the 5th certificate. The RIM hierarchy mirrors NVIDIA's L4
signer <- L3 <- CA <- CoRIM root. Every root and CA is named "weightgate TEST ...
(simulator)" so that nobody mistakes them for NVIDIA's; the verifier trusts them
only where a test pins them explicitly. All keys are fresh ECDSA P-384 (what
NVIDIA uses, and the only curve the verifier accepts for report signatures).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from devsim.x509util import Validity, builder, key_usage, pem, simulator_name

TEST_ORG = "weightgate TEST (simulator, not NVIDIA)"
DEVICE_ROOT_CN = "weightgate TEST NVIDIA Device Identity CA (simulator)"
RIM_ROOT_CN = "weightgate TEST NVIDIA CoRIM signing Root CA (simulator)"
# The verifier reads the leaf issuer's CN as the hardware model and names the
# driver RIM by its first word ("GH100"), so these two keep NVIDIA's wording.
BROM_CN = "GH100 A01 GSP BROM"
LEAF_CN = "GH100 A01 GSP FMC LF"

HOPPER_FWID_OID = x509.ObjectIdentifier("2.23.133.5.4.1")
_SHA384_OID_DER = bytes.fromhex("0609608648016503040202")  # OID 2.16.840.1.101.3.4.2.2
FWID_SIZE = 48


@dataclass(frozen=True)
class Issued:
    """A certificate and its key; ``issuer`` is None for a root."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    issuer: Issued | None = None


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _name(common_name: str, *, serial: str | None = None) -> x509.Name:
    # NVIDIA's per-device certificates carry a serialNumber name attribute,
    # which is also what keeps each GPU's BROM name distinct.
    return simulator_name(common_name, TEST_ORG, serial=serial)


def _der(tag: int, content: bytes) -> bytes:
    """One DER element with a minimal length (the verifier refuses any other form)."""
    size = len(content)
    if size < 0x80:
        length = bytes([size])
    elif size < 0x100:
        length = bytes([0x81, size])
    else:
        length = bytes([0x82]) + size.to_bytes(2, "big")
    return bytes([tag]) + length + content


def hopper_fwid_extension(public_key: ec.EllipticCurvePublicKey, fwid: bytes) -> bytes:
    """``SEQUENCE { INTEGER 1, SubjectPublicKeyInfo, FWID { sha384, digest } }``.

    Hopper's layout of 2.23.133.5.4.1: the digest ends the extension, which is
    where NVIDIA's verifier (and ours) read it.
    """
    if len(fwid) != FWID_SIZE:
        raise ValueError("an FWID is a 48-byte SHA-384 digest")
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fwid_der = _der(0x30, _SHA384_OID_DER + _der(0x04, fwid))
    return _der(0x30, _der(0x02, b"\x01") + spki + fwid_der)


def leaf_fwid(leaf: x509.Certificate) -> bytes:
    """The FWID this simulator put in a leaf (its extension's last 48 bytes)."""
    extension = leaf.extensions.get_extension_for_oid(HOPPER_FWID_OID).value
    if not isinstance(extension, x509.UnrecognizedExtension):
        raise ValueError("FWID extension decoded unexpectedly")
    return extension.value[-FWID_SIZE:]


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: Issued | None,
    validity: Validity,
    *,
    is_ca: bool,
    path_length: int | None = None,
    extra: tuple[x509.ExtensionType, ...] = (),
) -> Issued:
    """Sign a certificate (a CA's ``path_length`` None: no limit)."""
    signer_key = key if issuer is None else issuer.key
    issuer_name = subject if issuer is None else issuer.certificate.subject
    certificate = builder(subject, issuer_name, key.public_key(), validity).add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    )
    if issuer is not None:
        certificate = certificate.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if is_ca:
        certificate = certificate.add_extension(
            x509.BasicConstraints(ca=True, path_length=path_length), critical=True
        )
    certificate = certificate.add_extension(key_usage(ca=is_ca), critical=True)
    for extension in extra:
        certificate = certificate.add_extension(extension, critical=False)
    return Issued(certificate.sign(signer_key, hashes.SHA384()), key, issuer)


def make_root(common_name: str, validity: Validity) -> Issued:
    return _issue(_name(common_name), new_key(), None, validity, is_ca=True)


def make_ca(common_name: str, issuer: Issued, validity: Validity) -> Issued:
    return _issue(_name(common_name), new_key(), issuer, validity, is_ca=True)


@dataclass(frozen=True)
class DeviceCas:
    """The CAs every simulated GPU of a fleet shares."""

    root: Issued
    identity: Issued
    provisioner: Issued


def make_device_cas(validity: Validity) -> DeviceCas:
    root = make_root(DEVICE_ROOT_CN, validity)
    identity = make_ca("weightgate TEST GH100 Identity (simulator)", root, validity)
    provisioner = make_ca("weightgate TEST GH100 Provisioner ICA 1 (simulator)", identity, validity)
    return DeviceCas(root, identity, provisioner)


def make_device(cas: DeviceCas, validity: Validity) -> tuple[Issued, Issued]:
    """A GPU's own (BROM, FMC leaf), with a fresh FWID; the leaf serial is its UEID."""
    brom_serial = secrets.token_hex(9).upper()
    brom = _issue(
        _name(BROM_CN, serial=brom_serial),
        new_key(),
        cas.provisioner,
        validity,
        is_ca=True,
        path_length=0,
    )
    leaf_key = new_key()
    fwid = secrets.token_bytes(FWID_SIZE)
    leaf = _issue(
        _name(LEAF_CN, serial=secrets.token_hex(20).upper()),
        leaf_key,
        brom,
        validity,
        is_ca=False,
        extra=(
            x509.UnrecognizedExtension(
                HOPPER_FWID_OID, hopper_fwid_extension(leaf_key.public_key(), fwid)
            ),
        ),
    )
    return brom, leaf


def device_chain_pem(leaf: Issued, brom: Issued, cas: DeviceCas) -> bytes:
    """Leaf first, 5 certificates, the root's copy last: what NVML returns."""
    chain = (leaf, brom, cas.provisioner, cas.identity, cas.root)
    return pem(*(c.certificate for c in chain))


@dataclass(frozen=True)
class RimPki:
    """The RIM signing hierarchy: ``chain`` is signer first, root last (KeyInfo order)."""

    root: Issued
    signer: Issued
    chain: tuple[Issued, ...]


def make_rim_pki(validity: Validity) -> RimPki:
    root = make_root(RIM_ROOT_CN, validity)
    ca = make_ca("weightgate TEST NVIDIA CoRIM CA (simulator)", root, validity)
    l3 = make_ca("weightgate TEST NVIDIA Reference Value L3 (simulator)", ca, validity)
    signer = _issue(
        _name("weightgate TEST NVIDIA Reference Value L4 GH100 (simulator)"),
        new_key(),
        l3,
        validity,
        is_ca=False,
        extra=(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),),
    )
    return RimPki(root, signer, (signer, l3, ca, root))
