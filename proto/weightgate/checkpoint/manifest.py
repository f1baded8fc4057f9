"""The checkpoint manifest: what a model version is, in canonical bytes.

Canonical form: JSON, UTF-8, keys sorted, no insignificant whitespace, non-ASCII
characters written as themselves, binary values as lowercase hex, sizes as integers.
``Manifest.from_bytes`` accepts only that exact form (it re-serializes and compares), so
one manifest has exactly one byte string, and its SHA-256 (``digest()``) can serve as the
model version's identity.

The manifest is signed (``signature.py``); ``from_bytes`` itself authenticates nothing and
must only see bytes whose signature has been verified, except in tests and fuzzing.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Final

from weightgate.checkpoint.format import (
    FILE_ID_SIZE,
    FORMAT_VERSION,
    MAX_FILE_SIZE,
    CheckpointFormatError,
    check_segment_size,
    ciphertext_size,
)

# Sharded checkpoints have hundreds to a few thousand files; the bound keeps the parse
# of an unverified-size manifest cheap.
MAX_FILES: Final = 65536
# Linux PATH_MAX is 4096 and NAME_MAX 255; nothing in a checkpoint needs more than this.
MAX_PATH_BYTES: Final = 1024
MAX_COMPONENT_BYTES: Final = 255
# MAX_FILES entries of a few hundred bytes each, with room to spare.
MAX_MANIFEST_BYTES: Final = 64 * 1024 * 1024
# Names, versions and tiers are identifiers shown to operators, not prose.
_LABEL: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:@/-]{0,127}")
_HEX: Final = re.compile(r"[0-9a-f]*")
_FILE_KEYS: Final = frozenset(
    {
        "path",
        "file_id",
        "plaintext_size",
        "ciphertext_size",
        "plaintext_sha256",
        "ciphertext_sha256",
    }
)
_TOP_KEYS: Final = frozenset(
    {"format_version", "model_name", "model_version", "risk_tier", "segment_size", "files"}
)


def _fail(message: str, code: str = "checkpoint.manifest.malformed") -> CheckpointFormatError:
    return CheckpointFormatError(f"manifest: {message}", code=code)


def check_path(path: str) -> None:
    """A checkpoint-relative path that is safe to create under any output directory.

    Refused: empty, absolute, ``.`` or ``..`` components, empty components (``a//b``,
    trailing ``/``), backslashes, control characters (NUL included), not NFC-normalized
    (two spellings of one name), longer than MAX_PATH_BYTES or a component longer than
    MAX_COMPONENT_BYTES.
    """
    if not isinstance(path, str) or not path:
        raise _bad_path("empty or non-string path")
    shown = ascii(path[:80])
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise _bad_path(f"path {shown}... longer than {MAX_PATH_BYTES} bytes")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in path) or "\\" in path:
        raise _bad_path(f"path {shown} has a control character or backslash")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in path):
        raise _bad_path(f"path {shown} is not valid Unicode")
    if unicodedata.normalize("NFC", path) != path:
        raise _bad_path(f"path {shown} is not NFC-normalized")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise _bad_path(f"path {shown} has a {part!r} component (absolute or not normal)")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise _bad_path(f"path {shown} has a component over {MAX_COMPONENT_BYTES} bytes")


def check_identifier(field: str, value: object) -> None:
    """Model name, version and risk tier: 1-128 of ``A-Za-z0-9._+:@/-``, alphanumeric first."""
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        raise _fail(f"{field} {ascii(value)[:80]} is not an identifier")


def _bad_path(message: str) -> CheckpointFormatError:
    return _fail(message, "checkpoint.manifest.path_invalid")


@dataclass(frozen=True)
class ManifestFile:
    path: str
    file_id: bytes
    plaintext_size: int
    ciphertext_size: int
    plaintext_sha256: bytes
    ciphertext_sha256: bytes

    @property
    def ciphertext_name(self) -> str:
        """Where the encrypted file lies, relative to the checkpoint's output directory."""
        return f"{self.file_id.hex()}.wgc"


