"""NVIDIA's roots from a trust directory: only the ones pinned in code are accepted.

STYLE.md ("Verifying evidence" 7): vendor roots are pinned by fingerprint in code and
their certificates are loaded from a configured directory. Every certificate found
must be NVIDIA's Device Identity CA (pinned by SPKI SHA-256) or NVIDIA's RIM root
(pinned by certificate SHA-256); anything else is refused, naming the file, so a
foreign root cannot be slipped in by dropping a file there.

Test roots (a simulator's) are accepted only through :func:`load_test_roots`,
which callers reach from an explicitly named test setting, never by default; a CA
certificate whose subject mentions "RIM" is taken as a RIM root, any other as a
device root.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from verifier.evidence.bounded_file import MAX_ROOT_FILE_BYTES, read_pem_certificates
from verifier.evidence.nvidia.chain import DEVICE_ROOT_SPKI_SHA256, spki_sha256
from verifier.evidence.nvidia.rim_chain import NVIDIA_RIM_ROOT_SHA256

__all__ = ["NvidiaRoots", "TrustDirError", "load_test_roots", "load_trust_dir"]


class TrustDirError(ValueError):
    """A trust directory or root file is unusable; the message names the file."""


@dataclass(frozen=True)
class NvidiaRoots:
    device_roots: tuple[x509.Certificate, ...]
    rim_roots: tuple[x509.Certificate, ...]

    def __add__(self, other: NvidiaRoots) -> NvidiaRoots:
        return NvidiaRoots(self.device_roots + other.device_roots, self.rim_roots + other.rim_roots)

    @property
    def device_spki_pins(self) -> frozenset[bytes]:
        return frozenset(spki_sha256(root) for root in self.device_roots)


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def _sorted(files: Iterable[Path], *, pinned_only: bool) -> NvidiaRoots:
    devices: list[x509.Certificate] = []
    rims: list[x509.Certificate] = []
    for path in files:
        for certificate in read_pem_certificates(path, MAX_ROOT_FILE_BYTES, TrustDirError):
            name = certificate.subject.rfc4514_string()
            if spki_sha256(certificate) == DEVICE_ROOT_SPKI_SHA256:
                devices.append(certificate)
            elif certificate.fingerprint(hashes.SHA256()).hex() == NVIDIA_RIM_ROOT_SHA256:
                rims.append(certificate)
            elif pinned_only:
                raise TrustDirError(
                    f"{path}: {name} is neither NVIDIA's Device Identity CA nor NVIDIA's RIM "
                    "root (both are pinned in weightgate); a simulator's root needs the "
                    "explicit test setting"
                )
            elif not _is_ca(certificate):
                raise TrustDirError(f"{path}: {name} is not a CA certificate")
            elif "RIM" in name.upper():
                rims.append(certificate)
            else:
                devices.append(certificate)
    return NvidiaRoots(tuple(devices), tuple(rims))


def load_trust_dir(directory: Path) -> NvidiaRoots:
    """NVIDIA's pinned roots from the ``*.pem`` files of ``directory``."""
    if not directory.is_dir():
        raise TrustDirError(f"{directory} is not a directory")
    return _sorted(sorted(directory.glob("*.pem")), pinned_only=True)


def load_test_roots(files: Iterable[Path]) -> NvidiaRoots:
    """Roots of a simulator, for an explicitly named test setting only."""
    return _sorted(files, pinned_only=False)
