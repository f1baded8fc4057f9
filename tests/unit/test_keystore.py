"""FileKeyStore: strict file permissions, wrap/unwrap bound to context, no key in reprs."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from verifier.keystore import WRAPPED_KEY_SIZE, FileKeyStore, KeyStore, KeyStoreError

DATA_KEY = bytes(range(32))
CONTEXT = b"digest-a" + b"\x00" * 16


@pytest.fixture
def store(tmp_path: Path) -> FileKeyStore:
    return FileKeyStore.create(tmp_path / "keys")


def _secrets(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    return data[6:38], data[38:70]  # KEK, Ed25519 seed (see the file format)


def test_create_writes_0600_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    old_umask = os.umask(0)  # a permissive umask must not loosen the file
    try:
        FileKeyStore.create(path)
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o600
    before = path.read_bytes()
    with pytest.raises(KeyStoreError, match="already exists"):
        FileKeyStore.create(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]  # no temp file left


def test_open_round_trips_keys(store: FileKeyStore) -> None:
    wrapped = store.wrap_data_key(DATA_KEY, context=CONTEXT)
    reopened = FileKeyStore.open(store.path)
    assert reopened.unwrap_data_key(wrapped, context=CONTEXT) == DATA_KEY
    signature = reopened.sign(b"message")
    store.signing_public_key().verify(signature, b"message")
    assert isinstance(reopened.signing_public_key(), Ed25519PublicKey)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o601, 0o620, 0o644])
def test_open_refuses_group_or_world_access(store: FileKeyStore, mode: int) -> None:
    store.path.chmod(mode)
    with pytest.raises(KeyStoreError, match="group or others"):
        FileKeyStore.open(store.path)


def test_open_refuses_symlink(store: FileKeyStore, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(store.path)
    with pytest.raises(KeyStoreError, match="cannot open"):
        FileKeyStore.open(link)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_open_refuses_file_of_another_user(store: FileKeyStore) -> None:
    os.chown(store.path, 12345, -1)
    with pytest.raises(KeyStoreError, match="owned by uid 12345"):
        FileKeyStore.open(store.path)


def test_open_refuses_corrupt_or_foreign_file(store: FileKeyStore, tmp_path: Path) -> None:
    data = bytearray(store.path.read_bytes())
    for name, content in (
        ("flipped", bytes(data[:10]) + bytes([data[10] ^ 1]) + bytes(data[11:])),
        ("short", bytes(data[:-1])),
        ("long", bytes(data) + b"\x00"),
        ("magic", b"XXXX" + bytes(data[4:])),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        path.chmod(0o600)
        with pytest.raises(KeyStoreError):
            FileKeyStore.open(path)


def test_open_refuses_directory(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(KeyStoreError):
        FileKeyStore.open(tmp_path / "dir")


def test_wrap_is_randomized_and_bound_to_context(store: FileKeyStore, tmp_path: Path) -> None:
    first = store.wrap_data_key(DATA_KEY, context=CONTEXT)
    second = store.wrap_data_key(DATA_KEY, context=CONTEXT)
    assert first != second and len(first) == WRAPPED_KEY_SIZE
    assert DATA_KEY not in first
    assert store.unwrap_data_key(second, context=CONTEXT) == DATA_KEY
    with pytest.raises(KeyStoreError, match="does not authenticate"):
        store.unwrap_data_key(first, context=CONTEXT[:-1] + b"\x01")  # another file
    other = FileKeyStore.create(tmp_path / "other")
    with pytest.raises(KeyStoreError, match="does not authenticate"):
        other.unwrap_data_key(first, context=CONTEXT)
    for index in range(len(first)):
        tampered = bytearray(first)
        tampered[index] ^= 0x40
        with pytest.raises(KeyStoreError):
            store.unwrap_data_key(bytes(tampered), context=CONTEXT)
    with pytest.raises(KeyStoreError):
        store.unwrap_data_key(first[:-1], context=CONTEXT)


def test_wrap_input_checks(store: FileKeyStore) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        store.wrap_data_key(b"short", context=CONTEXT)
    with pytest.raises(ValueError, match="context"):
        store.wrap_data_key(DATA_KEY, context=b"")


def test_no_key_material_in_repr_errors_or_copies(store: FileKeyStore) -> None:
    kek, seed = _secrets(store.path)
    shown = repr(store) + str(store)
    for secret in (kek, seed):
        assert secret.hex() not in shown and secret.hex().upper() not in shown
        assert repr(secret) not in shown
    assert store.public_key_fingerprint()[:16] in shown
    with pytest.raises(KeyStoreError) as info:
        store.unwrap_data_key(b"\x01" + bytes(WRAPPED_KEY_SIZE - 1), context=CONTEXT)
    assert kek.hex() not in str(info.value)
    with pytest.raises(TypeError):
        copy.copy(store)
    assert not hasattr(store, "__dict__")


def test_file_key_store_satisfies_protocol(store: FileKeyStore) -> None:
    typed: KeyStore = store
    assert typed.signing_public_key() is not None
