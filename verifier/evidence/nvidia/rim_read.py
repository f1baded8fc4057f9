"""Read the fields of a RIM's signed SWID document.

Called by :func:`verifier.evidence.nvidia.rim.verify_rim` on ``signed_xml`` only,
after the signature and chain verified; it has no use on an unverified tree.
The layout is NVIDIA's (attestation-sdk RIMs, TCG RIM information model):

    SoftwareIdentity @tagId @name @version
      Entity @name                                   (NVIDIA Corporation)
      Meta @colloquialVersion @product  rim:FirmwareManufacturer(Id)
      Payload
        Resource type="Measurement" @index @active("True"/"False")
                 @alternatives @size  sha384:Hash0 .. Hash{alternatives-1}
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from lxml import etree

from verifier.verdict import Reason, VerificationError

__all__ = ["MAX_MEASUREMENTS", "RimContent", "RimMeasurement", "read_rim_content"]

_SWID = "{http://standards.iso.org/iso/19770/-2/2015/schema.xsd}"
_TCG_RIM = (
    "{https://trustedcomputinggroup.org/resource/"
    "tcg-reference-integrity-manifest-rim-information-model/}"
)
_SHA384_NS = "{http://www.w3.org/2001/04/xmlenc#sha384}"
_SHA384_SIZE = 48
_HEX384 = re.compile(r"[0-9a-fA-F]{96}")
_DECIMAL = re.compile(r"[0-9]{1,4}")

# A GPU reports 64 SPDM blocks and an NVSwitch 31; SPDM allows at most 254.
MAX_MEASUREMENTS = 255
# NVIDIA lists at most 4 alternatives; 16 bounds the work per entry.
MAX_ALTERNATIVES = 16


@dataclass(frozen=True, slots=True)
class RimMeasurement:
    """One golden value: RIM index k corresponds to SPDM measurement block k+1.

    ``alternatives`` are the accepted SHA-384 values; an inactive entry is not
    compared at all.
    """

    index: int
    active: bool
    alternatives: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class RimContent:
    """What a verified RIM says, read from its signed data."""

    tag_id: str
    name: str
    version: str
    colloquial_version: str
    product: str
    manufacturer: str
    firmware_manufacturer_id: str
    measurements: tuple[RimMeasurement, ...]


def _fail(detail: str, done: Sequence[str]) -> NoReturn:
    raise VerificationError(Reason("nvidia.rim.schema", detail), done)


def _one(parent: etree._Element, tag: str, done: Sequence[str]) -> etree._Element:
    found = parent.findall(f"./{_SWID}{tag}")
    if len(found) != 1:
        _fail(f"expected one {tag} element, found {len(found)}", done)
    return found[0]


def _attr(element: etree._Element, name: str, done: Sequence[str]) -> str:
    value = element.get(name)
    if value is None or not value.strip():
        _fail(f"{etree.QName(element).localname} lacks {name}", done)
    return value


def _number(element: etree._Element, name: str, done: Sequence[str]) -> int:
    text = _attr(element, name, done)
    if not _DECIMAL.fullmatch(text):
        _fail(f"{name}={text!r} is not a small decimal number", done)
    return int(text)


def _measurement(resource: etree._Element, done: Sequence[str]) -> RimMeasurement:
    index = _number(resource, "index", done)
    active_text = _attr(resource, "active", done)
    if active_text not in ("True", "False"):
        _fail(f"entry {index}: active={active_text!r}", done)
    count = _number(resource, "alternatives", done)
    if not 1 <= count <= MAX_ALTERNATIVES:
        _fail(f"entry {index}: {count} alternatives", done)
    if _number(resource, "size", done) != _SHA384_SIZE:
        _fail(f"entry {index}: size is not {_SHA384_SIZE}", done)
    # Every HashN must be listed by `alternatives`: a stray Hash4 next to
    # alternatives="1" would be a golden value NVIDIA did not mean to accept.
    hash_names = sorted(k for k in resource.attrib if str(k).startswith(_SHA384_NS))
    expected = sorted(f"{_SHA384_NS}Hash{n}" for n in range(count))
    if hash_names != expected:
        _fail(f"entry {index}: hash attributes do not match alternatives={count}", done)
    values = []
    for n in range(count):
        text = _attr(resource, f"{_SHA384_NS}Hash{n}", done)
        if not _HEX384.fullmatch(text):
            _fail(f"entry {index}: Hash{n} is not 48 bytes of hex", done)
        values.append(bytes.fromhex(text))
    return RimMeasurement(index=index, active=active_text == "True", alternatives=tuple(values))


def read_rim_content(signed: etree._Element, done: Sequence[str]) -> RimContent:
    """The RIM's identity and measurement entries, or ``nvidia.rim.schema``."""
    meta = _one(signed, "Meta", done)
    entity = _one(signed, "Entity", done)
    payload = _one(signed, "Payload", done)
    resources = payload.findall(f"./{_SWID}Resource")
    if not 1 <= len(resources) <= MAX_MEASUREMENTS:
        _fail(f"{len(resources)} Resource entries", done)
    measurements: dict[int, RimMeasurement] = {}
    for resource in resources:
        if resource.get("type") != "Measurement":
            _fail(f"Resource of type {resource.get('type')!r}", done)
        entry = _measurement(resource, done)
        if entry.index in measurements:
            # Two entries for one index would let the first or the last win silently.
            _fail(f"index {entry.index} appears twice", done)
        measurements[entry.index] = entry
    return RimContent(
        tag_id=_attr(signed, "tagId", done),
        name=_attr(signed, "name", done),
        version=_attr(signed, "version", done),
        colloquial_version=_attr(meta, "colloquialVersion", done),
        product=_attr(meta, "product", done),
        manufacturer=_attr(entity, "name", done),
        firmware_manufacturer_id=_attr(meta, f"{_TCG_RIM}FirmwareManufacturerId", done),
        measurements=tuple(measurements[i] for i in sorted(measurements)),
    )
