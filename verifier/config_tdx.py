"""``[verifier.tdx]``: the Intel root and collateral TDX quotes on the stream are judged by.

Intel's SGX Root CA is pinned in code by its key (verifier/evidence/tdx/pki.py);
``trust_dir`` holds its certificate (``intel_sgx_root_ca.pem``), and any other
certificate there is refused naming the file. ``collateral_dir`` holds Intel PCS
collateral as PCS serves it (tcb_info.json, qe_identity.json,
tcb_signing_chain.pem, root_ca_crl.der, pck_crl.der), re-read every round so that
an operator copying in newer files needs no restart and the verifier no network.
The one way to trust another root is ``insecure_test_roots``: a simulator's TEST
root (devsim), for tests and demos only, which then replaces Intel's::

    [verifier.tdx]
    trust_dir = "intel-roots"
    collateral_dir = "/var/lib/weightgate/intel-pcs"
    insecure_test_roots = []           # TEST ONLY
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from verifier.config_reader import ConfigError, Reader
from verifier.evidence.tdx.pki import INTEL_ROOT_PINS, spki_sha256

__all__ = ["TdxConfig", "tdx_config"]

log = logging.getLogger(__name__)

_MAX_ROOT_FILE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class TdxConfig:
    root: x509.Certificate
    root_pins: frozenset[bytes]
    collateral_dir: Path
    test_roots_trusted: bool


def _certificates(reader: Reader, key: str, path: Path) -> list[x509.Certificate]:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_ROOT_FILE_BYTES + 1)
    except OSError as exc:
        raise reader.fail(key, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_ROOT_FILE_BYTES:
        raise reader.fail(key, f"{path}: larger than {_MAX_ROOT_FILE_BYTES} bytes")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise reader.fail(key, f"{path}: not PEM certificates") from None


def _directory(reader: Reader, key: str, base: Path) -> Path:
    path: Path = base / reader.get(key, str, None, "a directory path")
    if not path.is_dir():
        raise reader.fail(key, f"{path} is not a directory")
    return path


def tdx_config(path: Path, text: str, raw: Any, base: Path) -> TdxConfig | None:
    """The ``[verifier.tdx]`` table, validated and with its root loaded; None if absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [verifier.tdx] must be a table")
    reader = Reader(path, text, "verifier.tdx", raw)
    reader.unknown_keys({"trust_dir", "collateral_dir", "insecure_test_roots"})
    roots: list[x509.Certificate] = []
    if "trust_dir" in raw or "insecure_test_roots" not in raw:
        trust_dir = _directory(reader, "trust_dir", base)
        for file in sorted(trust_dir.glob("*.pem")):
            for certificate in _certificates(reader, "trust_dir", file):
                if spki_sha256(certificate) not in INTEL_ROOT_PINS:
                    raise reader.fail(
                        "trust_dir",
                        f"{file}: {certificate.subject.rfc4514_string()} is not Intel's SGX "
                        "Root CA (pinned in weightgate); a simulator's root belongs in "
                        "insecure_test_roots",
                    )
                roots.append(certificate)
    pins = INTEL_ROOT_PINS
    test_files = reader.get("insecure_test_roots", list, [], "a list of PEM file paths")
    if not all(isinstance(name, str) for name in test_files):
        raise reader.fail("insecure_test_roots", "expected a list of PEM file paths")
    if test_files:
        tests = [c for name in test_files for c in _certificates(reader, "insecure_test_roots",
                                                                 base / name)]  # fmt: skip
        if len(tests) != 1:
            raise reader.fail("insecure_test_roots", "expected exactly one TEST root certificate")
        roots, pins = tests, frozenset({spki_sha256(tests[0])})
        log.warning(
            "[verifier.tdx] insecure_test_roots: TDX quotes are verified against a TEST root "
            "(%s), not Intel's (tests and demos only)",
            test_files[0],
        )
    if len(roots) != 1:
        raise reader.fail(
            "trust_dir", f"expected Intel's SGX Root CA once ({len(roots)} certificates found)"
        )
    return TdxConfig(
        root=roots[0],
        root_pins=pins,
        collateral_dir=_directory(reader, "collateral_dir", base),
        test_roots_trusted=bool(test_files),
    )
