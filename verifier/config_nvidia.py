"""``[verifier.nvidia]``: where NVIDIA GPU evidence is verified from, air-gapped.

Everything the GPU round needs is local: NVIDIA's roots in a trust directory, RIMs in
the content-addressed store that ``weightgate reference import-rim`` fills, OCSP
responses in a cache directory that operators fill by copying files in. Nothing is
fetched at verification time.

Roots are *pinned in code* (STYLE.md, "Verifying evidence" 7): every certificate in
``trust_dir`` must be NVIDIA's Device Identity CA or NVIDIA's RIM root, or loading
fails naming the file; a foreign root cannot be slipped in by dropping a file there.
The one way to trust another root is a separate, loudly named key,
``insecure_test_roots``: roots of a simulator (devsim) for tests and the demo,
which production configs never set::

    [verifier.nvidia]
    trust_dir = "nvidia-roots"        # verifier_device_root.pem, verifier_RIM_root.pem
                                      # (may be left out only beside insecure_test_roots)
    rim_store = "rims"                # weightgate reference import-rim --store
    ocsp_dir = "ocsp"                 # <issuer-key-hash>-<serial>.der files
    ocsp_max_age_hours = 168          # a response older than this is stale
    ocsp_stale_grace_hours = 0        # air-gapped sites may accept stale ones, reported
    insecure_test_roots = []          # TEST ONLY: device and RIM roots of a simulator
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from verifier.config_reader import Reader, table_reader
from verifier.evidence.nvidia.trust_dir import (
    NvidiaRoots,
    TrustDirError,
    load_test_roots,
    load_trust_dir,
)

__all__ = ["NvidiaConfig", "nvidia_config"]

log = logging.getLogger(__name__)

_KEYS = {
    "trust_dir",
    "rim_store",
    "ocsp_dir",
    "ocsp_max_age_hours",
    "ocsp_stale_grace_hours",
    "insecure_test_roots",
}


@dataclass(frozen=True, slots=True)
class NvidiaConfig:
    device_roots: tuple[x509.Certificate, ...]
    device_spki_pins: frozenset[bytes]  # SPKI SHA-256 of each device root
    rim_roots: tuple[x509.Certificate, ...]
    rim_store: Path
    ocsp_dir: Path
    ocsp_max_age: timedelta
    ocsp_stale_grace: timedelta
    test_roots_trusted: bool  # insecure_test_roots named any root


def _hours(reader: Reader, key: str, default: float, *, allow_zero: bool) -> timedelta:
    value: float = reader.get(key, float, default, "a number of hours")
    if value < 0 or (value == 0 and not allow_zero) or value > 24 * 366:
        low = "0" if allow_zero else "more than 0"
        raise reader.fail(key, f"expected {low} to {24 * 366} hours, got {value!r}")
    return timedelta(hours=value)


def nvidia_config(path: Path, text: str, raw: Any, base: Path) -> NvidiaConfig | None:
    """The ``[verifier.nvidia]`` table, validated and with its roots loaded; None if absent."""
    reader = table_reader(path, text, raw, "verifier.nvidia", _KEYS)
    if reader is None:
        return None
    roots = NvidiaRoots((), ())
    trust_dir = reader.trust_dir(base)
    if trust_dir is not None:
        try:
            roots = load_trust_dir(trust_dir)
        except TrustDirError as exc:
            raise reader.fail("trust_dir", str(exc)) from None
    test_files = reader.file_names("insecure_test_roots")
    try:
        test_roots = load_test_roots(base / name for name in test_files)
    except TrustDirError as exc:
        raise reader.fail("insecure_test_roots", str(exc)) from None
    if test_files:
        log.warning(
            "[verifier.nvidia] insecure_test_roots trusts %d simulator root(s): "
            "GPU evidence signed by them is accepted (tests and demos only)",
            len(test_roots.device_roots) + len(test_roots.rim_roots),
        )
    roots += test_roots
    if not roots.device_roots:
        raise reader.fail("trust_dir", "no NVIDIA Device Identity CA (verifier_device_root.pem)")
    if not roots.rim_roots:
        raise reader.fail("trust_dir", "no NVIDIA RIM root (verifier_RIM_root.pem)")
    return NvidiaConfig(
        device_roots=roots.device_roots,
        device_spki_pins=roots.device_spki_pins,
        rim_roots=roots.rim_roots,
        rim_store=reader.directory("rim_store", base),
        ocsp_dir=reader.directory("ocsp_dir", base),
        ocsp_max_age=_hours(reader, "ocsp_max_age_hours", 168.0, allow_zero=False),
        ocsp_stale_grace=_hours(reader, "ocsp_stale_grace_hours", 0.0, allow_zero=True),
        test_roots_trusted=bool(test_files),
    )