@dataclass(frozen=True)
class Manifest:
    model_name: str
    model_version: str
    risk_tier: str
    segment_size: int
    files: tuple[ManifestFile, ...]
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks, in order: format version, labels, segment size, file count, then per
        file: path, id, sizes (ciphertext size must follow from the plaintext size),
        digests; finally no duplicate ids and no path that is also another's directory."""
        if self.format_version != FORMAT_VERSION:
            raise _fail(f"format version {self.format_version!r}", "checkpoint.manifest.version")
        check_identifier("model_name", self.model_name)
        check_identifier("model_version", self.model_version)
        check_identifier("risk_tier", self.risk_tier)
        _check_int("segment_size", self.segment_size)
        check_segment_size(self.segment_size)
        if not 1 <= len(self.files) <= MAX_FILES:
            raise _fail(f"{len(self.files)} files, expected 1..{MAX_FILES}")
        for entry in self.files:
            _check_file(entry, self.segment_size)
        paths = [f.path for f in self.files]
        if paths != sorted(set(paths)):
            raise _fail("paths not sorted or not unique")
        if len({f.file_id for f in self.files}) != len(self.files):
            raise _fail("duplicate file id")
        directories = {
            "/".join(parts[:i])
            for parts in (p.split("/") for p in paths)
            for i in range(1, len(parts))
        }
        # A file "a" and a file "a/b" cannot both be created.
        clash = directories.intersection(paths)
        if clash:
            raise _fail(f"path {ascii(min(clash))[:80]} is both a file and a directory")

    def to_bytes(self) -> bytes:
        document = {
            "files": [
                {
                    "ciphertext_sha256": f.ciphertext_sha256.hex(),
                    "ciphertext_size": f.ciphertext_size,
                    "file_id": f.file_id.hex(),
                    "path": f.path,
                    "plaintext_sha256": f.plaintext_sha256.hex(),
                    "plaintext_size": f.plaintext_size,
                }
                for f in self.files
            ],
            "format_version": self.format_version,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "risk_tier": self.risk_tier,
            "segment_size": self.segment_size,
        }
        return json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    def digest(self) -> bytes:
        """SHA-256 of the canonical bytes: the model version's identity."""
        return manifest_digest(self.to_bytes())

    def file(self, file_id: bytes) -> ManifestFile:
        for entry in self.files:
            if entry.file_id == file_id:
                return entry
        raise KeyError(file_id.hex())

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Strict parse. Checks, in order: size bound, UTF-8, JSON without duplicate keys
        or non-finite numbers, exact key sets and types, every ``validate`` check, and
        finally that ``data`` is the canonical serialization byte for byte."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise _fail(f"{len(data)} bytes, limit {MAX_MANIFEST_BYTES}")
        try:
            text = bytes(data).decode("utf-8")
            document = json.loads(
                text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant
            )
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise _fail(f"not UTF-8 JSON ({type(exc).__name__})") from None
        top = _object(document, _TOP_KEYS, "manifest")
        files = top["files"]
        if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
            raise _fail(f"files must be a list of 1..{MAX_FILES} entries")
        manifest = cls(
            format_version=_check_int("format_version", top["format_version"]),
            model_name=_check_str("model_name", top["model_name"]),
            model_version=_check_str("model_version", top["model_version"]),
            risk_tier=_check_str("risk_tier", top["risk_tier"]),
            segment_size=_check_int("segment_size", top["segment_size"]),
            files=tuple(_parse_file(entry) for entry in files),
        )
        if manifest.to_bytes() != data:
            raise _fail("not in canonical form", "checkpoint.manifest.not_canonical")
        return manifest


def manifest_digest(manifest_bytes: bytes) -> bytes:
    return hashlib.sha256(manifest_bytes).digest()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _fail("duplicate key")
    return result


def _no_constant(name: str) -> None:
    raise _fail(f"{name} is not a number")


def _object(value: object, keys: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"{what} is not an object")
    if set(value) != keys:
        missing, extra = sorted(keys - set(value)), sorted(set(value) - keys)
        raise _fail(f"{what} keys: missing {missing}, unexpected {ascii(extra)[:120]}")
    return value


def _check_int(field: str, value: object) -> int:
    # bool is an int in Python, and JSON true must not pass for 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(f"{field} is not an integer")
    return value


def _check_str(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(f"{field} is not a string")
    return value


def _check_hex(field: str, value: object, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
        raise _fail(f"{field} is not {size} bytes of lowercase hex")
    return bytes.fromhex(value)


def _parse_file(value: object) -> ManifestFile:
    entry = _object(value, _FILE_KEYS, "file entry")
    return ManifestFile(
        path=_check_str("path", entry["path"]),
        file_id=_check_hex("file_id", entry["file_id"], FILE_ID_SIZE),
        plaintext_size=_check_int("plaintext_size", entry["plaintext_size"]),
        ciphertext_size=_check_int("ciphertext_size", entry["ciphertext_size"]),
        plaintext_sha256=_check_hex("plaintext_sha256", entry["plaintext_sha256"], 32),
        ciphertext_sha256=_check_hex("ciphertext_sha256", entry["ciphertext_sha256"], 32),
    )


def _check_file(entry: ManifestFile, segment_size: int) -> None:
    check_path(entry.path)
    name = ascii(entry.path)[:80]
    if not isinstance(entry.file_id, bytes) or len(entry.file_id) != FILE_ID_SIZE:
        raise _fail(f"{name}: file id is not {FILE_ID_SIZE} bytes")
    for field in ("plaintext_sha256", "ciphertext_sha256"):
        digest = getattr(entry, field)
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise _fail(f"{name}: {field} is not 32 bytes")
    size = _check_int("plaintext_size", entry.plaintext_size)
    if not 0 <= size <= MAX_FILE_SIZE:
        raise _fail(f"{name}: plaintext size {size} outside [0, {MAX_FILE_SIZE}]")
    expected = ciphertext_size(size, segment_size)
    if _check_int("ciphertext_size", entry.ciphertext_size) != expected:
        raise _fail(
            f"{name}: ciphertext size {entry.ciphertext_size}, the format gives {expected}",
            "checkpoint.manifest.size_mismatch",
        )
