"""atheris harness for the NVIDIA device-certificate parsers (untrusted bytes from the GPU).

Run: ``python tests/fuzz/fuzz_nvidia_chain.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one from every distinct device chain
in the shared vectors' ``nvidia/expected_results.json``, the FWID extensions of their
leaves, and OCSP responses built here under a test PKI (no real response was
captured, PROVENANCE.md). The first byte picks the target:

* ``0``: a concatenated-PEM chain: ``parse_pem_chain`` (ParseError only),
  ``leaf_fwid`` on every certificate that parsed (ParseError only), and
  ``verify_device_chain`` to the pinned NVIDIA root (ParseError, VerificationError);
* ``1``: a raw FWID extension value for both DER readers of dice.py (ParseError only);
* ``2``: an OCSP response for the test leaf: ``check_ocsp`` (VerificationError only;
  the harness never passes a non-issuer, the one caller mistake that is ValueError).

Anything else escaping is a bug. ``fuzz_one`` is importable so that the unit suite
runs the same property without atheris (tests/unit/test_fuzz_smoke_nvidia_chain.py).
"""

from __future__ import annotations

import base64
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
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from verifier.evidence.errors import ParseError
from verifier.evidence.nvidia.chain import parse_pem_chain, verify_device_chain
from verifier.evidence.nvidia.dice import (
    DICE_TCB_INFO_OID,
    HOPPER_FWID_OID,
    SHA384_LEN,
    hopper_fwid,
    leaf_fwid,
    tcb_info_fwid,
)
from verifier.evidence.nvidia.ocsp import check_ocsp
from verifier.verdict import VerificationError

CHAIN, FWID, OCSP = 0, 1, 2
TARGETS = 3

# Inside every shared device certificate's window and the test PKI's.
AT = datetime(2025, 6, 1, 12, tzinfo=UTC)
MAX_AGE = timedelta(days=7)
NONCE = bytes(range(32))


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class FuzzPki:
    root: Issued
    ica: Issued
    leaf: Issued
    responder: Issued  # under ica, id-kp-OCSPSigning
    vendor: Issued  # under root, id-kp-OCSPSigning (needs trusted_responder_roots)


def _issue(name: str, secret: int, issuer: Issued | None, *, ca: bool, ocsp_signer: bool) -> Issued:
    # Fixed keys and serials: every run builds the same certificates.
    key = ec.derive_private_key(secret, ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(0x1000 + secret)
        .not_valid_before(AT - timedelta(days=365))
        .not_valid_after(AT + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ocsp_signer:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA384()), key)


@functools.cache
def fuzz_pki() -> FuzzPki:
    root = _issue("Fuzz Device Root", 11, None, ca=True, ocsp_signer=False)
    ica = _issue("Fuzz Device ICA", 12, root, ca=True, ocsp_signer=False)
    return FuzzPki(
        root=root,
        ica=ica,
        leaf=_issue("Fuzz GPU", 13, ica, ca=False, ocsp_signer=False),
        responder=_issue("Fuzz OCSP", 14, ica, ca=False, ocsp_signer=True),
        vendor=_issue("Fuzz Vendor OCSP", 15, root, ca=False, ocsp_signer=True),
    )


@functools.cache
def device_root() -> x509.Certificate:
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    path = testvectors_root() / "nvidia" / "roots" / "verifier_device_root.pem"
    return x509.load_pem_x509_certificate(path.read_bytes())


def _chain(data: bytes) -> None:
    try:
        certificates = parse_pem_chain(data)
    except ParseError:
        return
    for certificate in certificates:
        # The FWID reader must cope with any certificate, not only a verified leaf.
        try:
            digest = leaf_fwid(certificate)
        except ParseError:
            continue
        assert len(digest) == SHA384_LEN
    try:
        chain = verify_device_chain(data, pinned_roots=[device_root()], at=AT)
    except (ParseError, VerificationError):
        return
    assert chain.root is device_root()
    assert len(chain.fwid) == SHA384_LEN


def _fwid(data: bytes) -> None:
    for reader in (hopper_fwid, tcb_info_fwid):
        try:
            digest = reader(data)
        except ParseError:
            continue
        assert len(digest) == SHA384_LEN
        assert digest in data


