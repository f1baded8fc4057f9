"""The TPM collector against a real swtpm: endorsement, AK, quotes, credential activation."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from tpm2_pytss import TPM2_ALG, TPM2B_NAME, TPM2B_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE
from tpm2_pytss.utils import make_credential

from agent.collectors.tpm import Tpm, TpmError, ak_name
from verifier.demo.swtpm import SwtpmProcess

pytestmark = pytest.mark.swtpm

AK_HANDLE = 0x81010002
ALL_PCRS = list(range(24))


def _rsa_key(public: bytes) -> rsa.RSAPublicKey:
    area = TPM2B_PUBLIC.unmarshal(public)[0].publicArea
    assert area.type == TPM2_ALG.RSA
    exponent = area.parameters.rsaDetail.exponent or 65537
    modulus = int.from_bytes(bytes(area.unique.rsa), "big")
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


@pytest.fixture
def tpm(swtpm: SwtpmProcess) -> Iterator[Tpm]:
    t = Tpm(swtpm.tcti)
    t.remove_ak(AK_HANDLE)
    yield t
    t.remove_ak(AK_HANDLE)


def test_ek_certificate_chains_to_local_ca_and_matches_ek(tpm: Tpm, swtpm: SwtpmProcess) -> None:
    endorsement = tpm.read_endorsement()
    cert = x509.load_der_x509_certificate(endorsement.ek_certificate)
    root, issuer = (
        x509.load_pem_x509_certificate(p.read_bytes()) for p in swtpm.ek_ca_certificates
    )

    cert.verify_directly_issued_by(issuer)
    issuer.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)

    cert_key = cert.public_key()
    assert isinstance(cert_key, rsa.RSAPublicKey)
    assert cert_key.public_numbers() == _rsa_key(endorsement.ek_public).public_numbers()
    # Recreating the EK from the template is deterministic.
    assert tpm.read_endorsement() == endorsement


def test_tpm_without_ek_certificate(swtpm_factory) -> None:  # type: ignore[no-untyped-def]
    bare = swtpm_factory(with_ek_certificate=False)
    assert bare.ek_ca_certificates == ()
    endorsement = Tpm(bare.tcti).read_endorsement()
    assert endorsement.ek_certificate == b""
    assert endorsement.ek_public


def test_ensure_ak_is_idempotent(tpm: Tpm) -> None:
    first = tpm.ensure_ak(AK_HANDLE)
    assert tpm.ensure_ak(AK_HANDLE) == first
    name = ak_name(first)
    assert name == bytes(TPM2B_PUBLIC.unmarshal(first)[0].get_name())
    assert name[:2] == b"\x00\x0b"
    tpm.remove_ak(AK_HANDLE)
    # A primary key derives from the endorsement seed and the template: recreating it
    # after eviction gives the same AK (only a TPM clear changes it).
    assert tpm.ensure_ak(AK_HANDLE) == first


def test_quote_verifies(tpm: Tpm) -> None:
    ak_public = tpm.ensure_ak(AK_HANDLE)
    nonce = secrets.token_bytes(32)
    quote = tpm.quote(ak_handle=AK_HANDLE, qualifying_data=nonce, selection={"sha256": ALL_PCRS})

    signature, used = TPMT_SIGNATURE.unmarshal(quote.signature)
    assert used == len(quote.signature)
    assert signature.sigAlg == TPM2_ALG.RSASSA
    _rsa_key(ak_public).verify(
        bytes(signature.signature.rsassa.sig),
        quote.attest,
        padding.PKCS1v15(),
        hashes.SHA256(),
    )

    attest, used = TPMS_ATTEST.unmarshal(quote.attest)
    assert used == len(quote.attest)
    assert bytes(attest.extraData) == nonce
    assert set(quote.pcrs) == {"sha256"}
    assert list(quote.pcrs["sha256"]) == ALL_PCRS
    concatenated = b"".join(quote.pcrs["sha256"][i] for i in ALL_PCRS)
    assert bytes(attest.attested.quote.pcrDigest) == hashlib.sha256(concatenated).digest()


def test_quote_of_more_than_eight_sparse_pcrs(tpm: Tpm) -> None:
    tpm.ensure_ak(AK_HANDLE)
    wanted = [0, 2, 4, 6, 8, 10, 12, 14, 16, 23]
    quote = tpm.quote(ak_handle=AK_HANDLE, qualifying_data=b"n", selection={"sha256": wanted})
    assert list(quote.pcrs["sha256"]) == wanted
    assert quote.pcrs == tpm.read_pcrs({"sha256": wanted})


def test_extend_changes_pcr(tpm: Tpm) -> None:
    before = tpm.read_pcrs({"sha256": [16]})["sha256"][16]
    tpm.extend_pcr(16, b"measurement")
    after = tpm.read_pcrs({"sha256": [16]})["sha256"][16]
    assert after == hashlib.sha256(before + hashlib.sha256(b"measurement").digest()).digest()


def test_unknown_or_inactive_bank_is_an_error(tpm: Tpm) -> None:
    with pytest.raises(TpmError, match="unknown PCR bank"):
        tpm.read_pcrs({"md5": [0]})
    with pytest.raises(TpmError, match="bank not active"):
        tpm.read_pcrs({"sha1": [0]})  # the test TPM activates sha256 only


def test_activate_credential_round_trip(tpm: Tpm) -> None:
    ak_public = tpm.ensure_ak(AK_HANDLE)
    ek_public = TPM2B_PUBLIC.unmarshal(tpm.read_endorsement().ek_public)[0]
    secret = secrets.token_bytes(32)
    blob, encrypted = make_credential(ek_public, secret, TPM2B_NAME(ak_name(ak_public)))

    recovered = tpm.activate_credential(
        ak_handle=AK_HANDLE,
        credential_blob=blob.marshal(),
        encrypted_secret=encrypted.marshal(),
    )
    assert recovered == secret


def test_credential_for_another_ak_fails(tpm: Tpm) -> None:
    tpm.ensure_ak(AK_HANDLE)
    ek_public = TPM2B_PUBLIC.unmarshal(tpm.read_endorsement().ek_public)[0]
    other_name = b"\x00\x0b" + hashlib.sha256(b"some other key").digest()
    blob, encrypted = make_credential(ek_public, secrets.token_bytes(32), TPM2B_NAME(other_name))

    with pytest.raises(TpmError):
        tpm.activate_credential(
            ak_handle=AK_HANDLE,
            credential_blob=blob.marshal(),
            encrypted_secret=encrypted.marshal(),
        )


def test_malformed_credential_is_rejected(tpm: Tpm) -> None:
    tpm.ensure_ak(AK_HANDLE)
    with pytest.raises(TpmError, match="malformed"):
        tpm.activate_credential(
            ak_handle=AK_HANDLE, credential_blob=b"\x00\x05ab", encrypted_secret=b""
        )


def test_quote_without_ak_fails(tpm: Tpm) -> None:
    with pytest.raises(TpmError, match="no AK"):
        tpm.quote(ak_handle=AK_HANDLE, qualifying_data=b"", selection={"sha256": [0]})


def test_unreachable_tpm() -> None:
    with pytest.raises(TpmError, match="cannot open TPM"):
        Tpm("swtpm:host=127.0.0.1,port=1").read_pcrs({"sha256": [0]})
