"""encrypt_checkpoint end to end: a checkpoint directory through encryption, signature,
key wrapping, unwrapping and decryption, bit-exact; memory flat in the file size."""

from __future__ import annotations

import io
import itertools
import os
import secrets
import tracemalloc
from pathlib import Path

import pytest

from verifier.keystore import FileKeyStore, KeyStoreError
from verifier.models.encrypt import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    CheckpointSourceError,
    EncryptedCheckpoint,
    data_key_context,
    encrypt_checkpoint,
)
from verifier.models.progress import ProgressReporter, format_bytes
from weightgate.checkpoint import (
    CheckpointFormatError,
    Manifest,
    decrypt_checkpoint,
    verify_manifest,
)

SEG = 4096


@pytest.fixture
def store(tmp_path: Path) -> FileKeyStore:
    return FileKeyStore.create(tmp_path / "keystore")


def make_checkpoint(root: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"hidden": 4096}',
        "empty.bin": b"",
        "model-00001-of-00002.safetensors": secrets.token_bytes(3 * SEG),  # exact multiple
        "model-00002-of-00002.safetensors": secrets.token_bytes(5 * SEG + 17),
        "tokenizer/vocab-ü.txt": "tökens\n".encode() * 50,
        "tokenizer/deep/nested/merges.txt": secrets.token_bytes(SEG - 1),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    # A symlink inside the checkpoint is followed and stored under the link's path.
    (root / "alias.json").symlink_to("config.json")
    files["alias.json"] = files["config.json"]
    return files


def encrypt(src: Path, out: Path, store: FileKeyStore, **kwargs: object) -> EncryptedCheckpoint:
    return encrypt_checkpoint(
        src,
        out,
        name="frontier-x",
        version="2025.06",
        risk_tier="tier-3",
        keystore=store,
        segment_size=SEG,
        **kwargs,  # type: ignore[arg-type]
    )


def unwrap_all(store: FileKeyStore, result: EncryptedCheckpoint) -> dict[bytes, bytes]:
    keys = {}
    for id_hex, wrapped in result.wrapped_keys.items():
        file_id = bytes.fromhex(id_hex)
        context = data_key_context(result.manifest_digest, file_id)
        keys[file_id] = store.unwrap_data_key(wrapped, context=context)
    return keys


def test_checkpoint_round_trips_bit_exact(tmp_path: Path, store: FileKeyStore) -> None:
    src, out, plain = tmp_path / "src", tmp_path / "enc", tmp_path / "plain"
    src.mkdir()
    files = make_checkpoint(src)
    seen: list[tuple[int, int]] = []
    result = encrypt(src, out, store, progress=lambda done, total: seen.append((done, total)))

    # What a host receives: the directory and the pinned verifier public key.
    manifest = verify_manifest(
        (out / MANIFEST_NAME).read_bytes(),
        (out / SIGNATURE_NAME).read_bytes(),
        store.signing_public_key(),
    )
    assert manifest.digest() == result.manifest_digest
    assert [f.path for f in manifest.files] == sorted(files)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST_NAME, SIGNATURE_NAME, *(f.ciphertext_name for f in manifest.files)]
    )
    assert seen[-1] == (sum(map(len, files.values())),) * 2
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen))

    decrypt_checkpoint(manifest, out, plain, unwrap_all(store, result))
    for name, data in files.items():
        assert (plain / name).read_bytes() == data, name
    # Ciphertexts do not contain the plaintext.
    big = files["model-00002-of-00002.safetensors"]
    blob = (out / manifest.files[3].ciphertext_name).read_bytes()
    assert big[:64] not in blob


def test_wrapped_key_does_not_move_to_another_file(tmp_path: Path, store: FileKeyStore) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_checkpoint(src)
    result = encrypt(src, tmp_path / "enc", store)
    ids = [bytes.fromhex(i) for i in result.wrapped_keys]
    with pytest.raises(KeyStoreError):
        store.unwrap_data_key(
            result.wrapped_keys[ids[0].hex()],
            context=data_key_context(result.manifest_digest, ids[1]),
        )
    with pytest.raises(KeyStoreError):
        store.unwrap_data_key(
            result.wrapped_keys[ids[0].hex()], context=data_key_context(bytes(32), ids[0])
        )


