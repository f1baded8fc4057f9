"""Which NVIDIA roots an offline GPU command trusts, from its options.

Either ``--trust-dir`` (NVIDIA's roots, each checked against the pins in code) or
``--device-root`` and ``--rim-root`` files, checked against the same pins unless
``--allow-other-roots`` (a simulator's test roots) says otherwise. Nothing is ever
assumed: with neither, the command refuses to run.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from verifier.evidence.nvidia.chain import DEVICE_ROOT_SPKI_SHA256, spki_sha256
from verifier.evidence.nvidia.offline_rims import RootFileError, load_root_file
from verifier.evidence.nvidia.rim_chain import NVIDIA_RIM_ROOT_SHA256
from verifier.evidence.nvidia.trust_dir import TrustDirError, load_trust_dir

__all__ = ["RootsError", "rim_roots", "roots_from_options"]


class RootsError(ValueError):
    """The options name no usable roots; the message says which and why."""


def _root_file(path: Path, *, pinned: str | None, what: str) -> list[x509.Certificate]:
    try:
        return load_root_file(path, expected_sha256=pinned, what=what)
    except RootFileError as exc:
        raise RootsError(str(exc)) from None


def rim_roots(path: Path | None, *, allow_other: bool) -> list[x509.Certificate]:
    """The RIM root file's certificates: NVIDIA's pinned root unless ``allow_other``."""
    if path is None:
        raise RootsError("--rim-root: name the NVIDIA RIM root file (PEM); none is assumed")
    pinned = None if allow_other else NVIDIA_RIM_ROOT_SHA256
    return _root_file(path, pinned=pinned, what="RIM root")


def roots_from_options(
    *,
    trust_dir: Path | None,
    device_root: Path | None,
    rim_root: Path | None,
    allow_other_roots: bool,
) -> tuple[list[x509.Certificate], frozenset[bytes], list[x509.Certificate]]:
    """(device roots, their SPKI pins, RIM roots)."""
    if trust_dir is not None:
        if device_root is not None or rim_root is not None or allow_other_roots:
            raise RootsError("--trust-dir replaces --device-root, --rim-root and "
                             "--allow-other-roots")  # fmt: skip
        try:
            roots = load_trust_dir(trust_dir)
        except TrustDirError as exc:
            raise RootsError(f"--trust-dir: {exc}") from None
        if not roots.device_roots or not roots.rim_roots:
            raise RootsError(
                f"--trust-dir {trust_dir}: needs NVIDIA's Device Identity CA and RIM root "
                "(verifier_device_root.pem, verifier_RIM_root.pem)"
            )
        return list(roots.device_roots), roots.device_spki_pins, list(roots.rim_roots)
    if device_root is None or rim_root is None:
        raise RootsError("name the roots: --trust-dir DIR, or --device-root and --rim-root")
    devices = _root_file(device_root, pinned=None, what="device root")
    if allow_other_roots:
        return (
            devices,
            frozenset(spki_sha256(r) for r in devices),
            rim_roots(rim_root, allow_other=True),
        )
    for root in devices:
        if spki_sha256(root) != DEVICE_ROOT_SPKI_SHA256:
            raise RootsError(
                f"device root {device_root}: {root.subject.rfc4514_string()} "
                f"(SHA-256 {root.fingerprint(hashes.SHA256()).hex()}) is not NVIDIA's "
                "pinned Device Identity CA; a test root needs --allow-other-roots"
            )
    return devices, frozenset({DEVICE_ROOT_SPKI_SHA256}), rim_roots(rim_root, allow_other=False)
