"""Decrypting checkpoint files onto disk without ever leaving unverified plaintext behind.

Plaintext goes to a 0600 temporary file beside the target and is renamed into place only
after the final segment authenticated and the whole file's size and SHA-256 matched the
signed manifest; any failure (including KeyboardInterrupt) deletes the temporary file.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from weightgate.checkpoint.durable import fsync_directory
from weightgate.checkpoint.format import CheckpointFormatError, Progress, decrypt_stream
from weightgate.checkpoint.manifest import Manifest, ManifestFile


def decrypt_file(
    src: Path,
    dst: Path,
    key: bytes,
    entry: ManifestFile,
    *,
    segment_size: int,
    progress: Progress | None = None,
) -> None:
    """Decrypt one ``.wgc`` file to ``dst``. Checks, in order:
    1. the ciphertext file's size is the manifest's (cheap, before any decryption);
    2. everything ``decrypt_stream`` checks (header, every segment, nothing trailing);
    3. plaintext size and SHA-256 equal the manifest's;
    then fsync and rename over ``dst``.
    """
    with open(src, "rb", buffering=0) as source:
        size = os.fstat(source.fileno()).st_size
        if size != entry.ciphertext_size:
            raise CheckpointFormatError(
                f"{entry.path}: ciphertext is {size} bytes, manifest says {entry.ciphertext_size}",
                code="checkpoint.size_mismatch",
            )
        fd, temp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
        temp = Path(temp_name)
        try:
            with open(fd, "wb", buffering=0) as sink:
                result = decrypt_stream(
                    source,
                    sink,
                    key,
                    entry.file_id,
                    segment_size=segment_size,
                    expected_ciphertext_size=entry.ciphertext_size,
                    label=entry.path,
                    progress=progress,
                )
                if result.plaintext_size != entry.plaintext_size or not hmac.compare_digest(
                    result.plaintext_sha256, entry.plaintext_sha256
                ):
                    raise CheckpointFormatError(
                        f"{entry.path}: plaintext SHA-256 does not match the manifest",
                        code="checkpoint.plaintext_digest_mismatch",
                    )
                os.fsync(sink.fileno())
            os.replace(temp, dst)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
    fsync_directory(dst.parent)


def decrypt_checkpoint(
    manifest: Manifest,
    encrypted_dir: Path,
    output_dir: Path,
    keys: Mapping[bytes, bytes],
    *,
    progress: Progress | None = None,
) -> None:
    """Decrypt every file of a verified ``manifest`` (from ``verify_manifest``).

    ``keys`` maps file id to data key. Paths were validated when the manifest was parsed;
    each parent directory is additionally resolved and must stay under ``output_dir``,
    so a symlink planted in the output tree cannot redirect plaintext.
    """
    output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    root = output_dir.resolve(strict=True)
    for entry in manifest.files:
        key = keys.get(entry.file_id)
        if key is None:
            raise ValueError(f"no data key for {entry.path} ({entry.file_id.hex()})")
        dst = root / entry.path
        dst.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        parent = dst.parent.resolve(strict=True)
        if parent != root and root not in parent.parents:
            raise CheckpointFormatError(
                f"{entry.path}: parent directory resolves outside the output directory",
                code="checkpoint.path_escapes",
            )
        decrypt_file(
            encrypted_dir / entry.ciphertext_name,
            parent / dst.name,
            key,
            entry,
            segment_size=manifest.segment_size,
            progress=progress,
        )
