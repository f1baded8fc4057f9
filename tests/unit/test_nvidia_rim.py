"""NVIDIA RIMs: verify first, then read; every shared RIM vector against expected_results.json."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from lxml import etree

from tests.vectors import vectors_dir
from verifier.evidence.nvidia.rim import VerifiedRim, verify_rim
from verifier.evidence.nvidia.rim_chain import NVIDIA_RIM_ROOT_SHA256
from verifier.evidence.nvidia.rim_store import FileRimStore
from verifier.verdict import VerificationError

TESTDATA = "attestation-sdk/nv-attestation-sdk-cpp/unit-tests/testdata"
GOOD_DRIVER = f"{TESTDATA}/NV_GPU_DRIVER_GH100_550.144.03.xml"
ROOT_SUBJECT = "CN=NVIDIA CoRIM signing Root CA,O=NVIDIA,C=US"
# Inside every window of the 550.144.03 chain (L4 2024-12-30..2026-12-30).
AT_GOOD = datetime(2025, 6, 1, tzinfo=UTC)


def _base() -> Path:
    return vectors_dir("nvidia")


def _roots() -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((_base() / "roots/verifier_RIM_root.pem").read_bytes())


def _rims() -> list[dict[str, Any]]:
    doc = json.loads((_base() / "expected_results.json").read_text())
    return list(doc["rims"])


def _rim_params() -> list[Any]:
    try:
        return [pytest.param(r, id=Path(r["file"]).name) for r in _rims()]
    except pytest.skip.Exception:
        return []


def _window(rim: dict[str, Any]) -> tuple[datetime, datetime]:
    certs = rim["keyinfo_certs"]
    return (
        max(datetime.fromisoformat(c["not_before"]) for c in certs),
        min(datetime.fromisoformat(c["not_after"]) for c in certs),
    )


def _expected_reason(rim: dict[str, Any], at: datetime) -> str | None:
    """What verify_rim must say at ``at``, derived from the independent analysis.

    Order of our checks: chain to the pinned root, validity of the path, signature.
    """
    if rim["keyinfo_certs"][-1]["subject"] != ROOT_SUBJECT:
        return "nvidia.rim.chain_untrusted"
    start, end = _window(rim)
    if not start <= at <= end:
        return "nvidia.rim.expired"
    if rim["xmldsig_valid_with_keyinfo_leaf_key"] != "ok":
        return "nvidia.rim.signature_invalid"
    return None


def _check(xml: bytes, at: datetime) -> str | VerifiedRim:
    try:
        return verify_rim(xml, pinned_roots=_roots(), at=at)
    except VerificationError as exc:
        return exc.reason.code


def _reason(xml: bytes, at: datetime = AT_GOOD) -> str:
    result = _check(xml, at)
    assert isinstance(result, str), "expected a failure"
    return result


def _good() -> bytes:
    return (_base() / GOOD_DRIVER).read_bytes()


def test_pinned_root_fingerprint() -> None:
    (root,) = _roots()
    assert root.fingerprint(hashes.SHA256()).hex() == NVIDIA_RIM_ROOT_SHA256


@pytest.mark.parametrize("rim", _rim_params())
def test_vector_inside_validity(rim: dict[str, Any]) -> None:
    start, end = _window(rim)
    at = start + (end - start) / 2 if start < end else start
    xml = (_base() / rim["file"]).read_bytes()
    expected = _expected_reason(rim, at)
    result = _check(xml, at)
    if expected is not None:
        assert result == expected
        return
    assert isinstance(result, VerifiedRim)
    content = result.content
    assert content.tag_id == rim["tagId"]
    assert content.name == rim["name"]
    assert content.colloquial_version == rim["colloquialVersion"]
    assert content.firmware_manufacturer_id == rim["FirmwareManufacturerId"]
    assert [m.index for m in result.measurements if m.active] == rim["active_indexes"]
    multiple = {str(m.index): len(m.alternatives) for m in result.measurements}
    assert {k: multiple[k] for k in rim["indexes_with_multiple_alternatives"]} == rim[
        "indexes_with_multiple_alternatives"
    ]
    assert all(
        len(m.alternatives) == 1
        for m in result.measurements
        if str(m.index) not in rim["indexes_with_multiple_alternatives"]
    )
    assert all(len(h) == 48 for m in result.measurements for h in m.alternatives)


@pytest.mark.parametrize("rim", _rim_params())
def test_vector_at_analysis_clock(rim: dict[str, Any]) -> None:
    at = datetime(2026, 11, 29, tzinfo=UTC)
    result = _check((_base() / rim["file"]).read_bytes(), at)
    assert result == (_expected_reason(rim, at) or result)
    analysis_ok = rim["xmldsig_plus_chain_to_pinned_rim_root_at_2026-11-29"] == "ok"
    assert isinstance(result, VerifiedRim) == analysis_ok


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("incorrect_signature_driver_rim.xml", "nvidia.rim.signature_invalid"),
        ("incorrect_cert_chain_driver_rim.xml", "nvidia.rim.chain_untrusted"),
    ],
)
def test_incorrect_rims(name: str, reason: str) -> None:
    xml = (_base() / TESTDATA / name).read_bytes()
    assert _reason(xml, datetime(2025, 3, 1, tzinfo=UTC)) == reason


def test_incorrect_root_is_not_a_trust_anchor() -> None:
    wrong = x509.load_pem_x509_certificates(
        (_base() / TESTDATA / "incorrect_rim_root.crt").read_bytes()
    )
    with pytest.raises(VerificationError) as info:
        verify_rim(_good(), pinned_roots=wrong, at=AT_GOOD)
    assert info.value.reason.code == "nvidia.rim.chain_untrusted"


def test_good_driver_rim_values() -> None:
    rim = verify_rim(_good(), pinned_roots=_roots(), at=AT_GOOD)
    assert rim.tag_id.startswith("8aa5c875")
    assert (rim.content.product, rim.content.version) == ("GH100", "1.0")
    assert rim.content.manufacturer == "NVIDIA Corporation"
    entry7 = rim.measurements[7]
    assert (entry7.index, entry7.active) == (7, True)
    assert entry7.alternatives == (
        bytes.fromhex(
            "4a5e4b3d501fe31f91bd8b6f2921b58437704a504dbedba971440e840c938c80"
            "5612689ae3ac04b1009515a179063d49"
        ),
    )
    assert {"nvidia.rim.parse", "nvidia.rim.chain", "nvidia.rim.signature"} <= rim.checks_run


@pytest.mark.parametrize("at", [datetime(2024, 1, 1, tzinfo=UTC), datetime(2027, 6, 1, tzinfo=UTC)])
def test_outside_validity_is_expired(at: datetime) -> None:
    assert _reason(_good(), at) == "nvidia.rim.expired"


def test_one_changed_measurement_fails_signature() -> None:
    old = b"4a5e4b3d501fe31f91bd8b6f2921b58437704a504dbedba971440e840c938c80"
    assert _good().count(old) == 1
    assert _reason(_good().replace(old, old[:-1] + b"1")) == "nvidia.rim.signature_invalid"


def _unsigned_copy(good: bytes, forged_hash: str) -> etree._Element:
    copy = etree.fromstring(good)
    for signature in copy.findall("{http://www.w3.org/2000/09/xmldsig#}Signature"):
        copy.remove(signature)
    for resource in copy.iter("{*}Resource"):
        for name in resource.attrib:
            if str(name).endswith("}Hash0"):
                resource.set(name, forged_hash)
    return copy


def test_signature_wrapping_never_returns_unsigned_values() -> None:
    good = _good()
    forged_hash = "ab" * 48
    variants = []
    for signed_first in (True, False):
        wrapper = etree.Element("Wrapper")
        parts = [etree.fromstring(good), _unsigned_copy(good, forged_hash)]
        wrapper.extend(parts if signed_first else parts[::-1])
        variants.append(etree.tostring(wrapper))
    # The unsigned copy as root, the signed element (with its signature) moved inside it.
    outer = _unsigned_copy(good, forged_hash)
    outer.append(etree.fromstring(good))
    variants.append(etree.tostring(outer))
    # The signed root kept, an unsigned Payload with other values appended inside it.
    variants.append(
        good.replace(
            b"</SoftwareIdentity>",
            b'<ns0:Payload><ns0:Resource type="Measurement" index="99" active="True" '
            b'alternatives="1" ns2:Hash0="' + forged_hash.encode() + b'" name="x" size="48"/>'
            b"</ns0:Payload></SoftwareIdentity>",
        )
    )
    for wrapped in variants:
        result = _check(wrapped, AT_GOOD)
        if isinstance(result, VerifiedRim):
            hashes_read = {h.hex() for m in result.measurements for h in m.alternatives}
            assert forged_hash not in hashes_read
        else:
            assert result in {"nvidia.rim.signature_invalid", "nvidia.rim.schema"}


def test_second_signature_is_refused() -> None:
    good = _good()
    start = good.index(b"<ds:Signature")
    signature = good[start : good.index(b"</ds:Signature>") + len(b"</ds:Signature>")]
    doubled = good.replace(b"</SoftwareIdentity>", signature + b"</SoftwareIdentity>")
    assert _reason(doubled) == "nvidia.rim.signature_invalid"


def test_entities_and_dtd_are_not_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    dtd = (
        f'<!DOCTYPE SoftwareIdentity [<!ENTITY x SYSTEM "file://{secret}"><!ENTITY y "expanded">]>'
    )
    good = _good()
    with_entity = dtd.encode() + good.replace(b'name="GH100"', b'name="&x;&y;"', 1)
    assert _reason(with_entity) == "nvidia.rim.malformed"
    assert _reason(b"<?xml version='1.0'?>" + dtd.encode() + good) == "nvidia.rim.malformed"


def test_malformed_and_oversized() -> None:
    assert _reason(b"<not xml") == "nvidia.rim.malformed"
    assert _reason(b" " * (1 << 20) + _good()) == "nvidia.rim.malformed"
    assert _reason(b"<root/>") == "nvidia.rim.schema"


def test_verified_rim_cannot_be_forged() -> None:
    rim = verify_rim(_good(), pinned_roots=_roots(), at=AT_GOOD)
    with pytest.raises(TypeError):
        dataclasses.replace(rim, content=dataclasses.replace(rim.content, tag_id="other"))
    with pytest.raises(TypeError):
        VerifiedRim(rim.sha256, rim.content, "", AT_GOOD, AT_GOOD, frozenset())


# --- the store ----------------------------------------------------------------------


def test_store_keeps_two_contents_under_one_id(tmp_path: Path) -> None:
    store = FileRimStore(tmp_path / "rims", pinned_roots=_roots())
    samples = _base() / "pypi_nv-local-gpu-verifier_2.7.3/samples"
    reissued = (
        _base()
        / TESTDATA
        / "sample_rims/NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml"
    )
    at = datetime(2024, 3, 1, tzinfo=UTC)
    first = store.import_rim(samples / "1010_0200_882_96005E0001_PROD.swidtag", at=at)
    second = store.import_rim(reissued, at=datetime(2024, 6, 1, tzinfo=UTC))
    assert first.tag_id == second.tag_id and first.sha256 != second.sha256
    assert store.digests_for(first.tag_id) == {first.sha256, second.sha256}
    loaded = store.load(first.sha256, at=at)
    assert loaded.measurements == first.measurements
    both = {r.sha256 for r in store.rims_for(first.tag_id, at=at)}
    assert both == {first.sha256, second.sha256}
    # Before the reissued RIM's signer existed, only the 2023 content verifies.
    early = store.rims_for(first.tag_id, at=datetime(2023, 10, 1, tzinfo=UTC))
    assert [r.sha256 for r in early] == [first.sha256]
    assert stat.S_IMODE(os.stat(tmp_path / "rims").st_mode) == 0o700
    assert sorted(p.name for p in (tmp_path / "rims/rims").iterdir()) == sorted(
        [f"{first.sha256}.xml", f"{second.sha256}.xml"]
    )


def test_store_refuses_unverified_file(tmp_path: Path) -> None:
    store = FileRimStore(tmp_path / "rims", pinned_roots=_roots())
    with pytest.raises(VerificationError) as info:
        store.import_rim(_base() / TESTDATA / "incorrect_signature_driver_rim.xml", at=AT_GOOD)
    assert info.value.reason.code == "nvidia.rim.signature_invalid"
    assert list((tmp_path / "rims/rims").iterdir()) == []
    assert (
        store.digests_for(
            "8aa5c875798aecff29b7e3ca2e564ccbda4d47c37276f44f927ffc2ca17d84b1ec3198c69854bbe1556270c1feb493cd"
        )
        == frozenset()
    )
