from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from verifier.x509chain import ChainError, verify_chain

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def make(
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    valid_days: int = 365,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, signer = (subject, key) if issuer is None else (issuer[0].subject, issuer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=valid_days))
    )
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    return builder.sign(signer, hashes.SHA256()), key


def test_leaf_chains_through_intermediate_to_root() -> None:
    root = make("root", None, ca=True)
    intermediate = make("intermediate", root, ca=True)
    leaf, _ = make("ek", intermediate, ca=False)
    path = verify_chain(leaf, trusted=[root[0], intermediate[0]], at=NOW)
    assert path == [leaf, intermediate[0], root[0]]


def test_unknown_root_is_refused() -> None:
    root = make("root", None, ca=True)
    other_root = make("root", None, ca=True)  # same name, different key
    leaf, _ = make("ek", root, ca=False)
    with pytest.raises(ChainError, match="no trusted issuer"):
        verify_chain(leaf, trusted=[other_root[0]], at=NOW)


def test_issuer_without_ca_flag_is_refused() -> None:
    root = make("root", None, ca=True)
    not_a_ca = make("intermediate", root, ca=False)
    leaf, _ = make("ek", not_a_ca, ca=False)
    with pytest.raises(ChainError, match="no trusted issuer"):
        verify_chain(leaf, trusted=[root[0], not_a_ca[0]], at=NOW)


def test_expired_certificate_is_refused() -> None:
    root = make("root", None, ca=True)
    leaf, _ = make("ek", root, ca=False, valid_days=-0)
    with pytest.raises(ChainError, match="not valid now"):
        verify_chain(leaf, trusted=[root[0]], at=NOW + timedelta(days=2))


def test_no_roots_configured_is_refused() -> None:
    root = make("root", None, ca=True)
    intermediate = make("intermediate", root, ca=True)
    leaf, _ = make("ek", intermediate, ca=False)
    with pytest.raises(ChainError, match="no self-signed root"):
        verify_chain(leaf, trusted=[intermediate[0]], at=NOW)
