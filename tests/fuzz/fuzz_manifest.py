"""atheris harness for Manifest.from_bytes (bytes a host reads from the distribution).

Run: ``python tests/fuzz/fuzz_manifest.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one with valid manifests.
The property: ``from_bytes`` returns a Manifest that re-serializes to the same bytes, or
raises CheckpointFormatError; any other exception is a bug. ``fuzz_one`` is importable so
that the unit suite runs the same property without atheris
(tests/unit/test_fuzz_smoke_manifest.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from weightgate.checkpoint.format import CheckpointFormatError, ciphertext_size
from weightgate.checkpoint.manifest import Manifest, ManifestFile


def fuzz_one(data: bytes) -> None:
    try:
        manifest = Manifest.from_bytes(data)
    except CheckpointFormatError:
        return
    assert manifest.to_bytes() == data


def seed_inputs() -> Iterator[bytes]:
    """Valid manifests covering one file, many files, nested and non-ASCII paths."""
    shapes = [
        [("model.safetensors", 0)],
        [("a", 1), ("b/c", 4096), ("b/d/é.bin", 4097), ("z" * 40, 123456)],
        [(f"shard-{i:05d}.bin", i * 1000) for i in range(20)],
    ]
    for number, shape in enumerate(shapes):
        segment = 4096 if number != 1 else 16
        files = tuple(
            ManifestFile(
                path=path,
                file_id=bytes([index]) * 16,
                plaintext_size=size,
                ciphertext_size=ciphertext_size(size, segment),
                plaintext_sha256=bytes([index]) * 32,
                ciphertext_sha256=bytes([255 - index]) * 32,
            )
            for index, (path, size) in enumerate(shape)
        )
        yield Manifest(
            model_name="frontier-x",
            model_version=f"v{number}",
            risk_tier="tier-3",
            segment_size=segment,
            files=files,
        ).to_bytes()


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("manifest", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