def _ocsp(data: bytes) -> None:
    pki = fuzz_pki()
    options = {
        "certificate": pki.leaf.cert,
        "issuer": pki.ica.cert,
        "at": AT,
        "max_age": MAX_AGE,
        "trusted_responder_roots": [pki.root.cert],
        "stale_grace": timedelta(days=1),
    }
    try:
        status = check_ocsp(data, **options)  # type: ignore[arg-type]
    except VerificationError:
        return
    assert status.serial == pki.leaf.cert.serial_number
    # A response that authenticates must still answer the nonce question cleanly.
    try:
        check_ocsp(data, nonce=NONCE, **options)  # type: ignore[arg-type]
    except VerificationError as exc:
        assert exc.reason.code == "nvidia.ocsp.nonce_mismatch"


def fuzz_one(data: bytes) -> None:
    """One fuzz input: selector byte (CHAIN, FWID, OCSP modulo 3), then that target's bytes."""
    if not data:
        return
    target = data[0] % TARGETS
    body = data[1:]
    if target == CHAIN:
        _chain(body)
    elif target == FWID:
        _fwid(body)
    else:
        _ocsp(body)


def chain_seeds() -> Iterator[bytes]:
    """Every distinct PEM chain in the shared NVIDIA vectors, leaf first as sent."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    root = testvectors_root() / "nvidia"
    seen: set[bytes] = set()
    for path in sorted(root.rglob("*CertChain*.txt")) + sorted(root.rglob("gpuAkCertChain.txt")):
        seen.add(path.read_bytes())
    expected = json.loads((root / "expected_results.json").read_text())
    for entry in expected["evidence"]:
        name: str = entry["file"]
        if name.endswith("]"):
            file, index = name[:-1].split("[")
            item = json.loads((root / file).read_text())[int(index)]
            seen.add(base64.b64decode(item["certificate"]))
    yield from sorted(seen)


def fwid_seeds() -> Iterator[bytes]:
    """The raw FWID extension values of every leaf in the shared chains."""
    values: set[bytes] = set()
    for pem in chain_seeds():
        for certificate in x509.load_pem_x509_certificates(pem):
            for extension in certificate.extensions:
                if extension.oid in (HOPPER_FWID_OID, DICE_TCB_INFO_OID):
                    assert isinstance(extension.value, x509.UnrecognizedExtension)
                    values.add(extension.value.value)
    yield from sorted(values)


def _response(
    signer: Issued,
    *,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    algorithm: hashes.HashAlgorithm | None = None,
    next_update: datetime | None = AT + timedelta(days=1),
    carry: tuple[x509.Certificate, ...] = (),
    by_name: bool = False,
    nonce: bytes | None = NONCE,
) -> bytes:
    pki = fuzz_pki()
    revoked = status is ocsp.OCSPCertStatus.REVOKED
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            pki.leaf.cert,
            pki.ica.cert,
            algorithm or hashes.SHA1(),
            status,
            AT - timedelta(hours=1),
            next_update,
            AT - timedelta(days=2) if revoked else None,
            x509.ReasonFlags.key_compromise if revoked else None,
        )
        .responder_id(
            ocsp.OCSPResponderEncoding.NAME if by_name else ocsp.OCSPResponderEncoding.HASH,
            signer.cert,
        )
    )
    if carry:
        builder = builder.certificates(list(carry))
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.sign(signer.key, hashes.SHA384()).public_bytes(serialization.Encoding.DER)


def ocsp_seeds() -> Iterator[bytes]:
    """Responses for the test leaf along every authorisation path check_ocsp knows."""
    pki = fuzz_pki()
    yield _response(pki.ica)
    yield _response(pki.ica, algorithm=hashes.SHA256(), nonce=None)
    yield _response(pki.ica, status=ocsp.OCSPCertStatus.REVOKED, next_update=None)
    yield _response(pki.ica, status=ocsp.OCSPCertStatus.UNKNOWN, next_update=AT)
    yield _response(pki.responder, carry=(pki.responder.cert,))
    yield _response(pki.responder, carry=(pki.responder.cert,), by_name=True)
    yield _response(pki.vendor, carry=(pki.vendor.cert, pki.ica.cert))
    yield ocsp.OCSPResponseBuilder.build_unsuccessful(
        ocsp.OCSPResponseStatus.TRY_LATER
    ).public_bytes(serialization.Encoding.DER)


def seed_inputs() -> Iterator[bytes]:
    """Every seed, prefixed with its target's selector byte."""
    for selector, seeds in ((CHAIN, chain_seeds), (FWID, fwid_seeds), (OCSP, ocsp_seeds)):
        for seed in seeds():
            yield bytes([selector]) + seed


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("nvidia_chain", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
