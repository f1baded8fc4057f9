"""Verified RIM signing paths and stored RIMs reused: only for the same bytes and roots, in time.

Each test warms the reuse, then changes one input (the bytes, the roots, the
time, the file on disk) and expects that input's own reason.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.vectors import vectors_dir
from verifier.evidence.nvidia import rim_cache
from verifier.evidence.nvidia.offline import rim_signing_path_for
from verifier.evidence.nvidia.rim_cache import clear_rim_cache, signing_path_cached
from verifier.evidence.nvidia.rim_store import FileRimStore, RimStoreError
from verifier.verdict import VerificationError

TESTDATA = "attestation-sdk/nv-attestation-sdk-cpp/unit-tests/testdata"
GOOD_DRIVER = f"{TESTDATA}/NV_GPU_DRIVER_GH100_550.144.03.xml"
AT = datetime(2025, 6, 1, tzinfo=UTC)
# The GOOD_DRIVER path: the L4 signer is the first to start and the first to end.
PATH_FROM = datetime(2024, 12, 30, 16, 56, 50, tzinfo=UTC)
PATH_UNTIL = datetime(2026, 12, 30, 16, 56, 50, tzinfo=UTC)
VBIOS_ID = "NV_GPU_VBIOS_1010_0200_882_96005E0001"


def _base() -> Path:
    return vectors_dir("nvidia")


def _roots() -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((_base() / "roots/verifier_RIM_root.pem").read_bytes())


def _wrong_roots() -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(
        (_base() / TESTDATA / "incorrect_rim_root.crt").read_bytes()
    )


def _xml() -> bytes:
    return (_base() / GOOD_DRIVER).read_bytes()


@pytest.fixture(autouse=True)
def _cold() -> None:
    clear_rim_cache()


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls: list[int] = []
    real: Callable[..., Any] = getattr(rim_cache, name)

    def counted(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(rim_cache, name, counted)
    return calls


def _code(call: Callable[[], object]) -> str:
    with pytest.raises(VerificationError) as caught:
        call()
    return caught.value.reason.code


def test_signing_path_is_verified_once_inside_its_validity(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch, "verify_signing_chain")
    first = signing_path_cached(_xml(), pinned_roots=_roots(), at=AT)
    assert first[-1] == _roots()[0] and len(first) == 4
    for at in (AT + timedelta(days=300), PATH_FROM, PATH_UNTIL):
        assert signing_path_cached(_xml(), pinned_roots=_roots(), at=at) is first
    assert len(calls) == 1
    assert rim_signing_path_for(_roots(), AT)(_xml()) is first


@pytest.mark.parametrize(
    "at", [PATH_FROM - timedelta(seconds=1), PATH_UNTIL + timedelta(seconds=1)]
)
def test_signing_path_outside_its_validity_is_expired_with_the_path_warm(at: datetime) -> None:
    signing_path_cached(_xml(), pinned_roots=_roots(), at=AT)
    path_for = rim_signing_path_for(_roots(), at)
    assert _code(lambda: path_for(_xml())) == "nvidia.rim.expired"


def test_signing_path_never_vouches_for_other_roots() -> None:
    signing_path_cached(_xml(), pinned_roots=_roots(), at=AT)
    assert _code(lambda: signing_path_cached(_xml(), pinned_roots=_wrong_roots(), at=AT)) == (
        "nvidia.rim.chain_untrusted"
    )


def test_signing_path_never_vouches_for_other_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    xml = _xml()
    signing_path_cached(xml, pinned_roots=_roots(), at=AT)
    calls = _counting(monkeypatch, "verify_signing_chain")
    # One base64 character of the signer certificate's serial number changed.
    at = xml.index(b"MIICmjCCAiGgAwIBAgIUXp5ZyFc3") + len(b"MIICmjCCAiGgAwIBAgIUXp5")
    tampered = xml[:at] + b"Y" + xml[at + 1 :]
    for _ in range(2):
        assert _code(lambda: signing_path_cached(tampered, pinned_roots=_roots(), at=AT)) == (
            "nvidia.rim.chain_untrusted"
        )
    # Other bytes with the same KeyInfo are verified on their own, not looked up.
    other = xml.replace(b"</SoftwareIdentity>", b"<!-- other --></SoftwareIdentity>")
    assert other != xml
    signing_path_cached(other, pinned_roots=_roots(), at=AT)
    assert len(calls) == 3


def _store(tmp_path: Path) -> tuple[FileRimStore, str, str]:
    store = FileRimStore(tmp_path / "rims", pinned_roots=_roots())
    samples = _base() / "pypi_nv-local-gpu-verifier_2.7.3/samples"
    reissued = (
        _base()
        / TESTDATA
        / "sample_rims/NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml"
    )
    first = store.import_bytes(
        (samples / "1010_0200_882_96005E0001_PROD.swidtag").read_bytes(),
        at=datetime(2024, 3, 1, tzinfo=UTC),
        rim_id=VBIOS_ID,
    )
    second = store.import_bytes(
        reissued.read_bytes(), at=datetime(2024, 6, 1, tzinfo=UTC), rim_id=VBIOS_ID
    )
    clear_rim_cache()
    return store, first.sha256, second.sha256


def test_store_reuses_verified_rims_only_inside_their_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, first, second = _store(tmp_path)
    calls = _counting(monkeypatch, "verify_rim")
    at = datetime(2024, 6, 2, tzinfo=UTC)
    warm = store.rims_for_rim_id(VBIOS_ID, at=at)
    assert {rim.sha256 for rim, _ in warm} == {first, second}
    again = store.rims_for_rim_id(VBIOS_ID, at=at + timedelta(days=1))
    assert [rim for rim, _ in again] == [rim for rim, _ in warm]
    assert len(calls) == 2, "each content verified once, then reused"
    # Before the reissued RIM's signer existed only the 2023 content verifies,
    # however warm the reuse is.
    early = store.rims_for_rim_id(VBIOS_ID, at=datetime(2023, 10, 1, tzinfo=UTC))
    assert [rim.sha256 for rim, _ in early] == [first]
    late = max(rim.valid_until for rim, _ in warm) + timedelta(seconds=1)
    assert store.rims_for_rim_id(VBIOS_ID, at=late) == ()


def test_store_reuse_never_vouches_for_other_roots_or_changed_files(tmp_path: Path) -> None:
    store, first, _ = _store(tmp_path)
    at = datetime(2024, 6, 2, tzinfo=UTC)
    assert len(store.rims_for_rim_id(VBIOS_ID, at=at)) == 2
    other = FileRimStore(tmp_path / "rims", pinned_roots=_wrong_roots())
    assert other.rims_for_rim_id(VBIOS_ID, at=at) == ()
    path = tmp_path / "rims/rims" / f"{first}.xml"
    path.write_bytes(path.read_bytes() + b"\n")
    with pytest.raises(RimStoreError):
        store.rims_for_rim_id(VBIOS_ID, at=at)
