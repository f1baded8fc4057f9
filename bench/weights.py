#!/usr/bin/env python3
"""Checkpoint encryption and decryption throughput, beside OpenSSL's AES-256-GCM.

In one run it measures:
  reference  ``openssl speed -evp aes-256-gcm -bytes 4194304 -seconds N`` (one core),
             and the bare AESGCM.encrypt_into of pyca/cryptography on the same buffers
  ours       over a generated multi-file checkpoint (default 2 GiB, in a temp dir,
             deleted afterwards):
               encrypt_stream / decrypt_stream  file to file, no fsync (the format's cost:
                 read, AES-GCM, SHA-256 of plaintext (+ ciphertext when encrypting), write)
               encrypt_checkpoint / decrypt_checkpoint  end to end (fsync, manifest,
                 signature, key wrapping, temp file + rename)
  floors     the same files copied without crypto, and read + one SHA-256 pass: what
             this machine's page cache and SHA-256 allow before any AES-GCM
and prints each rate with its ratio to OpenSSL, and peak RSS after a small pass and
after the full-size pass: equal figures show memory independent of the checkpoint size.
The files are in the page cache when read (just written), so this measures CPU, not disk.

Usage: python bench/weights.py [--size 2GiB] [--files 4] [--segment-size 4MiB]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from verifier.keystore import FileKeyStore
from verifier.models.encrypt import data_key_context, encrypt_checkpoint
from verifier.models.progress import format_bytes
from weightgate.checkpoint import decrypt_checkpoint, decrypt_stream, encrypt_stream

_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", text.upper())
    if not match or match.group(2) not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512MiB, 2GiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def openssl_rate(seconds: int) -> float | None:
    """Bytes/s of one core of ``openssl speed`` on 4 MiB blocks, or None without openssl."""
    if shutil.which("openssl") is None:
        return None
    command = ["openssl", "speed", "-evp", "aes-256-gcm", "-bytes", "4194304"]
    command += ["-seconds", str(seconds)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    # Last line: "AES-256-GCM    3249526.43k" (thousands of bytes per second).
    match = re.search(r"^aes-256-gcm\s+([\d.]+)k\s*$", output, re.IGNORECASE | re.MULTILINE)
    return float(match.group(1)) * 1000 if match else None


def bare_aesgcm_rate(seconds: float, segment: int) -> float:
    aead = AESGCM(AESGCM.generate_key(256))
    data = memoryview(os.urandom(segment))
    out = memoryview(bytearray(segment + 16))
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        aead.encrypt_into(count.to_bytes(12, "big"), data, b"aad", out)
        count += 1
    return count * segment / (time.perf_counter() - start)


def generate(directory: Path, total: int, files: int) -> None:
    directory.mkdir(parents=True)
    block = os.urandom(4 << 20)
    per_file = total // files
    for index in range(files):
        size = per_file if index < files - 1 else total - per_file * (files - 1)
        with (directory / f"model-{index + 1:05d}-of-{files:05d}.safetensors").open("wb") as f:
            written = 0
            while written < size:
                chunk = block[: min(len(block), size - written)]
                f.write(chunk)
                written += len(chunk)


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_pass(work: Path, total: int, files: int, segment: int) -> dict[str, float]:
    """All four measurements on a fresh checkpoint of ``total`` bytes; seconds each."""
    src, enc, plain = work / "src", work / "enc", work / "plain"
    generate(src, total, files)
    store = FileKeyStore.create(work / "keystore")
    key, file_id = AESGCM.generate_key(256), os.urandom(16)
    names = sorted(p.name for p in src.iterdir())
    stream_dir = work / "stream"
    stream_dir.mkdir()

    def stream_encrypt() -> None:
        for name in names:
            with (src / name).open("rb", buffering=0) as s, (stream_dir / name).open("wb") as d:
                encrypt_stream(s, d, key, file_id, segment_size=segment)

    def stream_decrypt() -> None:
        for name in names:
            path = stream_dir / name
            with path.open("rb", buffering=0) as s, (work / "out.bin").open("wb") as d:
                decrypt_stream(
                    s,
                    d,
                    key,
                    file_id,
                    segment_size=segment,
                    expected_ciphertext_size=path.stat().st_size,
                )

    def copy_only() -> None:
        buffer = memoryview(bytearray(segment))
        for name in names:
            with (src / name).open("rb", buffering=0) as s, (work / "copy.bin").open("wb") as d:
                while n := s.readinto(buffer):
                    d.write(buffer[:n])

    def sha256_only() -> None:
        buffer = memoryview(bytearray(segment))
        for name in names:
            digest = hashlib.sha256()
            with (src / name).open("rb", buffering=0) as s:
                while n := s.readinto(buffer):
                    digest.update(buffer[:n])

    times = {
        "copy, no crypto": timed(copy_only),
        "read + SHA-256 only": timed(sha256_only),
        "encrypt_stream": timed(stream_encrypt),
        "decrypt_stream": timed(stream_decrypt),
    }
    (work / "copy.bin").unlink()
    shutil.rmtree(stream_dir)
    (work / "out.bin").unlink()
    result = None

    def checkpoint_encrypt() -> None:
        nonlocal result
        result = encrypt_checkpoint(
            src, enc, name="bench", version="1", risk_tier="t", keystore=store,
            segment_size=segment,
        )  # fmt: skip

    times["encrypt_checkpoint"] = timed(checkpoint_encrypt)
    assert result is not None
    manifest = result.manifest
    keys = {
        f.file_id: store.unwrap_data_key(
            result.wrapped_keys[f.file_id.hex()],
            context=data_key_context(result.manifest_digest, f.file_id),
        )
        for f in manifest.files
    }
    times["decrypt_checkpoint"] = timed(lambda: decrypt_checkpoint(manifest, enc, plain, keys))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=2 << 30)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--segment-size", type=parse_size, default=4 << 20)
    parser.add_argument("--openssl-seconds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp dir")
    args = parser.parse_args()

    reference = openssl_rate(args.openssl_seconds)
    bare = bare_aesgcm_rate(2.0, args.segment_size)
    small = max(args.size // 16, args.segment_size * args.files)
    with tempfile.TemporaryDirectory(prefix="wg-bench-", dir=args.dir) as temp:
        run_pass(Path(temp) / "small", small, args.files, args.segment_size)
        shutil.rmtree(Path(temp) / "small")
        rss_small = peak_rss()
        times = run_pass(Path(temp) / "full", args.size, args.files, args.segment_size)
        rss_full = peak_rss()

    def rate_line(label: str, rate: float) -> str:
        ratio = f"{rate / reference:6.1%} of openssl" if reference else "openssl n/a"
        return f"  {label:<22} {format_bytes(rate):>12}/s   {ratio}"

    print(
        f"checkpoint: {format_bytes(args.size)} in {args.files} files, "
        f"segments {format_bytes(args.segment_size)}, cpus {os.cpu_count()}"
    )
    if reference:
        print(f"  {'openssl speed (1 core)':<22} {format_bytes(reference):>12}/s   reference")
    print(rate_line("bare AESGCM (pyca)", bare))
    for label, seconds in times.items():
        print(rate_line(label, args.size / seconds) + f"  ({seconds:.2f} s)")
    print(
        f"  peak RSS: {format_bytes(rss_small)} after a {format_bytes(small)} pass, "
        f"{format_bytes(rss_full)} after the {format_bytes(args.size)} pass"
    )


if __name__ == "__main__":
    main()
