"""The entry point every atheris harness shares: seed a corpus from real inputs, fuzz."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


def run(name: str, fuzz_one: Callable[[bytes], None], seeds: Callable[[], Iterable[bytes]]) -> None:
    """libFuzzer options come from argv; without a corpus directory one is made from `seeds`."""
    import atheris  # noqa: PLC0415 - optional dependency, only for fuzzing

    args = list(sys.argv)
    if not any(Path(a).is_dir() for a in args[1:]):
        corpus = tempfile.mkdtemp(prefix=f"fuzz_{name}_corpus_")
        for i, seed in enumerate(seeds()):
            (Path(corpus) / f"seed{i:03d}").write_bytes(seed)
        args.append(corpus)
    atheris.instrument_all()
    atheris.Setup(args, fuzz_one)
    atheris.Fuzz()
