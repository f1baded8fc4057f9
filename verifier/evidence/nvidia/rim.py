"""Verify an NVIDIA reference integrity manifest (RIM), then read it.

A RIM is an ISO SWID tag (``SoftwareIdentity``) with an enveloped XML-DSig over
the whole document (``Reference URI=""``, ECDSA-SHA384, SHA-384 digest) and the
signing chain in ``KeyInfo``. NVIDIA's own verifier reads golden values before it
checks the signature; here no value is read until the signature and its chain
to a pinned root have been verified, and then only from the data signxml
returns as signed (``VerifyResult.signed_xml``), never from the original tree,
so that a signature-wrapping document cannot make us read unsigned elements.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import NoReturn

from cryptography import x509
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidInput, InvalidSignature
from signxml.verifier import SignatureConfiguration, VerifyResult, XMLVerifier

from verifier.evidence.nvidia.rim_chain import verify_signing_chain
from verifier.evidence.nvidia.rim_read import RimContent, RimMeasurement, read_rim_content
from verifier.verdict import Reason, VerificationError

__all__ = [
    "CHECK_CHAIN",
    "CHECK_PARSE",
    "CHECK_SIGNATURE",
    "MAX_RIM_BYTES",
    "RimMeasurement",
    "VerifiedRim",
    "verify_rim",
]

CHECK_PARSE = "nvidia.rim.parse"
CHECK_CHAIN = "nvidia.rim.chain"
CHECK_SIGNATURE = "nvidia.rim.signature"

# NVIDIA's RIMs are 20-70 KB (64 entries, up to 4 SHA-384 alternatives each, plus a
# 4-certificate chain); 1 MiB leaves room for growth and bounds parser work.
MAX_RIM_BYTES = 1 << 20

_DS = "http://www.w3.org/2000/09/xmldsig#"
_SWID_ROOT = "{http://standards.iso.org/iso/19770/-2/2015/schema.xsd}SoftwareIdentity"

# The only algorithms NVIDIA signs RIMs with; anything else is refused rather than
# accepted because signxml happens to implement it.
_SIGNATURE_CONFIG = SignatureConfiguration(
    require_x509=True,
    location="./",  # enveloped at the top level: a direct child of SoftwareIdentity
    expect_references=1,
    signature_methods=frozenset({SignatureMethod.ECDSA_SHA384}),
    digest_algorithms=frozenset({DigestAlgorithm.SHA384}),
)


class _Seal:
    """Proof that verify_rim built a VerifiedRim, bound to its content.

    Binding to the content means ``dataclasses.replace(rim, measurements=...)``,
    which copies the seal, fails instead of yielding a doctored RIM.
    """

    __slots__ = ("content",)

    def __init__(self, content: object) -> None:
        self.content = content


@dataclass(frozen=True, slots=True)
class VerifiedRim:
    """A RIM whose XML-DSig and signing chain verified at ``verified_at``.

    ``sha256`` is the digest of the exact XML bytes (the content address: NVIDIA
    reissues different contents under one tag id). ``content`` holds what was read
    from the signed data only. Built only by :func:`verify_rim`.
    """

    sha256: str
    content: RimContent
    signer_subject: str
    verified_at: datetime
    valid_until: datetime
    checks_run: frozenset[str]
    _seal: object = field(default=None, repr=False, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self._seal, _Seal) or self._seal.content != self._fields():
            raise TypeError("VerifiedRim is built only by verify_rim()")

    def _fields(self) -> tuple[object, ...]:
        return (
            self.sha256,
            self.content,
            self.signer_subject,
            self.verified_at,
            self.valid_until,
            self.checks_run,
        )

    @property
    def tag_id(self) -> str:
        return self.content.tag_id

    @property
    def measurements(self) -> tuple[RimMeasurement, ...]:
        return self.content.measurements


def _fail(code: str, detail: str, done: Sequence[str]) -> NoReturn:
    raise VerificationError(Reason(code, detail), done)


def _safe_parser() -> etree.XMLParser:
    # No DTD, no entity expansion, no network, no huge-tree mode: a RIM is plain
    # data, and each of these is an XXE or billion-laughs vector.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
    )


def parse_rim_xml(xml_bytes: bytes, done: Sequence[str]) -> etree._Element:
    if len(xml_bytes) > MAX_RIM_BYTES:
        _fail("nvidia.rim.malformed", f"{len(xml_bytes)} bytes, limit {MAX_RIM_BYTES}", done)
    try:
        root = etree.fromstring(xml_bytes, parser=_safe_parser())
    except etree.XMLSyntaxError as exc:
        _fail("nvidia.rim.malformed", f"not well-formed XML: {exc}", done)
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        _fail("nvidia.rim.malformed", "DOCTYPE/DTD declarations are refused", done)
    if any(True for _ in root.iter(etree.Entity)):
        _fail("nvidia.rim.malformed", "entity references are refused", done)
    if root.tag != _SWID_ROOT:
        _fail("nvidia.rim.schema", f"root element is {root.tag!r}, not SWID SoftwareIdentity", done)
    return root


def keyinfo_certificates(root: etree._Element, done: Sequence[str]) -> list[bytes]:
    # Exactly one signature, and it is the root's child: a second one (or one
    # elsewhere) is how wrapping attacks smuggle a signed subtree next to unsigned data.
    signatures = root.findall(f".//{{{_DS}}}Signature")
    if len(signatures) != 1 or signatures[0].getparent() is not root:
        _fail(
            "nvidia.rim.signature_invalid",
            f"want exactly one ds:Signature, a child of the root ({len(signatures)} found)",
            done,
        )
    ders = []
    for element in signatures[0].findall(
        f"./{{{_DS}}}KeyInfo/{{{_DS}}}X509Data/{{{_DS}}}X509Certificate"
    ):
        try:
            ders.append(base64.b64decode("".join((element.text or "").split()), validate=True))
        except (binascii.Error, ValueError):
            _fail("nvidia.rim.malformed", "X509Certificate is not base64", done)
    return ders


def _verify_signature(
    xml_bytes: bytes, leaf: x509.Certificate, at: datetime, done: Sequence[str]
) -> etree._Element:
    """signxml verifies SignedInfo with ``leaf`` and the one reference's digest."""
    # x509_cert pins the key to the leaf our own chain walk accepted, so signxml's
    # CA handling (a PEM bundle, its own path rules) is not involved; it still
    # checks the leaf's validity at ``verification_time``.
    config = replace(_SIGNATURE_CONFIG, verification_time=at)
    try:
        result = XMLVerifier().verify(
            xml_bytes, x509_cert=leaf, parser=_safe_parser(), expect_config=config
        )
    # signxml raises its own exceptions, ValueError for unknown algorithm URIs, and
    # AttributeError/TypeError on structurally odd signatures; all mean "not verified".
    except (InvalidSignature, InvalidInput, ValueError, TypeError) as exc:
        _fail("nvidia.rim.signature_invalid", f"{type(exc).__name__}: {exc}", done)
    except (AttributeError, KeyError, etree.LxmlError) as exc:
        _fail("nvidia.rim.signature_invalid", f"unusable signature: {type(exc).__name__}", done)
    if not isinstance(result, VerifyResult) or result.signed_xml is None:
        _fail("nvidia.rim.signature_invalid", "signature does not cover an XML element", done)
    references = result.signature_xml.findall(f"./{{{_DS}}}SignedInfo/{{{_DS}}}Reference")
    if len(references) != 1 or references[0].get("URI") != "":
        # Only a same-document reference to the whole document proves that every
        # value below was signed; an Id reference could point at a detached copy.
        _fail("nvidia.rim.signature_invalid", "the signature must cover the whole document", done)
    signed = result.signed_xml
    if signed.tag != _SWID_ROOT:
        _fail("nvidia.rim.signature_invalid", "signed data is not the SoftwareIdentity", done)
    return signed


