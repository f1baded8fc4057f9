"""Where the shared test vectors live, and small readers for them.

Vectors are read in place (STYLE.md: never copied into the repo). The root is
``../shared/testvectors`` next to the repository, or ``$WEIGHTGATE_TESTVECTORS``.
Tests that need them call :func:`vectors_dir`, which skips with a clear reason
when they are absent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# --- TPM quote vectors ------------------------------------------------------------

TPM_SWTPM_SETS = (
    "swtpm-rsa-sha1sha256-loc0",
    "swtpm-ecc-sha256-loc3",
    "swtpm-rsa-sha256sha384-hcrtm-sboff",
)


@dataclass(frozen=True)
class QuoteCase:
    """One TPM quote with everything needed to authenticate it, as raw bytes."""

    attest: bytes
    signature: bytes
    ak_public: bytes  # TPM2B_PUBLIC when ak_is_tpm2b, else TPMT_PUBLIC
    ak_is_tpm2b: bool
    nonce: bytes
    pcrs: dict[str, dict[int, bytes]]
    expected: dict[str, Any]


def swtpm_quote_case(name: str, variant: str | None = None) -> QuoteCase:
    """A ``tpm/swtpm-*`` set (or one of its variants) as a QuoteCase."""
    base = vectors_dir("tpm", name)
    expected_file = variant_file(base, "expected.json", variant)
    return QuoteCase(
        attest=variant_file(base, "quote.attest", variant).read_bytes(),
        signature=variant_file(base, "quote.sig", variant).read_bytes(),
        ak_public=(base / "ak.tpm2b_public").read_bytes(),
        ak_is_tpm2b=True,
        nonce=variant_file(base, "nonce.bin", variant).read_bytes(),
        pcrs=read_pcrs_json(variant_file(base, "pcrs.json", variant)),
        expected=json.loads(expected_file.read_text()),
    )


def go_quote_case(directory: str, quote: str = "quote") -> QuoteCase:
    """A go-tpm-tools / go-attestation attestation directory (``ak_pub.tpmt``)."""
    base = vectors_dir("tpm", *directory.split("/"))
    return QuoteCase(
        attest=(base / f"{quote}.attest").read_bytes(),
        signature=(base / f"{quote}.sig").read_bytes(),
        ak_public=(base / "ak_pub.tpmt").read_bytes(),
        ak_is_tpm2b=False,
        nonce=(base / "nonce.bin").read_bytes(),
        pcrs=read_pcrs_json(base / "pcrs.json"),
        expected={},
    )
