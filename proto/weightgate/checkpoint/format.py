"""The encrypted checkpoint file format (``.wgc``): what the verifier writes and hosts read.

One ``.wgc`` file holds one checkpoint file, encrypted under that file's own random
256-bit data key with AES-256-GCM in fixed-size segments::

    header   = MAGIC (6) || FORMAT_VERSION (u16 BE) || file_id (16) || segment_size (u32 BE)
    segment  = AES-256-GCM(key, nonce_i, plaintext_i, aad_i) = ciphertext_i || tag_i (16)
    file     = header || segment_0 || ... || segment_{n-1}

    nonce_i  = i as 12 bytes big-endian
    aad_i    = header || i (u64 BE) || last (1 byte: 1 for the final segment, else 0)

Every segment but the last holds exactly ``segment_size`` plaintext bytes; the last holds
0 .. segment_size-1, so a file whose size is a multiple of the segment size ends with an
empty final segment. The segment count, and so which segment is last, follows from the
ciphertext size alone; no lookahead is needed to write and no length field to trust.

Why this resists the attacks in the issue:
  * tampering: each segment's GCM tag covers its bytes.
  * reordering: the index is the nonce and is in the AAD, so a segment moved to another
    position does not authenticate.
  * truncation after a segment boundary: the new last segment was written with last=0.
  * appending or dropping: the size no longer matches the signed manifest, and the final
    segment's last flag does not move with it.
  * swapping segments across files: the AAD carries the file's random ``file_id`` (and the
    keys differ), so even a file encrypted under the same key does not accept them.
  * changing the segment size or format version: both are in the header, which every
    segment's AAD covers.

Why a deterministic nonce (the segment index) is safe: GCM only requires that a (key,
nonce) pair never repeats. Every file gets a fresh random key used for that one file
only, and within a file every index is used once, so each nonce is unique per key. A
random 96-bit nonce would add nothing but a birthday bound.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC: Final = b"WGCKPT"
FORMAT_VERSION: Final = 1
KEY_SIZE: Final = 32  # AES-256
FILE_ID_SIZE: Final = 16  # random: collisions across all files ever written are negligible
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
DEFAULT_SEGMENT_SIZE: Final = 4 * 1024 * 1024
# Below 16 bytes a segment is mostly tag; tests use small sizes to cross boundaries.
MIN_SEGMENT_SIZE: Final = 16
# A reader holds two segment buffers; 64 MiB keeps a decrypting host's memory modest.
MAX_SEGMENT_SIZE: Final = 64 * 1024 * 1024
# 16 TiB per file: far above any weight shard, and keeps every count inside a u64.
MAX_FILE_SIZE: Final = 1 << 44

_HEADER: Final = struct.Struct(">6sH16sI")
HEADER_SIZE: Final = _HEADER.size
_AAD_TAIL: Final = struct.Struct(">QB")

Progress = Callable[[int], None]
"""Called with the number of plaintext bytes just processed (a delta)."""


class CheckpointFormatError(ValueError):
    """Checkpoint bytes (a ``.wgc`` file or a manifest) are malformed or do not authenticate.

    ``code`` is a short stable token (``checkpoint.segment.auth_failed``...) so callers can
    map the failure to a reason without reading the message.
    """

    def __init__(self, message: str, *, code: str = "checkpoint.malformed") -> None:
        super().__init__(message)
        self.code = code


class ManifestSignatureError(CheckpointFormatError):
    """The manifest's signature does not verify under the pinned verifier key."""


class Reader(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


class Writer(Protocol):
    def write(self, data: memoryview, /) -> int | None: ...


@dataclass(frozen=True)
class EncryptedFile:
    """What ``encrypt_stream`` measured; these go into the manifest entry."""

    plaintext_size: int
    ciphertext_size: int
    plaintext_sha256: bytes
    ciphertext_sha256: bytes


@dataclass(frozen=True)
class DecryptedFile:
    plaintext_size: int
    plaintext_sha256: bytes


def check_segment_size(segment_size: int) -> None:
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise CheckpointFormatError(
            f"segment size {segment_size} outside [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]",
            code="checkpoint.segment_size_invalid",
        )


def encode_header(file_id: bytes, segment_size: int) -> bytes:
    if len(file_id) != FILE_ID_SIZE:
        raise ValueError(f"file_id must be {FILE_ID_SIZE} bytes")
    check_segment_size(segment_size)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, file_id, segment_size)