def test_swapped_ciphertexts_fail(tmp_path: Path, store: FileKeyStore) -> None:
    src, out = tmp_path / "src", tmp_path / "enc"
    src.mkdir()
    (src / "a").write_bytes(b"a" * 100)
    (src / "b").write_bytes(b"b" * 100)
    result = encrypt(src, out, store)
    m = result.manifest
    first, second = (out / f.ciphertext_name for f in m.files)
    data_a, data_b = first.read_bytes(), second.read_bytes()
    first.write_bytes(data_b)
    second.write_bytes(data_a)
    with pytest.raises(CheckpointFormatError):
        decrypt_checkpoint(m, out, tmp_path / "plain", unwrap_all(store, result))
    assert not any(p.is_file() for p in (tmp_path / "plain").rglob("*"))


def test_refusals(tmp_path: Path, store: FileKeyStore) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w")
    outside = tmp_path / "secret"
    outside.write_bytes(b"s")
    (src / "escape").symlink_to(outside)
    with pytest.raises(CheckpointSourceError, match="outside"):
        encrypt(src, tmp_path / "o1", store)
    (src / "escape").unlink()
    (src / "loop").symlink_to(src, target_is_directory=True)
    with pytest.raises(CheckpointSourceError, match="symlinked directory"):
        encrypt(src, tmp_path / "o2", store)
    (src / "loop").unlink()
    os.mkfifo(src / "fifo")
    with pytest.raises(CheckpointSourceError, match="not a regular file"):
        encrypt(src, tmp_path / "o3", store)
    (src / "fifo").unlink()
    with pytest.raises(CheckpointSourceError, match="inside the source"):
        encrypt(src, src / "enc", store)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_bytes(b"")
    with pytest.raises(CheckpointSourceError, match="not empty"):
        encrypt(src, tmp_path / "busy", store)
    with pytest.raises(CheckpointFormatError):
        encrypt_checkpoint(
            src, tmp_path / "o4", name="bad name", version="1", risk_tier="t", keystore=store
        )
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3", "o4"))


def test_failed_encryption_removes_partial_output(tmp_path: Path, store: FileKeyStore) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a" * 10_000)
    (src / "b").write_bytes(b"b" * 10_000)

    def explode(done: int, total: int) -> None:
        if done > 15_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encrypt(src, tmp_path / "enc", store, progress=explode)
    assert not (tmp_path / "enc").exists()


def test_memory_is_flat_in_file_size(tmp_path: Path, store: FileKeyStore) -> None:
    segment = 1 << 20
    src = tmp_path / "src"
    src.mkdir()
    with (src / "big.bin").open("wb") as handle:
        block = os.urandom(segment)
        for i in range(64):
            handle.write(block[i:] + block[:i])
    tracemalloc.start()
    try:
        result = encrypt_checkpoint(
            src,
            tmp_path / "enc",
            name="m",
            version="1",
            risk_tier="t",
            keystore=store,
            segment_size=segment,
        )
        _, encrypt_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        decrypt_checkpoint(
            result.manifest, tmp_path / "enc", tmp_path / "plain", unwrap_all(store, result)
        )
        _, decrypt_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Two segment buffers plus bookkeeping, for a file 64 segments long.
    assert encrypt_peak < 3 * segment, encrypt_peak
    assert decrypt_peak < 3 * segment, decrypt_peak
    assert (tmp_path / "plain" / "big.bin").stat().st_size == 64 * segment


def test_progress_reporter_lines() -> None:
    now = [0.0]
    tty, log = io.StringIO(), io.StringIO()
    live = ProgressReporter("encrypt", stream=tty, clock=lambda: now[0], interactive=True)
    quiet = ProgressReporter("encrypt", stream=log, clock=lambda: now[0], interactive=False)
    for step in range(1, 101):
        now[0] = step * 0.01  # 100 calls over one second: a few redraws, not 100
        live(step << 20, 100 << 20)
        quiet(step << 20, 100 << 20)
    live.finish()
    quiet.finish()
    assert 3 <= tty.getvalue().count("\r") <= 8
    assert log.getvalue().count("\n") == 1
    assert "100.0 MiB / 100.0 MiB" in log.getvalue() and "100.0%" in log.getvalue()
    assert format_bytes(0) == "0 B" and format_bytes(1536) == "1.5 KiB"


def test_manifest_of_result_parses(tmp_path: Path, store: FileKeyStore) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "only").write_bytes(b"")
    result = encrypt(src, tmp_path / "enc", store)
    assert isinstance(result.manifest, Manifest)
    assert "wrapped_keys" not in repr(result)
