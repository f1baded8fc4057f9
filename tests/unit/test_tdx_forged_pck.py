"""Regressions from a security review: certificates that must never stand as the PCK or
the TCB signer.

1. A self-signed certificate sent before a genuine PCK chain signed the QE report
   (binding an attacker's attestation key) while the genuine chain behind it
   verified: the quote was affirmed with any MRTD and REPORTDATA, no TDX needed.
2. Any certificate chaining to Intel's root (a PCK CA, a PCK leaf) was accepted as
   the signer of TCB Info and QE Identity.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.tdx_vectors import AT_2023, intel_root, tdx_file
from verifier.evidence.tdx.offline import TdxCollateral, TdxEvidence, verify_tdx_offline
from verifier.evidence.tdx.policy import load_policy
from verifier.evidence.tdx.quote import parse_quote, strip_zero_padding

MRTD = bytes.fromhex("ab" * 48)
REPORT_DATA = bytes.fromhex("cd" * 64)
HEADER, BODY = 48, 584  # v4 quote header and TD 1.0 body


def _collateral(signing_chain: bytes | None = None) -> TdxCollateral:
    return TdxCollateral(
        tcb_info=tdx_file("gotdx_tcbinfo_fmspc_50806f000000.json"),
        qe_identity=tdx_file("gotdx_td_qe_identity_2023.json"),
        tcb_signing_chain=signing_chain or tdx_file("gotdx_tcb_signing_chain.extracted.pem"),
        root_ca_crl=tdx_file("gotdx_intel_root_ca_crl.der"),
        pck_crl=tdx_file("gotdx_pck_platform_crl.der"),
    )


def _rs(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _forged() -> bytes:
    """The genuine debug TD's quote, rebuilt by an attacker without TDX hardware."""
    raw, _ = strip_zero_padding(tdx_file("trustee_v4_quote_debug_td.dat"))
    quote = parse_quote(raw)
    attestation, qe = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anything")])
    evil = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(qe.public_key())
        .serial_number(1)
        .not_valid_before(AT_2023.replace(year=2020))
        .not_valid_after(AT_2023.replace(year=2040))
        .sign(qe, hashes.SHA256())
    )
    pem = evil.public_bytes(serialization.Encoding.PEM) + quote.certification.pck_chain_pem
    body = bytearray(raw[HEADER : HEADER + BODY])
    body[120] &= 0xFE  # TDATTRIBUTES: DEBUG cleared
    body[136:184] = MRTD
    body[520:584] = REPORT_DATA
    key = attestation.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )[1:]
    auth = quote.certification.qe_auth_data
    report = bytearray(quote.certification.qe_report.raw)
    report[320:384] = hashlib.sha256(key + auth).digest() + bytes(32)
    inner = struct.pack("<HI", 5, len(pem)) + pem
    cert6 = bytes(report) + _rs(qe, bytes(report)) + struct.pack("<H", len(auth)) + auth + inner
    signed = raw[:HEADER] + bytes(body)
    data = _rs(attestation, signed) + key + struct.pack("<HI", 6, len(cert6)) + cert6
    return signed + struct.pack("<I", len(data)) + data


def _codes(quote: bytes, collateral: TdxCollateral) -> list[str]:
    policy = load_policy(f'{{"version": 1, "mrtd": ["{MRTD.hex()}"]}}')
    report = verify_tdx_offline(
        TdxEvidence(
            quote=quote,
            root=intel_root(),
            at=AT_2023,
            collateral=collateral,
            policy=policy,
            expected_report_data=REPORT_DATA,
        )
    )
    return [r.code for r in report.verdict.reasons]


def test_a_self_signed_certificate_before_a_genuine_chain_is_refused() -> None:
    assert _codes(_forged(), _collateral()) == ["tdx.pck.chain_invalid"]


def test_a_pck_ca_is_not_a_tcb_signer() -> None:
    raw, _ = strip_zero_padding(tdx_file("trustee_v4_quote_debug_td.dat"))
    platform_ca_chain = tdx_file("gotdx_pckcrl_issuer_chain.extracted.pem")
    codes = _codes(raw, _collateral(platform_ca_chain))
    assert "tdx.collateral.signer.not_tcb_signing" in codes, codes
