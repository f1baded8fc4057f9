"""Reusing verified RIMs: only for the same bytes and roots, only inside the verified window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from tests.vectors import vectors_dir
from verifier.evidence.nvidia.rim_cache import verify_rim_cached
from verifier.verdict import VerificationError

TESTDATA = "attestation-sdk/nv-attestation-sdk-cpp/unit-tests/testdata"
GOOD_DRIVER = f"{TESTDATA}/NV_GPU_DRIVER_GH100_550.144.03.xml"
AT = datetime(2025, 6, 1, tzinfo=UTC)


def _base() -> Path:
    return vectors_dir("nvidia")


def _roots() -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((_base() / "roots/verifier_RIM_root.pem").read_bytes())


def _code(info: pytest.ExceptionInfo[VerificationError]) -> str:
    return info.value.reason.code


def test_reused_inside_the_window_and_checked_again_outside() -> None:
    xml = (_base() / GOOD_DRIVER).read_bytes()
    first = verify_rim_cached(xml, pinned_roots=_roots(), at=AT)
    assert verify_rim_cached(xml, pinned_roots=_roots(), at=AT + timedelta(days=1)) is first
    earlier = verify_rim_cached(xml, pinned_roots=_roots(), at=AT - timedelta(days=1))
    assert earlier is not first, "before the verified time it is verified again"
    with pytest.raises(VerificationError) as late:
        verify_rim_cached(xml, pinned_roots=_roots(), at=first.valid_until + timedelta(seconds=1))
    assert _code(late) == "nvidia.rim.expired"


def test_other_bytes_or_other_roots_are_never_served_from_the_cache() -> None:
    xml = (_base() / GOOD_DRIVER).read_bytes()
    verify_rim_cached(xml, pinned_roots=_roots(), at=AT)
    index = xml.index(b"Hash0=") + len(b'Hash0="') + 5
    edited = xml[:index] + (b"0" if xml[index : index + 1] != b"0" else b"1") + xml[index + 1 :]
    with pytest.raises(VerificationError) as changed:
        verify_rim_cached(edited, pinned_roots=_roots(), at=AT)
    assert _code(changed) == "nvidia.rim.signature_invalid"
    wrong_root = (
        _base()
        / "attestation-sdk/nv-attestation-sdk-cpp/unit-tests/testdata/incorrect_rim_root.crt"
    )
    other = x509.load_pem_x509_certificates(wrong_root.read_bytes())
    with pytest.raises(VerificationError) as untrusted:
        verify_rim_cached(xml, pinned_roots=other, at=AT)
    assert _code(untrusted) == "nvidia.rim.chain_untrusted"
