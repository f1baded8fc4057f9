"""NVIDIA device chains, FWID, report signature and nonce against the shared vectors.

Every evidence entry of ``nvidia/expected_results.json`` is a case; the chain,
FWID, UEID/hwmodel and signature must come out exactly as listed there.
Negative tests change one thing in a valid vector and expect one named reason.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.vectors import testvectors_root as vectors_root
from tests.vectors import vectors_dir
from verifier.evidence.errors import ParseError
from verifier.evidence.nvidia.chain import (
    DEVICE_ROOT_SPKI_SHA256,
    MAX_CHAIN_CERTS,
    spki_sha256,
    verify_device_chain,
)
from verifier.evidence.nvidia.dice import HOPPER_FWID_OID
from verifier.evidence.nvidia.signature import check_fwid, check_nonce, verify_report_signature
from verifier.verdict import VerificationError

# Inside every device certificate's window (2020-10-17 .. 9999-12-31).
AT = datetime(2025, 6, 1, tzinfo=UTC)
SDK = "attestation-sdk/nv-attestation-sdk-cpp/unit-tests/testdata"
SAMPLES = f"{SDK}/sample_attestation_data"
# Report file -> the chain file it was captured with (PROVENANCE.md 4.1).
CHAIN_OF_TEXT_REPORT = {
    "pypi_nv-local-gpu-verifier_2.0.0/attestationReport.txt": (
        "pypi_nv-local-gpu-verifier_2.0.0/gpuAkCertChain.txt"
    ),
    "pypi_nv-local-gpu-verifier_2.7.3/samples/hopperAttestationReport.txt": (
        "pypi_nv-local-gpu-verifier_2.7.3/samples/hopperCertChain.txt"
    ),
    f"{SDK}/hopperAttestationReport.txt": f"{SDK}/hopperCertChain.txt",
    f"{SDK}/switchAttestationReport.txt": f"{SDK}/switchCertChain.txt",
    f"{SAMPLES}/gpu/hopperAttestationReport.txt": f"{SAMPLES}/gpu/hopperCertChain.txt",
    f"{SAMPLES}/gpu/hopperAttestationReportExpired.txt": (
        f"{SAMPLES}/gpu/hopperCertChainExpired.txt"
    ),
    f"{SAMPLES}/gpu/hopperAttestationReportInvalidSignature.txt": (
        f"{SAMPLES}/gpu/hopperCertChainExpired.txt"
    ),
    f"{SAMPLES}/gpu/blackwellAttestationReport.txt": f"{SAMPLES}/gpu/blackwellCertChain.txt",
    f"{SAMPLES}/switch/switchAttestationReport.txt": f"{SAMPLES}/switch/switchCertChain.txt",
    f"{SAMPLES}/switch/switchAttestationReportInvalidSignature.txt": (
        f"{SAMPLES}/switch/switchCertChain.txt"
    ),
}


def _listed_evidence() -> list[str]:
    # Read at collection time so each vector is its own test id; when the
    # vectors are absent one placeholder case skips through vectors_dir().
    path = vectors_root() / "nvidia" / "expected_results.json"
    if not path.exists():
        return ["<vectors missing>"]
    return [entry["file"] for entry in json.loads(path.read_text())["evidence"]]


EVIDENCE = _listed_evidence()


@dataclass(frozen=True)
class Evidence:
    report: bytes
    chain_pem: bytes
    expected: dict[str, Any]

    @property
    def signed(self) -> bytes:
        return self.report[:-96]

    @property
    def signature(self) -> bytes:
        return self.report[-96:]

    @property
    def request_nonce(self) -> bytes:
        # SPDM GET_MEASUREMENTS: version, code, param1, param2, then the nonce.
        return self.report[4:36]


def load_evidence(name: str) -> Evidence:
    base = vectors_dir("nvidia")
    expected = {
        e["file"]: e for e in json.loads((base / "expected_results.json").read_text())["evidence"]
    }[name]
    if name.endswith("]"):
        file, index = name[:-1].split("[")
        entry = json.loads((base / file).read_text())[int(index)]
        report = base64.b64decode(entry["evidence"])
        chain_pem = base64.b64decode(entry["certificate"])
    else:
        report = bytes.fromhex((base / name).read_text().strip())
        chain_pem = (base / CHAIN_OF_TEXT_REPORT[name]).read_bytes()
    return Evidence(report, chain_pem, expected)


def device_root() -> x509.Certificate:
    path = vectors_dir("nvidia", "roots", "verifier_device_root.pem")
    return x509.load_pem_x509_certificate(path.read_bytes())


def code_of(info: pytest.ExceptionInfo[VerificationError]) -> str:
    return info.value.reason.code


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def pem_blocks(chain_pem: bytes) -> list[bytes]:
    return [
        c.public_bytes(serialization.Encoding.PEM)
        for c in x509.load_pem_x509_certificates(chain_pem)
    ]


# --- per-vector: chain, identity, FWID, signature, nonce -------------------------------


@pytest.mark.parametrize("name", EVIDENCE)
def test_chain_verifies_as_listed(name: str) -> None:
    ev = load_evidence(name)
    root = device_root()
    assert spki_sha256(root) == DEVICE_ROOT_SPKI_SHA256
    if not ev.expected["cert_chain_anchors_to_pinned_device_root"]:
        with pytest.raises(VerificationError):
            verify_device_chain(ev.chain_pem, pinned_roots=[root], at=AT)
        return
    chain = verify_device_chain(ev.chain_pem, pinned_roots=[root], at=AT)
    assert chain.root is root  # the pinned object, never the device's copy
    assert len(chain.certificates) == 5
    assert chain.fwid.hex() == ev.expected["leaf_fwid"]
    assert str(chain.ueid) == ev.expected["ueid"]
    assert chain.hwmodel == ev.expected["hwmodel"]
    subjects = [c.subject.rfc4514_string() for c in chain.certificates]
    assert subjects == ev.expected["cert_chain_subjects"]


@pytest.mark.parametrize("name", EVIDENCE)
def test_report_fwid_matches_leaf_as_listed(name: str) -> None:
    ev = load_evidence(name)
    chain = verify_device_chain(ev.chain_pem, pinned_roots=[device_root()], at=AT)
    report_fwid = ev.expected["opaque_decoded"].get("FWID")
    if report_fwid is None:  # old firmware / NVSwitch: no FWID field in the report
        assert ev.expected["fwid_match"] is None
        return
    if ev.expected["fwid_match"]:
        check_fwid(chain.fwid, bytes.fromhex(report_fwid))
    else:
        with pytest.raises(VerificationError) as info:
            check_fwid(chain.fwid, bytes.fromhex(report_fwid))
        assert code_of(info) == "nvidia.report.fwid_mismatch"


@pytest.mark.parametrize("name", EVIDENCE)
def test_report_signature_as_listed(name: str) -> None:
    ev = load_evidence(name)
    assert len(ev.report) == ev.expected["report_len"]
    key = verify_device_chain(ev.chain_pem, pinned_roots=[device_root()], at=AT).leaf.public_key()
    if not ev.expected["report_signature_valid_ecdsa_p384_sha384"]:
        with pytest.raises(VerificationError) as info:
            verify_report_signature(ev.signed, ev.signature, key)
        assert code_of(info) == "nvidia.report.signature_invalid"
        return
    verify_report_signature(ev.signed, ev.signature, key)
    # One bit in the signed bytes (inside the nonce, then the last byte), in r, in s.
    mutations = [
        (flip(ev.signed, 10), ev.signature),
        (flip(ev.signed, len(ev.signed) - 1), ev.signature),
        (ev.signed, flip(ev.signature, 20)),
        (ev.signed, flip(ev.signature, 48 + 20)),
    ]
    for signed, signature in mutations:
        with pytest.raises(VerificationError) as info:
            verify_report_signature(signed, signature, key)
        assert code_of(info) == "nvidia.report.signature_invalid"


@pytest.mark.parametrize("name", EVIDENCE)
def test_request_nonce_as_listed(name: str) -> None:
    ev = load_evidence(name)
    expected = bytes.fromhex(ev.expected["request"]["nonce"])
    check_nonce(expected, ev.request_nonce)
    with pytest.raises(VerificationError) as info:
        check_nonce(flip(expected, 31), ev.request_nonce)
    assert code_of(info) == "nvidia.report.nonce_mismatch"


def test_nonce_compare_refuses_a_short_expected_nonce() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        check_nonce(b"", b"")


def test_signature_of_another_gpu_fails() -> None:
    # PROVENANCE V1-chain: the V1 report checked with another GPU's leaf key.
    v1 = load_evidence("pypi_nv-local-gpu-verifier_2.0.0/attestationReport.txt")
    other = load_evidence("pypi_nv-local-gpu-verifier_2.7.3/samples/hopperAttestationReport.txt")
    key = verify_device_chain(other.chain_pem, pinned_roots=[device_root()], at=AT).leaf
    with pytest.raises(VerificationError) as info:
        verify_report_signature(v1.signed, v1.signature, key.public_key())
    assert code_of(info) == "nvidia.report.signature_invalid"


# --- the trust anchor is ours, never the device's ---------------------------------------

HOPPER = "pypi_nv-local-gpu-verifier_2.7.3/samples/hopperAttestationReport.txt"


def _p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def self_made_root(subject: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )


def test_sent_root_is_ignored_even_when_swapped_for_a_look_alike() -> None:
    ev = load_evidence(HOPPER)
    root = device_root()
    fake = self_made_root(root.subject, _p384())
    swapped = b"".join(
        [*pem_blocks(ev.chain_pem)[:-1], fake.public_bytes(serialization.Encoding.PEM)]
    )
    chain = verify_device_chain(swapped, pinned_roots=[root], at=AT)
    assert chain.root is root
    assert fake not in chain.certificates
    # With the device's root copy removed altogether the result is the same.
    without = b"".join(pem_blocks(ev.chain_pem)[:-1])
    assert verify_device_chain(without, pinned_roots=[root], at=AT).root is root


def test_look_alike_root_as_anchor_is_untrusted() -> None:
    ev = load_evidence(HOPPER)
    fake = self_made_root(device_root().subject, _p384())
    with pytest.raises(VerificationError) as info:
        verify_device_chain(ev.chain_pem, pinned_roots=[fake], at=AT, spki_pins={spki_sha256(fake)})
    assert code_of(info) == "nvidia.chain.untrusted"


def test_unpinned_root_is_refused_as_configuration() -> None:
    ev = load_evidence(HOPPER)
    fake = self_made_root(device_root().subject, _p384())
    with pytest.raises(ValueError, match="not pinned"):
        verify_device_chain(ev.chain_pem, pinned_roots=[fake], at=AT)


def test_rim_root_is_not_a_device_root() -> None:
    ev = load_evidence(HOPPER)
    wrong = x509.load_pem_x509_certificate(
        vectors_dir("nvidia", SDK, "incorrect_rim_root.crt").read_bytes()
    )
    with pytest.raises(ValueError, match="not pinned"):
        verify_device_chain(ev.chain_pem, pinned_roots=[wrong], at=AT)
    with pytest.raises(VerificationError) as info:
        verify_device_chain(
            ev.chain_pem, pinned_roots=[wrong], at=AT, spki_pins={spki_sha256(wrong)}
        )
    assert code_of(info) == "nvidia.chain.untrusted"


# --- validity and structure --------------------------------------------------------------


def test_after_not_after_is_expired() -> None:
    ev = load_evidence(HOPPER)
    with pytest.raises(VerificationError) as info:
        verify_device_chain(
            ev.chain_pem, pinned_roots=[device_root()], at=datetime.max.replace(tzinfo=UTC)
        )
    assert code_of(info) == "nvidia.chain.expired"


def test_before_not_before_is_not_yet_valid() -> None:
    ev = load_evidence(HOPPER)
    with pytest.raises(VerificationError) as info:
        verify_device_chain(
            ev.chain_pem, pinned_roots=[device_root()], at=datetime(2019, 1, 1, tzinfo=UTC)
        )
    assert code_of(info) == "nvidia.chain.not_yet_valid"


def test_naive_time_is_a_caller_error() -> None:
    ev = load_evidence(HOPPER)
    with pytest.raises(ValueError, match="timezone"):
        verify_device_chain(ev.chain_pem, pinned_roots=[device_root()], at=datetime(2025, 1, 1))


def test_missing_link_is_malformed() -> None:
    ev = load_evidence(HOPPER)
    blocks = pem_blocks(ev.chain_pem)
    with pytest.raises(VerificationError) as info:
        verify_device_chain(b"".join([blocks[0], *blocks[2:]]), pinned_roots=[device_root()], at=AT)
    assert code_of(info) == "nvidia.chain.malformed"


def test_leaf_signature_flip_is_signature_invalid() -> None:
    ev = load_evidence(HOPPER)
    blocks = pem_blocks(ev.chain_pem)
    leaf_der = x509.load_pem_x509_certificate(blocks[0]).public_bytes(serialization.Encoding.DER)
    # The DER ends with the signature's s integer: one bit there breaks only the signature.
    tampered = x509.load_der_x509_certificate(flip(leaf_der, len(leaf_der) - 1))
    pem = b"".join([tampered.public_bytes(serialization.Encoding.PEM), *blocks[1:]])
    with pytest.raises(VerificationError) as info:
        verify_device_chain(pem, pinned_roots=[device_root()], at=AT)
    assert code_of(info) == "nvidia.chain.signature_invalid"


def test_remembered_links_never_vouch_for_other_bytes() -> None:
    """The genuine chain verifies (its links are now remembered); a leaf whose
    signature differs by one bit still fails, and the genuine one still passes."""
    ev = load_evidence(HOPPER)
    blocks = pem_blocks(ev.chain_pem)
    verify_device_chain(ev.chain_pem, pinned_roots=[device_root()], at=AT)
    leaf_der = x509.load_pem_x509_certificate(blocks[0]).public_bytes(serialization.Encoding.DER)
    tampered = x509.load_der_x509_certificate(flip(leaf_der, len(leaf_der) - 1))
    pem = b"".join([tampered.public_bytes(serialization.Encoding.PEM), *blocks[1:]])
    for _ in range(2):
        with pytest.raises(VerificationError) as info:
            verify_device_chain(pem, pinned_roots=[device_root()], at=AT)
        assert code_of(info) == "nvidia.chain.signature_invalid"
    again = verify_device_chain(ev.chain_pem, pinned_roots=[device_root()], at=AT)
    assert again.leaf == x509.load_pem_x509_certificate(blocks[0])
    with pytest.raises(VerificationError) as late:
        verify_device_chain(
            ev.chain_pem, pinned_roots=[device_root()], at=datetime.max.replace(tzinfo=UTC)
        )
    assert code_of(late) == "nvidia.chain.expired", "validity is checked on every call"


def test_only_a_root_is_malformed() -> None:
    ev = load_evidence(HOPPER)
    with pytest.raises(VerificationError) as info:
        verify_device_chain(pem_blocks(ev.chain_pem)[-1], pinned_roots=[device_root()], at=AT)
    assert code_of(info) == "nvidia.chain.malformed"


@pytest.mark.parametrize(
    "data",
    [b"", b"not a certificate", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
)
def test_garbage_is_a_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        verify_device_chain(data, pinned_roots=[device_root()], at=AT)


def test_too_many_certificates_is_a_parse_error() -> None:
    ev = load_evidence(HOPPER)
    with pytest.raises(ParseError) as info:
        verify_device_chain(
            ev.chain_pem * (MAX_CHAIN_CERTS // 5 + 1), pinned_roots=[device_root()], at=AT
        )
    assert info.value.code == "too_large"


# --- synthetic chains for what the vectors cannot show ----------------------------------


@dataclass
class Synthetic:
    root: x509.Certificate
    pem: bytes


def _hopper_fwid_ext(key: ec.EllipticCurvePrivateKey, digest: bytes) -> x509.UnrecognizedExtension:
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fwid = bytes.fromhex("303d0609608648016503040202") + b"\x04\x30" + digest
    body = b"\x02\x01\x01" + spki + fwid
    return x509.UnrecognizedExtension(HOPPER_FWID_OID, b"\x30\x81" + bytes([len(body)]) + body)


def synthetic_chain(
    *, leaf_until: datetime, ca_path_length: int | None = None, intermediate_is_ca: bool = True
) -> Synthetic:
    """Test root -> intermediate -> extra CA -> leaf (with a Hopper FWID)."""
    root_key, mid_key, low_key, leaf_key = _p384(), _p384(), _p384(), _p384()
    root = self_made_root(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")]), root_key
    )

    def issue(
        name: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Certificate,
        issuer_key: ec.EllipticCurvePrivateKey,
        *,
        ca: bool | None,
        path_length: int | None = None,
        until: datetime = datetime(2039, 1, 1, tzinfo=UTC),
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime(2021, 1, 1, tzinfo=UTC))
            .not_valid_after(until)
        )
        if ca is not None:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=ca, path_length=path_length), critical=True
            )
        else:
            builder = builder.add_extension(_hopper_fwid_ext(key, b"\x11" * 48), critical=False)
        return builder.sign(issuer_key, hashes.SHA384())

    mid = issue("mid", mid_key, root, root_key, ca=intermediate_is_ca, path_length=ca_path_length)
    low = issue("low", low_key, mid, mid_key, ca=True)
    leaf = issue("leaf", leaf_key, low, low_key, ca=None, until=leaf_until)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, low, mid, root))
    return Synthetic(root, pem)


def verify_synthetic(s: Synthetic, at: datetime = AT) -> None:
    verify_device_chain(s.pem, pinned_roots=[s.root], at=at, spki_pins={spki_sha256(s.root)})


def test_synthetic_chain_verifies_with_an_explicitly_pinned_test_root() -> None:
    s = synthetic_chain(leaf_until=datetime(2030, 1, 1, tzinfo=UTC))
    chain = verify_device_chain(
        s.pem, pinned_roots=[s.root], at=AT, spki_pins={spki_sha256(s.root)}
    )
    assert chain.fwid == b"\x11" * 48


def test_expired_leaf_fails_expired() -> None:
    s = synthetic_chain(leaf_until=AT - timedelta(days=1))
    with pytest.raises(VerificationError) as info:
        verify_synthetic(s)
    assert code_of(info) == "nvidia.chain.expired"


def test_path_length_is_enforced() -> None:
    s = synthetic_chain(leaf_until=datetime(2030, 1, 1, tzinfo=UTC), ca_path_length=0)
    with pytest.raises(VerificationError) as info:
        verify_synthetic(s)
    assert code_of(info) == "nvidia.chain.constraints_violated"


def test_issuer_must_be_a_ca() -> None:
    s = synthetic_chain(leaf_until=datetime(2030, 1, 1, tzinfo=UTC), intermediate_is_ca=False)
    with pytest.raises(VerificationError) as info:
        verify_synthetic(s)
    assert code_of(info) == "nvidia.chain.constraints_violated"