def segment_nonce(index: int) -> bytes:
    """The segment index as a 96-bit big-endian nonce (unique per key; see module doc)."""
    return index.to_bytes(NONCE_SIZE, "big")


def segment_aad(header: bytes, index: int, *, last: bool) -> bytes:
    return header + _AAD_TAIL.pack(index, 1 if last else 0)


def segment_count(plaintext_size: int, segment_size: int) -> int:
    """Full segments plus the always-present, always-short final one."""
    return plaintext_size // segment_size + 1


def ciphertext_size(plaintext_size: int, segment_size: int) -> int:
    return HEADER_SIZE + plaintext_size + TAG_SIZE * segment_count(plaintext_size, segment_size)


def plaintext_size_for(ciphertext_size_: int, segment_size: int) -> int:
    """Invert ``ciphertext_size``; raises CheckpointFormatError if no plaintext size fits."""
    check_segment_size(segment_size)
    body = ciphertext_size_ - HEADER_SIZE
    full, rest = divmod(body, segment_size + TAG_SIZE) if body >= 0 else (0, -1)
    if not TAG_SIZE <= rest < segment_size + TAG_SIZE:
        raise CheckpointFormatError(
            f"ciphertext size {ciphertext_size_} is not a valid size for segment size "
            f"{segment_size}",
            code="checkpoint.size_invalid",
        )
    return full * segment_size + rest - TAG_SIZE


def encrypt_segment(
    aead: AESGCM, header: bytes, index: int, plaintext: bytes, *, last: bool
) -> bytes:
    """One segment, allocating its output (the streaming path encrypts in place)."""
    return aead.encrypt(segment_nonce(index), plaintext, segment_aad(header, index, last=last))


def decrypt_segment(
    aead: AESGCM, header: bytes, index: int, segment: bytes, *, last: bool, label: str = "?"
) -> bytes:
    try:
        return aead.decrypt(segment_nonce(index), segment, segment_aad(header, index, last=last))
    except InvalidTag:
        raise _auth_failed(label, index) from None


def _auth_failed(label: str, index: int) -> CheckpointFormatError:
    return CheckpointFormatError(
        f"{label}: segment {index} does not authenticate (tampered, reordered, truncated, "
        "from another file, or the wrong key)",
        code="checkpoint.segment.auth_failed",
    )


def _read_full(src: Reader, buffer: memoryview) -> int:
    """Fill ``buffer`` unless EOF comes first; streams may return short reads."""
    filled = 0
    while filled < len(buffer):
        n = src.readinto(buffer[filled:])
        if not n:
            break
        filled += n
    return filled


def _write_all(dst: Writer, data: memoryview) -> None:
    # Raw (unbuffered) files may write less than asked; buffered ones return None or len.
    while data:
        n = dst.write(data)
        if n is None:
            return
        data = data[n:]


def _check_key(key: bytes, file_id: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"data key must be {KEY_SIZE} bytes")
    if len(file_id) != FILE_ID_SIZE:
        raise ValueError(f"file_id must be {FILE_ID_SIZE} bytes")


def encrypt_stream(
    src: Reader,
    dst: Writer,
    key: bytes,
    file_id: bytes,
    *,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    progress: Progress | None = None,
) -> EncryptedFile:
    """Encrypt ``src`` to ``dst`` segment by segment, in memory of two segments.

    Both digests are computed on the fly so that neither file is read twice.
    """
    _check_key(key, file_id)
    header = encode_header(file_id, segment_size)
    aead = AESGCM(key)
    plain_hash, cipher_hash = hashlib.sha256(), hashlib.sha256()
    plain = memoryview(bytearray(segment_size))
    sealed = memoryview(bytearray(segment_size + TAG_SIZE))
    cipher_hash.update(header)
    _write_all(dst, memoryview(header))
    total, index = 0, 0
    while True:
        n = _read_full(src, plain)
        last = n < segment_size
        total += n
        if total > MAX_FILE_SIZE:
            raise CheckpointFormatError(
                f"file larger than {MAX_FILE_SIZE} bytes", code="checkpoint.file_too_large"
            )
        chunk, out = plain[:n], sealed[: n + TAG_SIZE]
        plain_hash.update(chunk)
        aead.encrypt_into(segment_nonce(index), chunk, segment_aad(header, index, last=last), out)
        cipher_hash.update(out)
        _write_all(dst, out)
        if progress is not None:
            progress(n)
        if last:
            break
        index += 1
    return EncryptedFile(
        plaintext_size=total,
        ciphertext_size=ciphertext_size(total, segment_size),
        plaintext_sha256=plain_hash.digest(),
        ciphertext_sha256=cipher_hash.digest(),
    )


