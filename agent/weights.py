"""Fetching a release's ciphertext and decrypting it into the model's target directory.

Ciphertext is useless without the data keys, so it may sit on disk: each file is
downloaded into ``state_dir/downloads/<manifest digest hex>/<file id>.wgc.part``,
resumed from the part's size after an interruption, checked against the manifest's
ciphertext SHA-256 and renamed to ``<file id>.wgc``. Plaintext is written only by
``weightgate.checkpoint.decrypt`` (temp file, authenticated, digest-checked, rename).
Keys never touch the disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import grpc
import grpc.aio

from agent.backoff import Backoff
from agent.logs import EventLog
from agent.statefile import fsync_directory
from weightgate.checkpoint import Manifest, ManifestFile, decrypt_checkpoint
from weightgate.v1 import weights_pb2, weights_pb2_grpc

ChannelFactory = Callable[[], AbstractAsyncContextManager[grpc.aio.Channel]]

DOWNLOADS_DIR = "downloads"
# Consecutive failed attempts (no byte of progress) before a download is given up:
# enough to ride out a verifier restart with backoff, not so many that a file the
# verifier does not have is asked for until the lease ends.
MAX_ATTEMPTS_WITHOUT_PROGRESS = 8
_HASH_BLOCK = 1 << 20
# A chunk must arrive within this long; the stream as a whole has no deadline
# because checkpoint files are large.
_CHUNK_TIMEOUT_S = 60.0


class DownloadError(Exception):
    """The ciphertext could not be fetched or does not match the manifest."""


class DecryptAbortedError(Exception):
    """Decryption stopped because the release is being erased."""


def download_dir(state_dir: Path, manifest_digest: bytes) -> Path:
    return state_dir / DOWNLOADS_DIR / manifest_digest.hex()


def _sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.digest()


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def _finish(part: Path, final: Path, entry: ManifestFile) -> None:
    if not hmac.compare_digest(_sha256_file(part), entry.ciphertext_sha256):
        part.unlink()  # corrupt: start over rather than resume garbage
        raise DownloadError(f"{entry.path}: ciphertext SHA-256 does not match the manifest")
    fd = os.open(part, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(part, final)
    fsync_directory(final.parent)


async def fetch_file(
    stub: weights_pb2_grpc.WeightsAsyncStub,
    *,
    manifest_digest: bytes,
    entry: ManifestFile,
    directory: Path,
) -> Path:
    """Download one ``.wgc`` file into ``directory``, resuming a ``.part`` if present.

    Checks: every chunk starts where the previous one ended, nothing beyond the
    manifest's ciphertext size, the stream ends exactly at that size, and the whole
    file's SHA-256 equals the manifest's ciphertext digest.
    """
    final = directory / entry.ciphertext_name
    part = directory / f"{entry.ciphertext_name}.part"
    if final.exists() and final.stat().st_size == entry.ciphertext_size:
        return final  # checked when it was renamed; decryption authenticates it again
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    if offset > entry.ciphertext_size:
        part.unlink()
        offset = 0
    if offset < entry.ciphertext_size:
        call = stub.FetchCiphertext(
            weights_pb2.FetchCiphertextRequest(
                manifest_digest=manifest_digest, file_id=entry.file_id.hex(), offset=offset
            )
        )
        try:
            while True:
                chunk = await asyncio.wait_for(call.read(), _CHUNK_TIMEOUT_S)
                if not isinstance(chunk, weights_pb2.CiphertextChunk):
                    break  # grpc.aio.EOF
                if chunk.offset != offset:
                    raise DownloadError(
                        f"{entry.path}: chunk at offset {chunk.offset}, expected {offset}"
                    )
                if offset + len(chunk.data) > entry.ciphertext_size:
                    raise DownloadError(
                        f"{entry.path}: more ciphertext than the manifest's"
                        f" {entry.ciphertext_size} bytes"
                    )
                await asyncio.to_thread(_append, part, chunk.data)
                offset += len(chunk.data)
        finally:
            call.cancel()
    if offset != entry.ciphertext_size:
        raise DownloadError(
            f"{entry.path}: stream ended at {offset} of {entry.ciphertext_size} bytes"
        )
    await asyncio.to_thread(_finish, part, final, entry)
    return final


def _downloaded(directory: Path, manifest: Manifest) -> int:
    total = 0
    for entry in manifest.files:
        for name in (entry.ciphertext_name, f"{entry.ciphertext_name}.part"):
            path = directory / name
            if path.exists():
                total += path.stat().st_size
    return total


async def fetch_release(
    channels: ChannelFactory,
    *,
    manifest: Manifest,
    manifest_digest: bytes,
    directory: Path,
    log: EventLog,
    release_id: str,
    backoff: Backoff | None = None,
) -> None:
    """Download every file of ``manifest``; reconnects and resumes after failures and
    gives up after MAX_ATTEMPTS_WITHOUT_PROGRESS attempts that fetched nothing."""
    backoff = backoff or Backoff(initial_seconds=1.0, max_seconds=30.0)
    stalled = 0
    while True:
        before = _downloaded(directory, manifest)
        try:
            async with channels() as channel:
                stub = weights_pb2_grpc.WeightsStub(channel)
                for entry in manifest.files:
                    await fetch_file(
                        stub, manifest_digest=manifest_digest, entry=entry, directory=directory
                    )
            log.info(
                "release.downloaded",
                release_id=release_id,
                files=len(manifest.files),
                bytes=_downloaded(directory, manifest),
            )
            return
        except (grpc.aio.AioRpcError, DownloadError, TimeoutError) as e:
            progressed = _downloaded(directory, manifest) > before
            stalled = 0 if progressed else stalled + 1
            detail = (
                f"{e.code().name}: {e.details()}" if isinstance(e, grpc.aio.AioRpcError) else str(e)
            )
            log.warning(
                "release.download_interrupted",
                release_id=release_id,
                detail=detail,
                attempts_without_progress=stalled,
            )
            if stalled >= MAX_ATTEMPTS_WITHOUT_PROGRESS:
                raise DownloadError(f"download gave up: {detail}") from e
            if progressed:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())


def decrypt_release(
    manifest: Manifest,
    encrypted_dir: Path,
    target_dir: Path,
    keys: Mapping[bytes, bytearray],
    abort: threading.Event,
) -> None:
    """Decrypt every file into ``target_dir`` (blocking: run it in a thread).

    ``abort`` is checked after every segment; once set, the file being written is
    deleted (``decrypt_file`` removes its temp file) and DecryptAbortedError is raised.
    """

    def check(_: int) -> None:
        if abort.is_set():
            raise DecryptAbortedError("release erased during decryption")

    # decrypt_checkpoint takes bytes; these copies cannot be wiped (see keyunwrap).
    decrypt_checkpoint(
        manifest,
        encrypted_dir,
        target_dir,
        {file_id: bytes(key) for file_id, key in keys.items()},
        progress=check,
    )
