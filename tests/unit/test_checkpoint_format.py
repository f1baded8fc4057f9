"""The .wgc segment format and the signed manifest: round trips and one-mutation rejects."""

from __future__ import annotations

import io
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from weightgate.checkpoint import (
    CheckpointFormatError,
    Manifest,
    ManifestFile,
    ManifestSignatureError,
    decrypt_file,
    decrypt_stream,
    encrypt_stream,
    sign_manifest,
    verify_manifest,
)
from weightgate.checkpoint.format import (
    HEADER_SIZE,
    TAG_SIZE,
    ciphertext_size,
    plaintext_size_for,
)

SEG = 32
KEY = bytes(range(32))
FID = bytes(16)
OTHER_FID = b"\x01" * 16


def encrypt(data: bytes, *, seg: int = SEG, key: bytes = KEY, fid: bytes = FID) -> bytes:
    out = io.BytesIO()
    result = encrypt_stream(io.BytesIO(data), out, key, fid, segment_size=seg)
    blob = out.getvalue()
    assert result.ciphertext_size == len(blob) == ciphertext_size(len(data), seg)
    assert result.plaintext_size == len(data)
    return blob


def decrypt(
    blob: bytes, *, seg: int = SEG, key: bytes = KEY, fid: bytes = FID, size: int | None = None
) -> bytes:
    out = io.BytesIO()
    decrypt_stream(
        io.BytesIO(blob),
        out,
        key,
        fid,
        segment_size=seg,
        expected_ciphertext_size=len(blob) if size is None else size,
        label="weights/shard-0.bin",
    )
    return out.getvalue()


def segments(blob: bytes, seg: int = SEG) -> list[bytes]:
    body = blob[HEADER_SIZE:]
    step = seg + TAG_SIZE
    return [body[i : i + step] for i in range(0, len(body), step)]


def sizes(seg: int) -> st.SearchStrategy[int]:
    edges = [0, 1, seg - 1, seg, seg + 1, 2 * seg - 1, 2 * seg, 2 * seg + 1, 3 * seg]
    return st.one_of(st.sampled_from(edges), st.integers(0, 6 * seg))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), seg=st.integers(16, 64))
def test_round_trip(data: st.DataObject, seg: int) -> None:
    plaintext = secrets.token_bytes(data.draw(sizes(seg), label="size"))
    blob = encrypt(plaintext, seg=seg)
    assert decrypt(blob, seg=seg) == plaintext
    assert plaintext_size_for(len(blob), seg) == len(plaintext)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(0, 10_000), seg=st.integers(16, 200))
def test_size_functions_invert(size: int, seg: int) -> None:
    assert plaintext_size_for(ciphertext_size(size, seg), seg) == size


def test_impossible_ciphertext_sizes_rejected() -> None:
    valid = {ciphertext_size(n, SEG) for n in range(200)}
    for size in range(ciphertext_size(200, SEG)):
        if size not in valid:
            with pytest.raises(CheckpointFormatError):
                plaintext_size_for(size, SEG)


@settings(max_examples=200, deadline=None)
@given(size=sizes(SEG), data=st.data())
def test_any_flipped_byte_rejected(size: int, data: st.DataObject) -> None:
    blob = bytearray(encrypt(secrets.token_bytes(size)))
    offset = data.draw(st.integers(0, len(blob) - 1))
    blob[offset] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CheckpointFormatError):
        decrypt(bytes(blob))


def test_error_names_file_and_segment() -> None:
    blob = bytearray(encrypt(b"x" * (3 * SEG)))
    blob[HEADER_SIZE + SEG + TAG_SIZE + 3] ^= 1  # inside segment 1
    with pytest.raises(CheckpointFormatError, match=r"weights/shard-0\.bin: segment 1 ") as info:
        decrypt(bytes(blob))
    assert info.value.code == "checkpoint.segment.auth_failed"


def test_dropping_last_segment_rejected() -> None:
    blob = encrypt(b"a" * (2 * SEG + 5))
    shorter = blob[: -(5 + TAG_SIZE)]
    # Against the signed size: truncated. Against its own size: a file cannot end on a
    # full segment (the final one is always short), so the size alone gives it away.
    with pytest.raises(CheckpointFormatError, match="truncated"):
        decrypt(shorter, size=len(blob))
    with pytest.raises(CheckpointFormatError) as info:
        decrypt(shorter)
    assert info.value.code == "checkpoint.size_invalid"
    # Dropping the final segment *and* passing segment 1 off as a short final one (cut to
    # a valid size) fails authentication: segment 1 was sealed with last=0.
    cut = blob[: HEADER_SIZE + (SEG + TAG_SIZE) + TAG_SIZE + 5]
    with pytest.raises(CheckpointFormatError, match="segment 1 does not authenticate"):
        decrypt(cut)


