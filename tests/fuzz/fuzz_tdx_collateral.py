"""atheris harness for the Intel TDX collateral and PCK parsers (untrusted bytes).

Run: ``python tests/fuzz/fuzz_tdx_collateral.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one from the shared vectors' TCB
Infos, QE identities, CRLs, PEM chains and the quotes' PCK certificates, and from
collateral and certificates devsim.tdx makes in memory. The first byte selects the
parser: 0 TCB Info JSON, 1 QE Identity JSON, 2 CRL (DER or PEM), 3 PEM chain
(then each certificate's SGX extension, and the chain against the pinned Intel
root), 4 one DER certificate (armored as PEM, as a quote carries it, then the
same), 5 the SGX extension's DER value alone (the bounded DER walker). The
property: each returns a value consistent with its input or raises ParseError
(VerificationError for the chain check); anything else is a bug. ``fuzz_one`` is
importable so that the unit suite runs the same property without atheris
(tests/unit/test_fuzz_smoke_tdx_collateral.py).
"""

from __future__ import annotations

import base64
import contextlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from verifier.evidence.errors import ParseError
from verifier.evidence.tdx.collateral import (
    MAX_TCB_LEVELS,
    TCB_STATUSES,
    parse_qe_identity,
    parse_tcb_info,
)
from verifier.evidence.tdx.pck_extension import (
    COMPONENT_COUNT,
    SGX_EXTENSION_OID,
    PckTcb,
    parse_sgx_extension,
    read_pck_extension,
)
from verifier.evidence.tdx.pki import (
    check_crl,
    load_crl,
    parse_pem_certificates,
    verify_chain,
)
from verifier.verdict import VerificationError

TCB_INFO, QE_IDENTITY, CRL, CHAIN, DER_CERT, SGX_EXTENSION = range(6)
SELECTORS = 6
# Inside the validity of the vectors' Intel root and PCK certificates.
AT = datetime(2024, 6, 1, tzinfo=UTC)


