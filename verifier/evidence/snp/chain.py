"""Authenticate a VCEK/VLEK certificate: leaf -> ASK/ASVK -> ARK pinned per product line.

AMD's hierarchy per product line (AMD KDS spec): the ARK (AMD Root Key, self-signed)
signs the ASK (AMD SEV Key, CN "SEV-<line>") and the ASVK (CN "SEV-VLEK-<line>");
the ASK signs each chip's VCEKs, the ASVK the VLEKs AMD issues to cloud providers.
Every link is RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt; each is
verified here with exactly those parameters, whatever the certificate declares.

Trust anchors are never taken from evidence (STYLE.md 7): an ARK is trusted only
when its whole certificate's SHA-256 is one of the pins below, which also tells
its product line. Pinning the whole certificate (not the key) means an ARK file
that matches is byte-identical to AMD's, so a copy bundled with the evidence
and one from a trust directory are the same anchor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from verifier.evidence.snp.certs import AmdKeyCert, KeyKind
from verifier.evidence.snp.tcb import ProductLine
from verifier.verdict import Reason, VerificationError

__all__ = [
    "ARK_SHA256",
    "CHECK_CHAIN",
    "AmdRoots",
    "RootError",
    "VerifiedChain",
    "crl_signed_by",
    "load_amd_roots",
    "verify_key_chain",
]

CHECK_CHAIN = "snp.chain"

# SHA-256 of AMD's ARK certificates as served by KDS (/vcek/v1/<line>/cert_chain);
# the same bytes are bundled by go-sev-guest, trustee and virtee/sev
# (../shared/testvectors/snp/PROVENANCE.md, "AMD root/intermediate certificates").
ARK_SHA256: Mapping[ProductLine, bytes] = {
    # ARK-Milan, valid 2020-10-22..2045-10-22
    ProductLine.MILAN: bytes.fromhex(
        "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"
    ),
    # ARK-Genoa, valid 2022-01-26..2047-01-26
    ProductLine.GENOA: bytes.fromhex(
        "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"
    ),
    # ARK-Turin, valid 2023-05-15..2048-05-15
    ProductLine.TURIN: bytes.fromhex(
        "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a"
    ),
}

# AMD's ARK and ASK/ASVK keys are RSA-4096; anything smaller is not AMD's.
MIN_RSA_BITS = 4096
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


class RootError(ValueError):
    """A certificate offered as an ARK is not a pinned, self-signed AMD root."""


@dataclass(frozen=True, slots=True)
class AmdRoots:
    """Pinned ARKs by product line; built only by :func:`load_amd_roots`, so that a
    certificate cannot become an anchor without passing its pin check."""

    arks: Mapping[ProductLine, x509.Certificate]
    # SHA-256 of each ARK's DER, as checked against its pin: the identity of
    # these anchors, computed once (chain_cache.py keys verified chains by it).
    fingerprints: Mapping[ProductLine, bytes]

    def __post_init__(self) -> None:
        # Every construction through __init__ fails (dataclasses.replace too).
        raise TypeError("AmdRoots is built only by load_amd_roots()")


@dataclass(frozen=True, slots=True)
class VerifiedChain:
    """A VCEK/VLEK that chains to the pinned ARK of its product line at ``verified_at``."""

    key: AmdKeyCert
    intermediate: x509.Certificate  # the ASK (VCEK) or ASVK (VLEK)
    ark: x509.Certificate
    verified_at: datetime


def _fail(code: str, detail: str) -> VerificationError:
    return VerificationError(Reason(f"snp.chain.{code}", detail), ())


def _cn(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else certificate.subject.rfc4514_string()


def _pss_verifies(issuer: x509.Certificate, signature: bytes, signed: bytes) -> bool:
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
        return False
    try:
        key.verify(signature, signed, _PSS, hashes.SHA384())
    except InvalidSignature:
        return False
    return True


def _pss_signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s RSA key made ``child``'s RSASSA-PSS SHA-384 salt-48 signature.

    False also when the algorithm is anything else: AMD signs nothing else.
    """
    if child.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS:
        return False
    if not isinstance(child.signature_hash_algorithm, hashes.SHA384):
        return False
    return _pss_verifies(issuer, child.signature, child.tbs_certificate_bytes)


def crl_signed_by(crl: x509.CertificateRevocationList, ark: x509.Certificate) -> bool:
    """Whether ``ark``'s key made ``crl``'s signature, with exactly the parameters of
    every AMD certificate link (RSASSA-PSS SHA-384, MGF1-SHA-384, salt 48).

    Not ``crl.is_signature_valid``: that verifies with whatever PSS parameters the
    CRL declares (a 32-byte salt passes), and AMD signs with these only.
    """
    if crl.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS:
        return False
    if not isinstance(crl.signature_hash_algorithm, hashes.SHA384):
        return False
    return _pss_verifies(ark, crl.signature, crl.tbs_certlist_bytes)