def decrypt_stream(
    src: Reader,
    dst: Writer,
    key: bytes,
    file_id: bytes,
    *,
    segment_size: int,
    expected_ciphertext_size: int,
    label: str | None = None,
    progress: Progress | None = None,
) -> DecryptedFile:
    """Decrypt ``src`` into ``dst``; only authenticated plaintext is ever written.

    Checks, in order:
      1. ``expected_ciphertext_size`` (from the signed manifest) is a valid size for
         ``segment_size``; it fixes the segment count and which segment is last.
      2. the header: complete, magic, format version, ``file_id`` and segment size as
         expected.
      3. each segment: present in full (else truncated) and authenticating under its
         index, the header and its last flag; plaintext is written only after that.
      4. nothing follows the final segment.
    The caller compares the returned plaintext digest with the manifest; until then the
    output is not to be trusted as a whole (``decrypt_file`` does this).
    """
    _check_key(key, file_id)
    name = label if label is not None else file_id.hex()
    plaintext_size = plaintext_size_for(expected_ciphertext_size, segment_size)
    count = segment_count(plaintext_size, segment_size)
    expected_header = encode_header(file_id, segment_size)
    header = memoryview(bytearray(HEADER_SIZE))
    if _read_full(src, header) != HEADER_SIZE:
        raise CheckpointFormatError(f"{name}: truncated header", code="checkpoint.truncated")
    _check_header(bytes(header), expected_header, name)
    aead = AESGCM(key)
    plain_hash = hashlib.sha256()
    sealed = memoryview(bytearray(segment_size + TAG_SIZE))
    plain = memoryview(bytearray(segment_size))
    for index in range(count):
        last = index == count - 1
        n = plaintext_size - index * segment_size if last else segment_size
        want = sealed[: n + TAG_SIZE]
        if _read_full(src, want) != len(want):
            raise CheckpointFormatError(
                f"{name}: truncated in segment {index} of {count}", code="checkpoint.truncated"
            )
        out = plain[:n]
        try:
            aead.decrypt_into(
                segment_nonce(index), want, segment_aad(expected_header, index, last=last), out
            )
        except InvalidTag:
            raise _auth_failed(name, index) from None
        plain_hash.update(out)
        _write_all(dst, out)
        if progress is not None:
            progress(n)
    if _read_full(src, memoryview(bytearray(1))):
        raise CheckpointFormatError(
            f"{name}: data after the final segment {count - 1}", code="checkpoint.trailing_data"
        )
    return DecryptedFile(plaintext_size=plaintext_size, plaintext_sha256=plain_hash.digest())


def _check_header(header: bytes, expected: bytes, name: str) -> None:
    magic, version, file_id, segment_size = _HEADER.unpack(header)
    if magic != MAGIC:
        raise CheckpointFormatError(f"{name}: not a .wgc file (bad magic)", code="checkpoint.magic")
    if version != FORMAT_VERSION:
        raise CheckpointFormatError(
            f"{name}: format version {version}, expected {FORMAT_VERSION}",
            code="checkpoint.version",
        )
    _, _, want_id, want_size = _HEADER.unpack(expected)
    if file_id != want_id:
        raise CheckpointFormatError(
            f"{name}: file id {file_id.hex()} is not the manifest's {want_id.hex()}",
            code="checkpoint.file_id_mismatch",
        )
    if segment_size != want_size:
        raise CheckpointFormatError(
            f"{name}: segment size {segment_size}, manifest says {want_size}",
            code="checkpoint.segment_size_mismatch",
        )