def verify_rim(
    xml_bytes: bytes, *, pinned_roots: Sequence[x509.Certificate], at: datetime
) -> VerifiedRim:
    """Verify a RIM and return what its signed data says.

    Checks, in order, each raising VerificationError on failure:

    1. size bound, well-formed XML without DTD or entities, SWID root
       (``nvidia.rim.malformed`` / ``nvidia.rim.schema``);
    2. exactly one ds:Signature, a direct child of the root;
    3. the KeyInfo chain leads from the signer to one of ``pinned_roots``
       (``nvidia.rim.chain_untrusted``) and every certificate on it is valid at
       ``at`` (``nvidia.rim.expired``);
    4. the XML-DSig verifies with the signer's key: ECDSA-SHA384 over SignedInfo,
       one SHA-384 reference with ``URI=""`` (``nvidia.rim.signature_invalid``);
    5. only then the tag id, versions, product and measurement entries are read
       from the signed data (``nvidia.rim.schema`` if they are not as NVIDIA
       lays them out).

    ``at`` is explicit because NVIDIA's published RIMs outlive their signing
    certificates; pass the current time unless re-checking historical evidence.
    """
    done: list[str] = []
    root = parse_rim_xml(xml_bytes, done)
    ders = keyinfo_certificates(root, done)
    done.append(CHECK_PARSE)
    path = verify_signing_chain(ders, pinned_roots=pinned_roots, at=at, done=done)
    done.append(CHECK_CHAIN)
    signed = _verify_signature(xml_bytes, path.leaf, at, done)
    done.append(CHECK_SIGNATURE)
    content = read_rim_content(signed, done)
    fields = (
        hashlib.sha256(xml_bytes).hexdigest(),
        content,
        path.leaf.subject.rfc4514_string(),
        at,
        path.not_after,
        frozenset(done),
    )
    return VerifiedRim(*fields, _seal=_Seal(fields))
