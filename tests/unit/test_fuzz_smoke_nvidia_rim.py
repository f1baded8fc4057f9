"""Run the NVIDIA RIM fuzz property without atheris: only VerificationError may escape.

Inputs are the real RIMs, edited structurally (truncations, DTDs and entities,
extra or moved signatures, oversize) and by hypothesis, and hostile SWID content
that the harness signs under its test root so that it reaches the signed-data reader.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_nvidia_rim import SIGN_SELECTOR, fuzz_one, rim_seeds, seed_inputs, sign
from tests.mutations import edited_seed
from tests.vectors import vectors_dir
from verifier.evidence.nvidia.rim import MAX_RIM_BYTES

_SWID = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
_TCG = "https://trustedcomputinggroup.org/resource/tcg-reference-integrity-manifest-rim-information-model/"
_SHA = "http://www.w3.org/2001/04/xmlenc#sha384"


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    vectors_dir("nvidia")  # skips when the vectors are absent
    return list(rim_seeds())


def test_seeds_run(seeds: list[bytes]) -> None:
    assert len(seeds) >= 10
    for seed in seed_inputs():
        fuzz_one(seed)
    assert sign(seeds[0]) is not None


def _structural_edits(rim: bytes) -> list[bytes]:
    head, _, body = rim.partition(b">")
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
    )
    signature_start = rim.find(b"<ds:Signature")
    signature = rim[signature_start : rim.find(b"</ds:Signature>") + len(b"</ds:Signature>")]
    return [
        *(rim[:cut] for cut in range(0, len(rim), max(1, len(rim) // 40))),
        laughs + rim,
        b'<!DOCTYPE r SYSTEM "http://example.invalid/x.dtd">' + rim,
        head + b">&lol2;" + body,
        b'<?xml version="1.0" encoding="UTF-16"?>' + rim,
        b"\xef\xbb\xbf" + rim,
        rim.replace(signature, signature + signature),
        rim.replace(signature, b"").replace(
            b"</SoftwareIdentity>", signature + b"</SoftwareIdentity>"
        ),
        rim.replace(b"<ns0:Payload", signature + b"<ns0:Payload", 1),
        rim.replace(b"xml-c14n11", b"xml-exc-c14n#"),
        rim.replace(b"ecdsa-sha384", b"rsa-sha1"),
        rim.replace(b'URI=""', b'URI="#x"'),
        rim.replace(b"<ds:X509Certificate>", b"<ds:X509Certificate>!!", 1),
        rim.replace(b"<ds:X509Certificate>", b"<ds:X509Certificate>AAAA", 1),
        rim.replace(b"<ds:SignatureValue>", b"<ds:SignatureValue>AAAA"),
        rim.replace(b"<ds:DigestValue>", b"<ds:DigestValue>@"),
        rim + b"<trailing/>",
        rim + b" " * (MAX_RIM_BYTES + 1 - len(rim)),
        b"<" * 100_000,
        b"<a>" * 10_000,
    ]


def test_structural_edits(seeds: list[bytes]) -> None:
    count = 0
    for rim in seeds[:2]:
        for data in _structural_edits(rim):
            fuzz_one(data)
            fuzz_one(SIGN_SELECTOR + data)
            count += 1
    assert count > 80


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_mutations(seeds: list[bytes], data: st.DataObject) -> None:
    fuzz_one(edited_seed(data, seeds[:6], first_offset=0))


_ATTRIBUTE = st.one_of(
    st.sampled_from(["0", "1", "4", "48", "True", "False", "", " ", "-1", "00", "1e3", "99999"]),
    st.text(max_size=8),
)


@st.composite
def _resource(draw: st.DrawFn) -> str:
    attributes = {
        name: draw(_ATTRIBUTE)
        for name in ("type", "index", "active", "alternatives", "size")
        if draw(st.booleans()) or name != "type"
    }
    if draw(st.booleans()):
        attributes["type"] = "Measurement"
    text = " ".join(f'{k}="{_escape(v)}"' for k, v in attributes.items())
    hashes = draw(st.lists(st.sampled_from(["a" * 96, "0" * 95, "g" * 96, "A" * 96]), max_size=5))
    slots = draw(st.lists(st.integers(0, 17), min_size=len(hashes), max_size=len(hashes)))
    text += "".join(
        f' s:Hash{n}="{h}"' for n, h in zip(slots, hashes, strict=True) if slots.count(n) == 1
    )
    return f"<Resource {text}/>"


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    resources=st.lists(_resource(), max_size=4),
    meta=st.booleans(),
    entity=st.booleans(),
    payloads=st.integers(0, 2),
)
def test_signed_hostile_content(
    resources: list[str], meta: bool, entity: bool, payloads: int
) -> None:
    # Valid signatures over content NVIDIA never lays out: the reader must say "schema".
    parts = [
        f'<SoftwareIdentity xmlns="{_SWID}" xmlns:t="{_TCG}" xmlns:s="{_SHA}"',
        ' tagId="T" name="N" version="1">',
        '<Entity name="NVIDIA Corporation"/>' if entity else "",
        '<Meta colloquialVersion="1" product="P" t:FirmwareManufacturerId="5703"/>' if meta else "",
        *(f"<Payload>{''.join(resources)}</Payload>" for _ in range(payloads)),
        "</SoftwareIdentity>",
    ]
    fuzz_one(SIGN_SELECTOR + "".join(parts).encode())
