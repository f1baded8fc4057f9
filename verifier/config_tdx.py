"""``[verifier.tdx]``: the Intel root and collateral TDX quotes on the stream are judged by.

Intel's SGX Root CA is pinned in code by its key (verifier/evidence/tdx/pki.py);
``trust_dir`` holds its certificate (``intel_sgx_root_ca.pem``), and any other
certificate there is refused naming the file. ``collateral_dir`` holds Intel PCS
collateral as PCS serves it (tcb_info.json, qe_identity.json,
tcb_signing_chain.pem, root_ca_crl.der, pck_crl.der; for a fleet of several
platforms also tcb_info_<fmspc>.json and pck_crl_<platform|processor>.der), re-read
every round so that an operator copying in newer files needs no restart and the
verifier no network.
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

from verifier.config_reader import table_reader
from verifier.evidence.tdx.pki import INTEL_ROOT_PINS, spki_sha256

__all__ = ["TdxConfig", "tdx_config"]

log = logging.getLogger(__name__)

_KEYS = {"trust_dir", "collateral_dir", "insecure_test_roots"}


@dataclass(frozen=True, slots=True)
class TdxConfig:
    root: x509.Certificate
    root_pins: frozenset[bytes]
    collateral_dir: Path
    test_roots_trusted: bool


def tdx_config(path: Path, text: str, raw: Any, base: Path) -> TdxConfig | None:
    """The ``[verifier.tdx]`` table, validated and with its root loaded; None if absent."""
    reader = table_reader(path, text, raw, "verifier.tdx", _KEYS)
    if reader is None:
        return None
    roots: list[x509.Certificate] = []
    trust_dir = reader.trust_dir(base)
    if trust_dir is not None:
        for file in sorted(trust_dir.glob("*.pem")):
            for certificate in reader.read_certificates("trust_dir", file):
                if spki_sha256(certificate) not in INTEL_ROOT_PINS:
                    raise reader.fail(
                        "trust_dir",
                        f"{file}: {certificate.subject.rfc4514_string()} is not Intel's SGX "
                        "Root CA (pinned in weightgate); a simulator's root belongs in "
                        "insecure_test_roots",
                    )
                roots.append(certificate)
    pins = INTEL_ROOT_PINS
    test_files = reader.file_names("insecure_test_roots")
    if test_files:
        tests = [
            c
            for name in test_files
            for c in reader.read_certificates("insecure_test_roots", base / name)
        ]
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
        collateral_dir=reader.directory("collateral_dir", base),
        test_roots_trusted=bool(test_files),
    )
