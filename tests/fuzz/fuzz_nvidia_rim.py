"""atheris harness for NVIDIA RIM verification (untrusted XML from a RIM service or cache).

Run: ``python tests/fuzz/fuzz_nvidia_rim.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one from every RIM listed in the
shared vectors' ``nvidia/expected_results.json``. The property: ``verify_rim``
returns a VerifiedRim or raises VerificationError; any other exception (from lxml,
signxml, cryptography) is a bug, and so is a hang (MAX_RIM_BYTES bounds the work).

Fuzzed bytes almost never carry a valid signature, which would leave the reader of
the signed data (rim_read.py) unfuzzed. So an input whose first byte is ``0`` is an
unsigned SWID document: the harness signs it with a test key under a test root
(pinned for that call only) and verifies the result, so that hostile *signed*
content reaches ``read_rim_content``. Every other input goes to ``verify_rim`` as is,
against the pinned NVIDIA RIM root and the test root.

``fuzz_one`` is importable so that the unit suite runs the same property without
atheris (tests/unit/test_fuzz_smoke_nvidia_rim.py).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import methods
from signxml.signer import XMLSigner

from verifier.evidence.nvidia.rim import VerifiedRim, verify_rim
from verifier.verdict import VerificationError

SIGN_SELECTOR = b"\x00"
# Inside the validity of the good shared RIM chains (550.144.03: 2024-12-30..2026-12-30)
# and of the test chain.
AT = datetime(2025, 6, 1, tzinfo=UTC)
_DS = "http://www.w3.org/2000/09/xmldsig#"
_C14N11 = "http://www.w3.org/2006/12/xml-c14n11"


@dataclass(frozen=True)
class Signer:
    root: x509.Certificate
    leaf: x509.Certificate
    key_pem: bytes


def _certificate(
    name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey]
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0] if issuer[0] else subject)
        .public_key(key.public_key())
        .serial_number(0x2000 + len(name))
        .not_valid_before(AT - timedelta(days=365))
        .not_valid_after(AT + timedelta(days=365))
        .add_extension(
            x509.BasicConstraints(ca=issuer[0] == x509.Name([]), path_length=None), critical=True
        )
        .sign(issuer[1], hashes.SHA384())
    )


@functools.cache
def fuzz_signer() -> Signer:
    """A fixed test root and P-384 RIM signer (deterministic keys)."""
    root_key = ec.derive_private_key(21, ec.SECP384R1())
    leaf_key = ec.derive_private_key(22, ec.SECP384R1())
    root = _certificate("Fuzz RIM Root", root_key, (x509.Name([]), root_key))
    leaf = _certificate("Fuzz RIM Signer", leaf_key, (root.subject, root_key))
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Signer(root=root, leaf=leaf, key_pem=key_pem)


@functools.cache
def nvidia_roots() -> tuple[x509.Certificate, ...]:
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    path = testvectors_root() / "nvidia" / "roots" / "verifier_RIM_root.pem"
    return tuple(x509.load_pem_x509_certificates(path.read_bytes()))


def sign(document: bytes) -> bytes | None:
    """``document`` with its signatures removed and an enveloped test signature added,
    or None when the harness cannot sign it (then there is nothing to verify)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.fromstring(document, parser=parser)
        for old in root.findall(f".//{{{_DS}}}Signature"):
            parent = old.getparent()
            if parent is not None:
                parent.remove(old)
        signer = fuzz_signer()
        signed = XMLSigner(
            method=methods.enveloped,
            signature_algorithm="ecdsa-sha384",
            digest_algorithm="sha384",
            c14n_algorithm=_C14N11,
        ).sign(root, key=signer.key_pem, cert=[signer.leaf, signer.root])
        return bytes(etree.tostring(signed))
    except Exception:
        return None


def fuzz_one(data: bytes) -> None:
    """One fuzz input: RIM bytes, or ``\\x00`` + a document for the harness to sign."""
    signer = fuzz_signer()
    if data[:1] == SIGN_SELECTOR:
        signed = sign(data[1:])
        if signed is None:
            return
        data = signed
    try:
        rim = verify_rim(data, pinned_roots=[*nvidia_roots(), signer.root], at=AT)
    except VerificationError:
        return
    assert isinstance(rim, VerifiedRim)
    indexes = [m.index for m in rim.measurements]
    assert indexes == sorted(set(indexes))
    assert all(len(a) == 48 for m in rim.measurements for a in m.alternatives)


def rim_seeds() -> Iterator[bytes]:
    """Every RIM listed in the shared vectors, smallest first."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    root = testvectors_root() / "nvidia"
    expected = json.loads((root / "expected_results.json").read_text())
    rims = {(root / entry["file"]).read_bytes() for entry in expected["rims"]}
    yield from sorted(rims, key=lambda r: (len(r), r))


def seed_inputs() -> Iterator[bytes]:
    """The RIMs as they are, and the smallest ones again to be re-signed by the harness."""
    seeds = list(rim_seeds())
    yield from seeds
    for rim in seeds[:4]:
        yield SIGN_SELECTOR + rim


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("nvidia_rim", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
