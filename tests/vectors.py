"""Where the shared test vectors live, and small readers for them.

Vectors are read in place (STYLE.md: never copied into the repo). The root is
``../shared/testvectors`` next to the repository, or ``$WEIGHTGATE_TESTVECTORS``.
Tests that need them call :func:`vectors_dir`, which skips with a clear reason
when they are absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ENV_VAR = "WEIGHTGATE_TESTVECTORS"


def testvectors_root() -> Path:
    """The test-vector root (may not exist)."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1].parent / "shared" / "testvectors"


def vectors_dir(*parts: str) -> Path:
    """``testvectors_root()/parts...``, or skip the calling test if it is missing."""
    path = testvectors_root().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"test vectors not found at {path} (set {ENV_VAR} to their location)")
    return path


def variant_file(base: Path, name: str, variant: str | None = None) -> Path:
    """A file of a vector set, or of one of its ``variants/<variant>`` directories.

    Variant directories hold only the files they replace; the rest comes from the
    parent set.
    """
    if variant is not None:
        replaced = base / "variants" / variant / name
        if replaced.exists():
            return replaced
    return base / name


def read_pcrs_json(path: Path) -> dict[str, dict[int, bytes]]:
    """``{"pcrs": {"sha256": {"0": "<hex>"}}}`` -> ``{"sha256": {0: b"..."}}``."""
    doc = json.loads(path.read_text())
    return {
        bank: {int(index): bytes.fromhex(value) for index, value in values.items()}
        for bank, values in doc["pcrs"].items()
    }