@cache
def _intel_root() -> x509.Certificate | None:
    """The vectors' Intel SGX Root CA (None without the vectors: the chain check is skipped)."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    path = testvectors_root() / "tdx" / "intel_sgx_root_ca.pem"
    if not path.exists():
        return None
    return x509.load_pem_x509_certificate(path.read_bytes())


def _check_pck_tcb(tcb: PckTcb) -> None:
    assert len(tcb.fmspc) == 6 and len(tcb.pce_id) == 2 and len(tcb.cpu_svn) == 16
    assert len(tcb.sgx_tcb_components) == COMPONENT_COUNT
    assert all(0 <= svn <= 0xFF for svn in tcb.sgx_tcb_components)
    assert 0 <= tcb.pce_svn <= 0xFFFF and tcb.sgx_type >= 0


def _tcb_info(data: bytes) -> None:
    try:
        info = parse_tcb_info(data)
    except ParseError:
        return
    assert info.signed_bytes in data and len(info.signature) == 64
    assert len(info.fmspc) == 6 and len(info.pce_id) == 2
    assert 1 <= len(info.levels) <= MAX_TCB_LEVELS
    for level in info.levels:
        assert level.status in TCB_STATUSES and level.tcb_date.tzinfo is not None
        assert len(level.sgx_components) == len(level.tdx_components) == 16
    for module in (info.tdx_module, *info.module_identities):
        assert len(module.mr_signer) == 48 and len(module.attributes) == 8
    assert info.issue_date.tzinfo is not None and info.next_update.tzinfo is not None


def _qe_identity(data: bytes) -> None:
    try:
        identity = parse_qe_identity(data)
    except ParseError:
        return
    assert identity.signed_bytes in data and len(identity.signature) == 64
    assert len(identity.mr_signer) == 32 and len(identity.attributes) == 16
    assert 1 <= len(identity.levels) <= MAX_TCB_LEVELS
    assert all(level.status in TCB_STATUSES for level in identity.levels)


def _crl(data: bytes) -> None:
    try:
        crl = load_crl(data)
    except ParseError:
        return
    root = _intel_root()
    if root is not None:
        # The CRL judged as the root's (most mutations fail the issuer match first).
        reasons = check_crl(crl, issuer=root, covered=[root], at=AT, what="fuzz")
        assert all(reason.code.startswith("tdx.crl.") for reason in reasons)


def _certificates(certificates: list[x509.Certificate]) -> None:
    for certificate in certificates:
        with contextlib.suppress(ParseError):
            _check_pck_tcb(read_pck_extension(certificate))
    root = _intel_root()
    if root is None or not certificates:
        return
    try:
        path = verify_chain(certificates, root=root, at=AT, prefix="tdx.pck")
    except VerificationError as exc:
        assert exc.reason.code.startswith("tdx.pck.")
        return
    assert path[-1] == root


def _chain(data: bytes) -> None:
    try:
        certificates = parse_pem_certificates(data)
    except ParseError:
        return
    _certificates(certificates)


def _der_certificate(data: bytes) -> None:
    text = base64.b64encode(data)
    lines = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    _chain(b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n")


def _sgx_extension(data: bytes) -> None:
    try:
        tcb = parse_sgx_extension(data)
    except ParseError:
        return
    _check_pck_tcb(tcb)


def fuzz_one(data: bytes) -> None:
    """One fuzz input: a selector byte, then the bytes for that parser."""
    if not data:
        return
    selector, body = data[0] % SELECTORS, data[1:]
    (_tcb_info, _qe_identity, _crl, _chain, _der_certificate, _sgx_extension)[selector](body)


def _sgx_extension_value(certificate: x509.Certificate) -> bytes | None:
    try:
        value = certificate.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
    except x509.ExtensionNotFound:
        return None
    assert isinstance(value, x509.UnrecognizedExtension)
    return value.value


def _pck_chains() -> Iterator[bytes]:
    """The PEM PCK chain of every vector quote that carries one."""
    from tests.fuzz.fuzz_tdx_quote import seed_inputs as quotes  # noqa: PLC0415
    from verifier.evidence.tdx.quote import parse_quote, strip_zero_padding  # noqa: PLC0415

    for data in quotes():
        try:
            yield parse_quote(strip_zero_padding(data)[0]).certification.pck_chain_pem
        except ParseError:
            continue  # a quote without a PCK chain (SGX v3)


def _devsim_inputs() -> Iterator[bytes]:
    """Collateral, CRLs and certificates of a simulated TDX platform, made in memory."""
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    from devsim.tdx import collateral, pki  # noqa: PLC0415
    from devsim.tdx.model import PLATFORM  # noqa: PLC0415
    from devsim.x509util import Validity, pem  # noqa: PLC0415

    validity = Validity.starting(AT, 30)
    hierarchy = pki.make_hierarchy(PLATFORM, validity, ppid=bytes(16), instance_id=bytes(16))
    key: ec.EllipticCurvePrivateKey = hierarchy.tcb_signing_key
    yield bytes([TCB_INFO]) + collateral.tcb_info(PLATFORM, validity, key)
    yield bytes([QE_IDENTITY]) + collateral.qe_identity(PLATFORM, validity, key)
    for crl in (hierarchy.root_crl, hierarchy.pck_crl):
        yield bytes([CRL]) + crl.public_bytes(serialization.Encoding.DER)
    yield bytes([CHAIN]) + pem(hierarchy.pck, hierarchy.platform_ca, hierarchy.root)
    yield bytes([DER_CERT]) + hierarchy.pck.public_bytes(serialization.Encoding.DER)
    extension = _sgx_extension_value(hierarchy.pck)
    if extension is not None:
        yield bytes([SGX_EXTENSION]) + extension


def seed_inputs() -> Iterator[bytes]:
    """The vectors' collateral, CRLs, chains and PCK certificates, then devsim.tdx's."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    root = testvectors_root() / "tdx"
    for path in sorted(root.glob("*tcbinfo*.json")):
        yield bytes([TCB_INFO]) + path.read_bytes()
    for path in sorted(root.glob("*qe_identity*.json")):
        yield bytes([QE_IDENTITY]) + path.read_bytes()
    for path in sorted(root.glob("*crl*.der")):
        data = path.read_bytes()
        yield bytes([CRL]) + data
        crl = x509.load_der_x509_crl(data)
        yield bytes([CRL]) + crl.public_bytes(serialization.Encoding.PEM)
    for path in sorted(root.glob("*.pem")):
        yield bytes([CHAIN]) + path.read_bytes()
    for chain in _pck_chains():
        yield bytes([CHAIN]) + chain
        leaf = x509.load_pem_x509_certificates(chain)[0]
        yield bytes([DER_CERT]) + leaf.public_bytes(serialization.Encoding.DER)
        extension = _sgx_extension_value(leaf)
        if extension is not None:
            yield bytes([SGX_EXTENSION]) + extension
    yield from _devsim_inputs()


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("tdx_collateral", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