def test_dropping_empty_final_segment_rejected() -> None:
    blob = encrypt(b"a" * (2 * SEG))  # exact multiple: an empty final segment follows
    with pytest.raises(CheckpointFormatError):
        decrypt(blob[:-TAG_SIZE])


def test_dropping_middle_segment_rejected() -> None:
    blob = encrypt(b"m" * (3 * SEG + 1))
    parts = segments(blob)
    with pytest.raises(CheckpointFormatError, match="segment 1 does not authenticate"):
        decrypt(blob[:HEADER_SIZE] + parts[0] + b"".join(parts[2:]))


def test_reordered_segments_rejected() -> None:
    blob = encrypt(secrets.token_bytes(3 * SEG + 7))
    parts = segments(blob)
    parts[0], parts[1] = parts[1], parts[0]
    with pytest.raises(CheckpointFormatError, match="segment 0 does not authenticate"):
        decrypt(blob[:HEADER_SIZE] + b"".join(parts))


def test_segment_from_another_file_rejected_even_under_the_same_key() -> None:
    ours = encrypt(b"o" * (2 * SEG + 1))
    theirs = encrypt(b"t" * (2 * SEG + 1), fid=OTHER_FID)  # same KEY, other file id
    ours_parts, their_parts = segments(ours), segments(theirs)
    spliced = ours[:HEADER_SIZE] + ours_parts[0] + their_parts[1] + ours_parts[2]
    with pytest.raises(CheckpointFormatError, match="segment 1 does not authenticate"):
        decrypt(spliced)
    # Their whole file (header included) is not ours either.
    with pytest.raises(CheckpointFormatError, match="file id"):
        decrypt(theirs)


def test_appended_segment_rejected() -> None:
    blob = encrypt(b"p" * (SEG + 3))
    extra = segments(blob)[0]
    with pytest.raises(CheckpointFormatError, match="data after the final segment"):
        decrypt(blob + extra, size=len(blob))
    with pytest.raises(CheckpointFormatError):
        decrypt(blob + extra)


def test_wrong_key_or_segment_size_rejected() -> None:
    blob = encrypt(b"k" * 40)
    with pytest.raises(CheckpointFormatError, match="segment 0"):
        decrypt(blob, key=bytes(32))
    with pytest.raises(CheckpointFormatError):
        decrypt(blob, seg=SEG + 1, size=ciphertext_size(40, SEG + 1))


# --- manifest ----------------------------------------------------------------------------


def entry(path: str = "model/shard-0.bin", size: int = 100, fid: bytes = FID) -> ManifestFile:
    return ManifestFile(
        path=path,
        file_id=fid,
        plaintext_size=size,
        ciphertext_size=ciphertext_size(size, 4096),
        plaintext_sha256=b"\x11" * 32,
        ciphertext_sha256=b"\x22" * 32,
    )


def manifest(*files: ManifestFile) -> Manifest:
    return Manifest(
        model_name="frontier-x",
        model_version="2025.06-rc1",
        risk_tier="tier-3",
        segment_size=4096,
        files=files or (entry(),),
    )


def document() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(manifest().to_bytes())
    return result


def dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_manifest_round_trip_and_digest() -> None:
    m = manifest(entry("a", 0), entry("b/ü.bin", 4096, OTHER_FID))
    data = m.to_bytes()
    assert Manifest.from_bytes(data) == m
    assert b" " not in data and "ü".encode() in data
    assert len(m.digest()) == 32


@pytest.mark.parametrize(
    "path",
    [
        "../etc/passwd",
        "a/../../b",
        "/etc/passwd",
        "a/./b",
        "./a",
        "a//b",
        "a/",
        "..",
        ".",
        "a\x00b",
        "a\nb",
        "a\\..\\b",
        "cafe\u0301",  # not NFC
        "x" * 256,
        "a/" * 600,
        "",
    ],
)
def test_manifest_rejects_unsafe_paths(path: str) -> None:
    doc = document()
    doc["files"][0]["path"] = path
    with pytest.raises(CheckpointFormatError) as info:
        Manifest.from_bytes(dump(doc))
    assert info.value.code == "checkpoint.manifest.path_invalid"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda d: d.update(format_version=2), "checkpoint.manifest.version"),
        (lambda d: d.update(segment_size=True), "checkpoint.manifest.malformed"),
        (lambda d: d.update(extra=1), "checkpoint.manifest.malformed"),
        (lambda d: d.update(model_name="a b"), "checkpoint.manifest.malformed"),
        (lambda d: d.update(files=[]), "checkpoint.manifest.malformed"),
        (lambda d: d["files"][0].update(ciphertext_size=1), "checkpoint.manifest.size_mismatch"),
        (lambda d: d["files"][0].update(plaintext_size=-1), "checkpoint.manifest.malformed"),
        (lambda d: d["files"][0].update(file_id="AB" * 16), "checkpoint.manifest.malformed"),
        (lambda d: d["files"][0].pop("plaintext_sha256"), "checkpoint.manifest.malformed"),
        (lambda d: d["files"].append(d["files"][0]), "checkpoint.manifest.malformed"),
    ],
)
def test_manifest_one_mutation_rejected(change: Any, code: str) -> None:
    doc = document()
    change(doc)
    with pytest.raises(CheckpointFormatError) as info:
        Manifest.from_bytes(dump(doc))
    assert info.value.code == code


