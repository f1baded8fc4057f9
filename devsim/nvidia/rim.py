"""Reference integrity manifests (RIMs) for the simulated GPUs, signed like NVIDIA's.

A RIM is an ISO SWID tag (``SoftwareIdentity``) laid out as NVIDIA's GH100 RIMs
(TCG RIM information model attributes in ``Meta``; one ``Resource`` per SPDM
block, entry k for block k+1, with SHA-384 ``HashN`` alternatives), carrying one
enveloped XML-DSig over the whole document: ECDSA-SHA384, SHA-384 digest, C14N
1.1, and the signing chain (signer, L3, CA, root) in ``KeyInfo``.
"""

from __future__ import annotations

import secrets

from lxml import etree
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.signer import XMLSigner

from devsim.nvidia.model import BLOCK_COUNT, DIGEST_SIZE, DRIVER_INDEXES, VBIOS_INDEXES, GpuModel
from devsim.nvidia.pki import TEST_ORG, RimPki

SWID_NS = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
TCG_RIM_NS = (
    "https://trustedcomputinggroup.org/resource/"
    "tcg-reference-integrity-manifest-rim-information-model/"
)
SHA384_NS = "http://www.w3.org/2001/04/xmlenc#sha384"
# NVIDIA's IANA enterprise number, which the RIM layout requires in
# FirmwareManufacturerId; the names next to it say the file is a test.
NVIDIA_PEN = "5703"


def _swid(tag: str) -> str:
    return f"{{{SWID_NS}}}{tag}"


def rim_document(model: GpuModel, *, role: str) -> etree._Element:
    """The unsigned SWID document of the ``role`` ("driver" or "vbios") RIM."""
    if role == "driver":
        version, edition, active = model.driver_version, "GPU", DRIVER_INDEXES
    elif role == "vbios":
        version, edition, active = model.vbios_rim_version, "VBIOS", VBIOS_INDEXES
    else:
        raise ValueError(f"unknown RIM role {role!r}")
    root = etree.Element(
        _swid("SoftwareIdentity"),
        nsmap={None: SWID_NS, "ns2": SHA384_NS},
        attrib={
            "corpus": "false",
            "name": model.chip,
            "patch": "false",
            "supplemental": "false",
            # NVIDIA's tag ids are 48-byte hex strings; a fresh one per fleet.
            "tagId": secrets.token_hex(DIGEST_SIZE),
            "version": "1.0",
            "tagVersion": "0",
        },
    )
    etree.SubElement(root, _swid("Entity"), name=f"{TEST_ORG}", role="softwareCreator tagCreator")
    meta = etree.SubElement(root, _swid("Meta"), nsmap={"ns1": TCG_RIM_NS})
    for name, value in (
        ("colloquialVersion", version),
        ("edition", edition),
        ("product", model.chip),
        ("revision", "r1"),
        ("PayloadType", "direct"),
    ):
        meta.set(name, value)
    for name, value in (
        ("BindingSpec", "RIMIM"),
        ("BindingSpecVersion", "1.01"),
        ("PlatformManufacturerId", NVIDIA_PEN),
        ("PlatformManufacturerStr", TEST_ORG),
        ("PlatformModel", model.chip),
        ("FirmwareManufacturer", TEST_ORG),
        ("FirmwareManufacturerId", NVIDIA_PEN),
    ):
        meta.set(f"{{{TCG_RIM_NS}}}{name}", value)
    payload = etree.SubElement(root, _swid("Payload"))
    for index in range(BLOCK_COUNT):
        values = model.golden(index)
        resource = etree.SubElement(payload, _swid("Resource"))
        resource.set("type", "Measurement")
        resource.set("index", str(index))
        resource.set("active", "True" if index in active else "False")
        resource.set("alternatives", str(len(values)))
        for n, digest in enumerate(values):
            resource.set(f"{{{SHA384_NS}}}Hash{n}", digest.hex())
        resource.set("name", f"Measurement_{index}")
        resource.set("size", str(DIGEST_SIZE))
    return root


def sign_rim(document: etree._Element, pki: RimPki) -> bytes:
    """The document with one enveloped signature by the L4 signer, serialised."""
    signer = XMLSigner(
        signature_algorithm=SignatureMethod.ECDSA_SHA384,
        digest_algorithm=DigestAlgorithm.SHA384,
        c14n_algorithm=CanonicalizationMethod.CANONICAL_XML_1_1,
    )
    signed = signer.sign(
        document,
        key=pki.signer.key,
        cert=[issued.certificate for issued in pki.chain],
    )
    return bytes(etree.tostring(signed))


def make_rim(model: GpuModel, pki: RimPki, *, role: str) -> bytes:
    return sign_rim(rim_document(model, role=role), pki)