def load_amd_roots(
    certificates: Iterable[x509.Certificate],
    *,
    pins: Mapping[ProductLine, bytes] = ARK_SHA256,
) -> AmdRoots:
    """The pinned ARKs among ``certificates``; any other certificate is an error.

    Each must have a pinned SHA-256 (which names its product line) and a valid
    self-signature (RSASSA-PSS SHA-384). Raises :class:`RootError`.
    """
    by_pin = {pin: product for product, pin in pins.items()}
    arks: dict[ProductLine, x509.Certificate] = {}
    fingerprints: dict[ProductLine, bytes] = {}
    for certificate in certificates:
        fingerprint = certificate.fingerprint(hashes.SHA256())
        product = by_pin.get(fingerprint)
        if product is None:
            raise RootError(
                f"{_cn(certificate)} (SHA-256 {fingerprint.hex()}) is not a pinned AMD ARK"
            )
        if certificate.issuer != certificate.subject or not _pss_signed_by(
            certificate, certificate
        ):
            raise RootError(f"{_cn(certificate)} is not self-signed with RSASSA-PSS SHA-384")
        arks[product] = certificate
        fingerprints[product] = fingerprint
    roots: AmdRoots = object.__new__(AmdRoots)
    object.__setattr__(roots, "arks", MappingProxyType(arks))
    object.__setattr__(roots, "fingerprints", MappingProxyType(fingerprints))
    return roots


def _intermediate_name(kind: KeyKind, product: ProductLine) -> str:
    return f"SEV-{product.value}" if kind is KeyKind.VCEK else f"SEV-VLEK-{product.value}"


def _find_intermediate(
    key: AmdKeyCert, intermediates: Sequence[x509.Certificate]
) -> x509.Certificate:
    leaf = key.certificate
    expected = _intermediate_name(key.kind, key.product)
    issuer_cn = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [str(a.value) for a in issuer_cn] != [expected]:
        raise _fail(
            "product_mismatch",
            f"{key.kind.value} says product {key.product_name} but is issued by "
            f"{leaf.issuer.rfc4514_string()!r}, not {expected}",
        )
    for candidate in intermediates:
        if candidate.subject == leaf.issuer:
            return candidate
    given = sorted(_cn(c) for c in intermediates)
    other_kind = _intermediate_name(
        KeyKind.VLEK if key.kind is KeyKind.VCEK else KeyKind.VCEK, key.product
    )
    if other_kind in given:
        raise _fail(
            "key_kind_mismatch",
            f"a {key.kind.value} chains to {expected}, but the chain holds {other_kind}",
        )
    if given:
        raise _fail(
            "product_mismatch",
            f"{key.product.value} {key.kind.value} needs {expected}; got {given}",
        )
    raise _fail("untrusted", f"no {expected} certificate given for the {key.kind.value}")


def _check_validity(certificate: x509.Certificate, at: datetime) -> None:
    if at < certificate.not_valid_before_utc:
        raise _fail(
            "not_yet_valid", f"{_cn(certificate)} is valid from {certificate.not_valid_before_utc}"
        )
    if at > certificate.not_valid_after_utc:
        raise _fail("expired", f"{_cn(certificate)} expired {certificate.not_valid_after_utc}")


def _check_ca(certificate: x509.Certificate) -> None:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise _fail("constraints_violated", f"{_cn(certificate)} is not marked a CA") from None
    if not constraints.ca or not usage.key_cert_sign:
        raise _fail("constraints_violated", f"{_cn(certificate)} may not sign certificates")


def _check_unknown_critical(certificate: x509.Certificate) -> None:
    # RFC 5280 4.2: a critical extension we do not understand must be refused.
    for extension in certificate.extensions:
        if extension.critical and isinstance(extension.value, x509.UnrecognizedExtension):
            raise _fail(
                "constraints_violated",
                f"{_cn(certificate)} has unknown critical extension {extension.oid.dotted_string}",
            )


def verify_key_chain(
    key: AmdKeyCert,
    intermediates: Sequence[x509.Certificate],
    roots: AmdRoots,
    *,
    at: datetime,
) -> VerifiedChain:
    """Verify a VCEK/VLEK to the pinned ARK of the product line its certificate names.

    Checks, in order (the first failure raises VerificationError):

    1. ``at`` is timezone-aware (ValueError: a caller bug);
    2. the leaf's issuer is the ASK (VCEK) or ASVK (VLEK) of its productName's line
       and one was given (``snp.chain.product_mismatch``, ``key_kind_mismatch``,
       ``untrusted``);
    3. a pinned ARK for that line is configured, the intermediate names it as
       issuer and it signed the intermediate (``untrusted``);
    4. the intermediate signed the leaf, RSASSA-PSS SHA-384 salt 48
       (``signature_invalid``);
    5. leaf, intermediate and ARK are valid at ``at`` (``expired``, ``not_yet_valid``);
    6. the intermediate and ARK are CAs that may sign certificates, and no
       certificate has an unknown critical extension (``constraints_violated``).
    """
    if at.tzinfo is None:
        raise ValueError("`at` must be timezone-aware")
    leaf = key.certificate
    intermediate = _find_intermediate(key, intermediates)
    ark = roots.arks.get(key.product)
    if ark is None:
        raise _fail("untrusted", f"no pinned ARK-{key.product.value} is configured")
    if intermediate.issuer != ark.subject or not _pss_signed_by(intermediate, ark):
        raise _fail("untrusted", f"{_cn(intermediate)} is not signed by the pinned {_cn(ark)}")
    if not _pss_signed_by(leaf, intermediate):
        raise _fail(
            "signature_invalid",
            f"{_cn(intermediate)} did not sign this {key.kind.value} (RSASSA-PSS SHA-384)",
        )
    for certificate in (leaf, intermediate, ark):
        _check_validity(certificate, at)
    _check_ca(intermediate)
    _check_ca(ark)
    for certificate in (leaf, intermediate, ark):
        _check_unknown_critical(certificate)
    return VerifiedChain(key=key, intermediate=intermediate, ark=ark, verified_at=at)