def test_manifest_rejects_non_canonical_bytes() -> None:
    data = manifest().to_bytes()
    for variant in (
        json.dumps(json.loads(data)).encode(),  # whitespace
        data + b"\n",
        data.replace(b'"risk_tier"', b'"risk_tier":"x","risk_tier"'),  # duplicate key
        data.replace(b"frontier-x", b"frontier\\u002dx"),  # escape where none is needed
    ):
        with pytest.raises(CheckpointFormatError):
            Manifest.from_bytes(variant)


def test_manifest_rejects_file_that_is_also_a_directory() -> None:
    with pytest.raises(CheckpointFormatError, match="both a file and a directory"):
        manifest(entry("a", fid=FID), entry("a/b", fid=OTHER_FID))


def test_signature_verifies_then_parses() -> None:
    key = Ed25519PrivateKey.generate()
    data = manifest().to_bytes()
    signature = sign_manifest(data, key.sign)
    assert verify_manifest(data, signature, key.public_key()) == manifest()


def test_manipulated_manifest_fails_signature() -> None:
    key = Ed25519PrivateKey.generate()
    data = manifest().to_bytes()
    signature = sign_manifest(data, key.sign)
    forged = data.replace(b'"tier-3"', b'"tier-1"')
    with pytest.raises(ManifestSignatureError):
        verify_manifest(forged, signature, key.public_key())
    with pytest.raises(ManifestSignatureError):
        verify_manifest(data, signature, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(ManifestSignatureError):
        verify_manifest(data, signature[:-1], key.public_key())
    # The bare bytes (no domain prefix) signed by the same key are not a manifest signature.
    with pytest.raises(ManifestSignatureError):
        verify_manifest(data, key.sign(data), key.public_key())


def test_garbage_is_never_parsed_before_the_signature() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(ManifestSignatureError):
        verify_manifest(b"\xff not json", bytes(64), key.public_key())


# --- decrypting to disk ------------------------------------------------------------------


def _encrypted_file(tmp_path: Path, plaintext: bytes) -> tuple[Path, ManifestFile]:
    src = tmp_path / "x.wgc"
    with src.open("wb") as out:
        result = encrypt_stream(io.BytesIO(plaintext), out, KEY, FID, segment_size=SEG)
    return src, ManifestFile(
        path="x.bin",
        file_id=FID,
        plaintext_size=result.plaintext_size,
        ciphertext_size=result.ciphertext_size,
        plaintext_sha256=result.plaintext_sha256,
        ciphertext_sha256=result.ciphertext_sha256,
    )


def test_decrypt_file_round_trip(tmp_path: Path) -> None:
    plaintext = secrets.token_bytes(5 * SEG + 3)
    src, item = _encrypted_file(tmp_path, plaintext)
    (tmp_path / "out").mkdir()
    decrypt_file(src, tmp_path / "out" / "x.bin", KEY, item, segment_size=SEG)
    assert (tmp_path / "out" / "x.bin").read_bytes() == plaintext
    assert (tmp_path / "out" / "x.bin").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("where", ["last_segment", "first_segment", "digest"])
def test_failed_decrypt_leaves_no_plaintext(tmp_path: Path, where: str) -> None:
    plaintext = secrets.token_bytes(5 * SEG + 3)
    src, item = _encrypted_file(tmp_path, plaintext)
    blob = bytearray(src.read_bytes())
    if where == "last_segment":
        blob[-1] ^= 1  # the first five segments decrypt and are written before this fails
    elif where == "first_segment":
        blob[HEADER_SIZE] ^= 1
    else:
        # Authentic ciphertext of other plaintext (someone holding the key): only the
        # manifest's plaintext digest catches it.
        item = ManifestFile(**{**item.__dict__, "plaintext_sha256": b"\x00" * 32})
    src.write_bytes(bytes(blob))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CheckpointFormatError):
        decrypt_file(src, out / "x.bin", KEY, item, segment_size=SEG)
    assert list(out.iterdir()) == []
