"""Encrypting a checkpoint directory for gated release (the verifier side).

Output, in ``output_dir``: one ``<file_id_hex>.wgc`` per checkpoint file, ``manifest.json``
(the canonical manifest bytes) and ``manifest.sig`` (raw Ed25519 signature). These are
safe to distribute. The wrapped data keys are *returned*, not written there: they stay
with the verifier, which unwraps and releases them only to attested hosts.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from verifier.keystore import KeyStore
from weightgate.checkpoint.durable import fsync_directory
from weightgate.checkpoint.format import (
    DEFAULT_SEGMENT_SIZE,
    FILE_ID_SIZE,
    KEY_SIZE,
    check_segment_size,
    encrypt_stream,
)
from weightgate.checkpoint.manifest import (
    MAX_FILES,
    Manifest,
    ManifestFile,
    check_identifier,
    check_path,
    manifest_digest,
)
from weightgate.checkpoint.signature import sign_manifest, verify_manifest

MANIFEST_NAME: Final = "manifest.json"
SIGNATURE_NAME: Final = "manifest.sig"
DATA_KEY_CONTEXT: Final = b"weightgate.checkpoint.data-key.v1\x00"

ProgressCallback = Callable[[int, int], None]
"""Called with (bytes done, bytes total) across the whole checkpoint."""


class CheckpointSourceError(ValueError):
    """The source directory cannot be encrypted as a checkpoint (and nothing was kept)."""


@dataclass(frozen=True)
class EncryptedCheckpoint:
    manifest_bytes: bytes
    signature: bytes
    manifest_digest: bytes
    # file id (hex) -> data key wrapped under the key store's KEK with data_key_context
    wrapped_keys: dict[str, bytes] = field(repr=False)

    @property
    def manifest(self) -> Manifest:
        return Manifest.from_bytes(self.manifest_bytes)


@dataclass(frozen=True)
class _Source:
    path: str  # checkpoint-relative, '/'-separated
    location: Path  # what to open: the file, or a symlink's resolved target
    size: int


def data_key_context(manifest_digest_: bytes, file_id: bytes) -> bytes:
    """Wrapping context: a wrapped key only unwraps for this file of this model version."""
    if len(manifest_digest_) != 32 or len(file_id) != FILE_ID_SIZE:
        raise ValueError("context needs a 32-byte manifest digest and a 16-byte file id")
    return DATA_KEY_CONTEXT + manifest_digest_ + file_id


def encrypt_checkpoint(
    source_dir: Path,
    output_dir: Path,
    *,
    name: str,
    version: str,
    risk_tier: str,
    keystore: KeyStore,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    progress: ProgressCallback | None = None,
) -> EncryptedCheckpoint:
    """Encrypt every file under ``source_dir`` into ``output_dir`` (new or empty).

    Checks before any encryption: identifiers, segment size, output not inside the
    source, every entry a regular file or a symlink to one inside the source (symlinked
    directories, devices, FIFOs and sockets are refused, never skipped), every path valid
    for the manifest, 1..MAX_FILES files. After: the manifest signature verifies under
    the key store's public key. On any failure the files written so far are removed.
    """
    check_identifier("model_name", name)
    check_identifier("model_version", version)
    check_identifier("risk_tier", risk_tier)
    check_segment_size(segment_size)
    source = Path(source_dir).resolve(strict=True)
    output = Path(output_dir)
    sources = _collect(source, output)
    created_output = not output.exists()
    output.mkdir(mode=0o755, parents=True, exist_ok=True)
    if any(output.iterdir()):
        raise CheckpointSourceError(f"output directory {output} is not empty")
    written: list[Path] = []
    try:
        result = _encrypt_all(
            sources,
            output,
            written,
            segment_size=segment_size,
            progress=progress,
            keystore=keystore,
            name=name,
            version=version,
            risk_tier=risk_tier,
        )
    except BaseException:
        for path in written:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if created_output:
            with contextlib.suppress(OSError):
                output.rmdir()
        raise
    return result


def _encrypt_all(
    sources: list[_Source],
    output: Path,
    written: list[Path],
    *,
    segment_size: int,
    progress: ProgressCallback | None,
    keystore: KeyStore,
    name: str,
    version: str,
    risk_tier: str,
) -> EncryptedCheckpoint:
    total = sum(s.size for s in sources)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            # A file growing while we read it must not show more than 100 %.
            progress(done, max(total, done))

    entries: list[ManifestFile] = []
    keys: dict[bytes, bytes] = {}
    for item in sources:
        file_id = secrets.token_bytes(FILE_ID_SIZE)
        key = secrets.token_bytes(KEY_SIZE)
        target = output / f"{file_id.hex()}.wgc"
        written.append(target)
        with _open_source(item) as src, open(target, "xb", buffering=0) as dst:
            measured = encrypt_stream(
                src, dst, key, file_id, segment_size=segment_size, progress=advance
            )
            os.fsync(dst.fileno())
        keys[file_id] = key
        entries.append(
            ManifestFile(
                path=item.path,
                file_id=file_id,
                plaintext_size=measured.plaintext_size,
                ciphertext_size=measured.ciphertext_size,
                plaintext_sha256=measured.plaintext_sha256,
                ciphertext_sha256=measured.ciphertext_sha256,
            )
        )
    manifest = Manifest(
        model_name=name,
        model_version=version,
        risk_tier=risk_tier,
        segment_size=segment_size,
        files=tuple(entries),
    )
    manifest_bytes = manifest.to_bytes()
    digest = manifest_digest(manifest_bytes)
    signature = sign_manifest(manifest_bytes, keystore.sign)
    # A signer behind a KMS could be misconfigured; hosts would then refuse everything.
    verify_manifest(manifest_bytes, signature, keystore.signing_public_key())
    wrapped = {
        file_id.hex(): keystore.wrap_data_key(key, context=data_key_context(digest, file_id))
        for file_id, key in keys.items()
    }
    keys.clear()
    for filename, data in ((MANIFEST_NAME, manifest_bytes), (SIGNATURE_NAME, signature)):
        written.append(output / filename)
        _write_new(output / filename, data)
    fsync_directory(output)
    return EncryptedCheckpoint(
        manifest_bytes=manifest_bytes,
        signature=signature,
        manifest_digest=digest,
        wrapped_keys=wrapped,
    )


def _collect(source: Path, output: Path) -> list[_Source]:
    """Every file under ``source``, sorted by manifest path (code point order)."""
    if not source.is_dir():
        raise CheckpointSourceError(f"{source} is not a directory")
    out = output.resolve()
    if out == source or source in out.parents:
        raise CheckpointSourceError(f"output directory {output} is inside the source {source}")
    found: list[_Source] = []
    for directory, dirnames, filenames in os.walk(source, followlinks=False):
        here = Path(directory)
        for dirname in dirnames:
            if (here / dirname).is_symlink():
                raise CheckpointSourceError(f"{here / dirname}: symlinked directory refused")
        for filename in filenames:
            found.append(_source_file(source, here / filename))
            if len(found) > MAX_FILES:
                raise CheckpointSourceError(f"{source}: more than {MAX_FILES} files")
    if not found:
        raise CheckpointSourceError(f"{source} contains no files")
    found.sort(key=lambda s: s.path)
    return found


def _source_file(source: Path, path: Path) -> _Source:
    relative = path.relative_to(source).as_posix()
    try:
        check_path(relative)
    except ValueError as exc:
        raise CheckpointSourceError(f"{str(path)!a}: {exc}") from None
    info = path.lstat()
    location = path
    if stat.S_ISLNK(info.st_mode):
        location = path.resolve(strict=True)
        if source not in location.parents:
            raise CheckpointSourceError(f"{path}: symlink points outside {source}")
        info = location.stat()
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointSourceError(f"{path}: not a regular file")
    return _Source(path=relative, location=location, size=info.st_size)


def _open_source(item: _Source) -> io.FileIO:
    # O_NOFOLLOW: a file swapped for a symlink after _collect is not followed out.
    handle = open(item.location, "rb", buffering=0, opener=_open_nofollow)  # noqa: SIM115
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        handle.close()
        raise CheckpointSourceError(f"{item.location}: no longer a regular file")
    return handle


def _open_nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def _write_new(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
