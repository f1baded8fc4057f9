"""Authenticate an NVIDIA GPU / NVSwitch device certificate chain.

The device sends its chain leaf first (5 certificates: FMC leaf, BROM, provisioner
ICA, per-product identity CA, and a copy of the NVIDIA Device Identity CA). The
copy is never trusted: every self-issued certificate the device sent is dropped
and the path must end at a root from the verifier's own trust store (STYLE.md,
"Verifying evidence" 7), as NVIDIA's verifier does.

Pinning is by SHA-256 of the root's SubjectPublicKeyInfo, not of the whole
certificate: the key is what verifies the chain, and NVIDIA can re-issue the
root (new validity or serial) under the same key without our pin going stale,
while a look-alike root with the same subject but another key never matches.

cryptography's ``x509.verification`` targets Web PKI profiles (SAN and EKU
rules these device certificates do not follow), so the path is walked here
with ``verify_directly_issued_by`` per link.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.evidence.errors import ParseError
from verifier.evidence.lru import BoundedLru
from verifier.evidence.nvidia.dice import leaf_fwid
from verifier.verdict import Reason, VerificationError

# SPKI SHA-256 of roots/verifier_device_root.pem (CN=NVIDIA Device Identity CA,
# P-384), as shipped in nv-local-gpu-verifier 2.7.3 (PROVENANCE.md, roots).
DEVICE_ROOT_SPKI_SHA256 = bytes.fromhex(
    "a90c4eb5acfd3e3d03a25db6a26b84f720ad0503196c627c21ddd48dd85b06a4"
)

# Devices send 5 certificates (PEM about 5 KiB). The bounds leave room for a
# deeper future hierarchy while capping the parsing and signature work one
# piece of evidence can cost.
MAX_CHAIN_PEM_BYTES = 64 * 1024
MAX_CHAIN_CERTS = 8

# Every NVIDIA device certificate is ECDSA P-384 / SHA-384; P-256 and P-521 with
# SHA-2 are accepted so a test simulator or a future generation is not locked
# out, nothing weaker (no SHA-1, no RSA).
_CURVES: tuple[type[ec.EllipticCurve], ...] = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_HASHES: tuple[type[hashes.HashAlgorithm], ...] = (hashes.SHA256, hashes.SHA384, hashes.SHA512)

CHECK_CHAIN = "nvidia.chain"


@dataclass(frozen=True, slots=True)
class DeviceChain:
    """A device chain that verified to a pinned root at ``verified_at``.

    ``certificates`` is leaf → pinned root (the device's own root copy is not
    among them). ``fwid`` is the 48-byte firmware id from the leaf, ``ueid`` the
    leaf serial number (NVIDIA's device id), ``hwmodel`` the common name of the
    leaf's issuer (the boot ROM identity, e.g. "GH100 A01 GSP BROM").
    """

    leaf: x509.Certificate
    certificates: tuple[x509.Certificate, ...]
    root: x509.Certificate
    fwid: bytes
    ueid: int
    hwmodel: str
    verified_at: datetime


def spki_sha256(certificate: x509.Certificate) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo: the value roots are pinned by."""
    der = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def _fail(code: str, detail: str) -> VerificationError:
    return VerificationError(Reason(f"nvidia.chain.{code}", detail), ())


def _name(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(empty subject)"


def parse_pem_chain(pem_chain: bytes) -> list[x509.Certificate]:
    """The certificates of a concatenated-PEM chain, in the order sent.

    Raises :class:`ParseError` (``too_large``, ``malformed``) only.
    """
    if len(pem_chain) > MAX_CHAIN_PEM_BYTES:
        raise ParseError(f"chain over {MAX_CHAIN_PEM_BYTES} bytes", code="too_large")
    # Count markers before parsing so an oversized chain costs no DER work.
    if pem_chain.count(b"-----BEGIN CERTIFICATE-----") > MAX_CHAIN_CERTS:
        raise ParseError(f"chain over {MAX_CHAIN_CERTS} certificates", code="too_large")
    try:
        certificates = x509.load_pem_x509_certificates(pem_chain)
    # InvalidVersion (an X.509 version other than v1/v3) is not a ValueError.
    except (ValueError, x509.InvalidVersion) as exc:
        raise ParseError(f"certificate chain does not parse: {exc}") from None
    for certificate in certificates:
        decode_fields(certificate)
    return certificates


# What pyca raises when a lazily decoded field of a loaded certificate is malformed.
_FIELD_ERRORS = (
    ValueError,
    TypeError,  # a Name attribute whose value type its OID does not allow
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def decode_fields(certificate: x509.Certificate) -> None:
    """Decode every field the chain checks read, or raise :class:`ParseError`.

    pyca loads a certificate's outer structure eagerly but decodes names,
    extensions, the key and the signature algorithm only when first read, so a
    malformed one would otherwise surface as a ValueError (or worse) deep inside
    a check instead of as a parse failure.
    """
    try:
        _ = (certificate.subject, certificate.issuer, certificate.extensions)
        _ = (certificate.not_valid_before_utc, certificate.not_valid_after_utc)
        _ = (certificate.public_key(), certificate.signature_hash_algorithm)
    except _FIELD_ERRORS as exc:
        raise ParseError(f"certificate field does not decode: {exc}") from None


_FINGERPRINT = hashes.SHA256()
# Links (child, issuer) verified, 4096 remembered, least recently used out.
_VERIFIED_LINKS: BoundedLru[tuple[bytes, bytes], bool] = BoundedLru(4096)


def _is_self_issued(certificate: x509.Certificate) -> bool:
    return certificate.subject == certificate.issuer


def _check_link(child: x509.Certificate, issuer: x509.Certificate) -> None:
    """``issuer`` signed ``child`` with an allowed algorithm."""
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _CURVES):
        raise _fail("algorithm_unsupported", f"{_name(issuer)} key is not ECDSA P-256/384/521")
    if not isinstance(child.signature_hash_algorithm, _HASHES):
        raise _fail("algorithm_unsupported", f"{_name(child)} is not signed with SHA-2")
    # Every Hopper GPU sends the same intermediates, so most links repeat from GPU to
    # GPU and round to round. A link is a pure function of the two certificates'
    # bytes (SHA-256 names them), so a verified one is remembered; validity at `at`
    # and every other check still run on each call, and failures are never cached.
    link = (child.fingerprint(_FINGERPRINT), issuer.fingerprint(_FINGERPRINT))
    if _VERIFIED_LINKS.get(link):
        return
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        # ValueError: names differ or algorithm mismatch; InvalidSignature: bad signature.
        raise _fail("signature_invalid", f"{_name(issuer)} did not sign {_name(child)}") from None
    _VERIFIED_LINKS.put(link, value=True)


def _check_validity(certificate: x509.Certificate, at: datetime) -> None:
    if at < certificate.not_valid_before_utc:
        raise _fail(
            "not_yet_valid",
            f"{_name(certificate)} is valid from {certificate.not_valid_before_utc}",
        )
    if at > certificate.not_valid_after_utc:
        raise _fail("expired", f"{_name(certificate)} expired {certificate.not_valid_after_utc}")


def _check_unknown_critical(certificate: x509.Certificate) -> None:
    # RFC 5280 4.2: a certificate with a critical extension we do not understand
    # must be rejected, since its issuer meant it to restrict how it is used.
    for extension in certificate.extensions:
        if extension.critical and isinstance(extension.value, x509.UnrecognizedExtension):
            raise _fail(
                "constraints_violated",
                f"{_name(certificate)} has unknown critical "
                f"extension {extension.oid.dotted_string}",
            )


def _check_ca(certificate: x509.Certificate, intermediates_below: int) -> None:
    """``certificate`` may issue certificates with ``intermediates_below`` CAs under it."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise _fail("constraints_violated", f"{_name(certificate)} is not a CA") from None
    if not constraints.ca:
        raise _fail("constraints_violated", f"{_name(certificate)} is not a CA")
    if constraints.path_length is not None and intermediates_below > constraints.path_length:
        raise _fail("constraints_violated", f"{_name(certificate)} path length exceeded")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise _fail("constraints_violated", f"{_name(certificate)} may not sign certificates")


def _check_leaf(leaf: x509.Certificate) -> None:
    # The leaf key signs SPDM reports, so it must be allowed to sign data.
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.digital_signature:
        raise _fail("constraints_violated", f"{_name(leaf)} may not sign reports")


def _anchor(top: x509.Certificate, pinned_roots: Sequence[x509.Certificate]) -> x509.Certificate:
    """The pinned root that signed ``top``; a root with the right name but another key fails."""
    named = [root for root in pinned_roots if root.subject == top.issuer]
    for root in named:
        try:
            _check_link(top, root)
        except VerificationError:
            continue
        return root
    detail = "no pinned root has that name" if not named else "no pinned root's key signed it"
    raise _fail("untrusted", f"{_name(top)} issued by {top.issuer.rfc4514_string()!r}: {detail}")


def verify_device_chain(
    pem_chain: bytes,
    *,
    pinned_roots: Sequence[x509.Certificate],
    at: datetime,
    spki_pins: Collection[bytes] = (DEVICE_ROOT_SPKI_SHA256,),
) -> DeviceChain:
    """Verify a device's PEM chain to a pinned root and read the leaf's identity.

    Checks, in order (the first failure raises):

    1. configuration: ``at`` is timezone-aware, every ``pinned_roots`` entry has
       an SPKI SHA-256 in ``spki_pins`` (default: the NVIDIA Device Identity CA;
       a test root must be pinned explicitly) (ValueError: a setup error);
    2. the PEM parses within the size and count bounds (ParseError);
    3. every self-issued certificate the device sent is dropped; at least the
       leaf remains and each certificate names the next as issuer
       (``nvidia.chain.malformed``);
    4. each link's signature with ECDSA and SHA-2 (``signature_invalid``,
       ``algorithm_unsupported``), and the top certificate is signed by a
       pinned root's key (``untrusted``);
    5. every certificate including the root is valid at ``at`` (``expired``,
       ``not_yet_valid``);
    6. issuers are CAs allowed to sign certificates within their path length,
       the leaf may sign data, no unknown critical extension
       (``constraints_violated``);
    7. the leaf carries exactly one FWID extension that parses (ParseError).

    OCSP revocation is not checked here; the caller checks the returned path.
    """
    if at.tzinfo is None:
        raise ValueError("`at` must be timezone-aware")
    if not pinned_roots:
        raise ValueError("no pinned device roots configured")
    for root in pinned_roots:
        if spki_sha256(root) not in spki_pins:
            raise ValueError(f"root {_name(root)} is not pinned by SPKI SHA-256")

    sent = parse_pem_chain(pem_chain)
    path = [c for c in sent if not _is_self_issued(c)]
    if not path:
        raise _fail("malformed", "chain holds no device certificate")
    for child, issuer in itertools.pairwise(path):
        if child.issuer != issuer.subject:
            raise _fail("malformed", f"{_name(child)} is not issued by the next certificate")

    for child, issuer in itertools.pairwise(path):
        _check_link(child, issuer)
    root = _anchor(path[-1], pinned_roots)
    certificates = (*path, root)

    for certificate in certificates:
        _check_validity(certificate, at)

    _check_leaf(path[0])
    for position, certificate in enumerate(certificates):
        _check_unknown_critical(certificate)
        if position > 0:
            # Intermediates between this CA and the leaf (the leaf itself does
            # not count, RFC 5280 4.2.1.9).
            _check_ca(certificate, position - 1)

    leaf = path[0]
    hwmodel_names = leaf.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    hwmodel = str(hwmodel_names[0].value) if hwmodel_names else ""
    return DeviceChain(
        leaf=leaf,
        certificates=certificates,
        root=root,
        fwid=leaf_fwid(leaf),
        ueid=leaf.serial_number,
        hwmodel=hwmodel,
        verified_at=at,
    )
