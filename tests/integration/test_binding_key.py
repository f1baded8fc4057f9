"""The host binding key end to end on a real swtpm: the agent creates and certifies
it, the verifier authenticates the certification and wraps keys to it, the TPM
unwraps them only in the boot state the key was bound to."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Mapping, Sequence

import pytest
from tpm2_pytss import ESYS_TR, TPM2_ALG, TPM2_SE, TPM2B_DIGEST, TPMA_OBJECT, TPMT_SYM_DEF

from agent.collectors.binding_key import (
    _BINDING_ATTRIBUTES,
    BOOT_STATE_CHANGED,
    BindingKey,
    _binding_template,
    _branches,
    _esapi,
    _policy_digest,
    _srk,
    certify_binding_key,
    create_binding_key,
    unwrap_transport_key,
)
from agent.collectors.tpm import Tpm, TpmError, pcr_selection_list
from agent.keyunwrap import KeyUnwrapError, unwrap_data_keys
from verifier.evidence.tpm.certify import (
    AuthenticatedBindingKey,
    authenticate_binding_key,
    binding_key_policy_digest,
    policy_pcr_digest,
)
from verifier.evidence.tpm.parse import TpmPublic, parse_tpm2b_public
from verifier.keyrelease import wrap_for_binding_key
from verifier.verdict import VerificationError

pytestmark = pytest.mark.swtpm

AK_HANDLE = 0x81010002
BOOT_PCRS: Mapping[str, Sequence[int]] = {"sha256": list(range(8))}
CONTEXT = b"host=gpu-node-017|manifest=sha256:ab12|lease=42"
DATA_KEYS = {"shard-00": secrets.token_bytes(32), "shard-01": secrets.token_bytes(32)}


@dataclasses.dataclass
class Host:
    tpm: Tpm
    ak: TpmPublic

    def expected_policy(self, values: Mapping[str, Mapping[int, bytes]] | None = None) -> bytes:
        reference = values if values is not None else self.tpm.read_pcrs(BOOT_PCRS)
        return binding_key_policy_digest(selection=BOOT_PCRS, pcr_values=reference)

    def authenticate(
        self,
        key: BindingKey,
        *,
        nonce: bytes | None = None,
        expected_nonce: bytes | None = None,
        ak: TpmPublic | None = None,
        binding_public: bytes | None = None,
        expected_policy: bytes | None = None,
    ) -> AuthenticatedBindingKey:
        nonce = nonce or secrets.token_bytes(32)
        cert = certify_binding_key(self.tpm, key, ak_handle=AK_HANDLE, qualifying_data=nonce)
        return authenticate_binding_key(
            attest=cert.attest,
            signature=cert.signature,
            ak=ak or self.ak,
            binding_public=binding_public or key.public,
            expected_qualifying_data=expected_nonce or nonce,
            expected_policy_digest=expected_policy or self.expected_policy(),
        )


def _host(factory) -> Host:  # type: ignore[no-untyped-def]
    tpm = Tpm(factory(with_ek_certificate=False).tcti)
    return Host(tpm=tpm, ak=parse_tpm2b_public(tpm.ensure_ak(AK_HANDLE)))


@pytest.fixture(scope="module")
def host(swtpm_factory_module) -> Host:  # type: ignore[no-untyped-def]
    return _host(swtpm_factory_module)


@pytest.fixture(scope="module")
def other_host(swtpm_factory_module) -> Host:  # type: ignore[no-untyped-def]
    return _host(swtpm_factory_module)


def _rejection(call) -> VerificationError:  # type: ignore[no-untyped-def]
    with pytest.raises(VerificationError) as err:
        call()
    return err.value


def test_create_certify_wrap_unwrap(host: Host) -> None:
    key = create_binding_key(host.tpm, pcr_selection=BOOT_PCRS)
    assert dict(key.pcr_selection) == {"sha256": tuple(range(8))}
    authenticated = host.authenticate(key)
    assert authenticated.checks_run == {
        "binding.certify.parse",
        "binding.certify.signature",
        "binding.certify.nonce",
        "binding.key.name",
        "binding.key.attributes",
        "binding.key.strength",
        "binding.key.policy",
    }
    assert authenticated.name == parse_tpm2b_public(key.public).name

    wrapped = wrap_for_binding_key(authenticated, DATA_KEYS, context=CONTEXT)
    assert len(wrapped.encrypted_transport_key) == 256
    transport_key = bytearray(unwrap_transport_key(host.tpm, key, wrapped.encrypted_transport_key))
    assert unwrap_data_keys(transport_key, wrapped.wrapped_data_keys, CONTEXT) == DATA_KEYS

    # The data keys are bound to the context: another lease, host or manifest fails.
    with pytest.raises(KeyUnwrapError, match="do not authenticate"):
        unwrap_data_keys(transport_key, wrapped.wrapped_data_keys, CONTEXT + b"1")
    tampered = bytearray(wrapped.wrapped_data_keys)
    tampered[-1] ^= 1
    with pytest.raises(KeyUnwrapError, match="do not authenticate"):
        unwrap_data_keys(transport_key, bytes(tampered), CONTEXT)
    with pytest.raises(KeyUnwrapError, match="bad magic"):
        unwrap_data_keys(transport_key, b"WGK2" + wrapped.wrapped_data_keys[4:], CONTEXT)


def test_blob_survives_reconnects_and_is_reusable(host: Host) -> None:
    key = create_binding_key(host.tpm, pcr_selection=BOOT_PCRS)
    authenticated = host.authenticate(key)
    for _ in range(2):
        wrapped = wrap_for_binding_key(authenticated, {"k": b"\x01" * 32}, context=b"c")
        transport_key = unwrap_transport_key(host.tpm, key, wrapped.encrypted_transport_key)
        assert unwrap_data_keys(transport_key, wrapped.wrapped_data_keys, b"c") == {
            "k": b"\x01" * 32
        }


def test_changed_boot_state_makes_the_tpm_refuse(swtpm_factory) -> None:  # type: ignore[no-untyped-def]
    host = _host(swtpm_factory)
    key = create_binding_key(host.tpm, pcr_selection=BOOT_PCRS)
    reference = host.tpm.read_pcrs(BOOT_PCRS)
    authenticated = host.authenticate(key)
    wrapped = wrap_for_binding_key(authenticated, DATA_KEYS, context=CONTEXT)

    host.tpm.extend_pcr(7, b"unapproved bootloader")
    with pytest.raises(TpmError, match=BOOT_STATE_CHANGED.replace("(", r"\(").replace(")", r"\)")):
        unwrap_transport_key(host.tpm, key, wrapped.encrypted_transport_key)
    # The key can still be certified (that reveals nothing) and is still the key
    # for the reference state; a key created now is bound to the new state, which
    # the verifier refuses.
    host.authenticate(key, expected_policy=host.expected_policy(reference))
    stale = create_binding_key(host.tpm, pcr_selection=BOOT_PCRS)
    err = _rejection(
        lambda: host.authenticate(stale, expected_policy=host.expected_policy(reference))
    )
    assert err.reason.code == "binding.key.policy_mismatch"


def test_policy_pcr_digest_matches_the_tpm_reading_its_pcrs(host: Host) -> None:
    host.tpm.extend_pcr(4, b"some boot component")
    for selection in ({"sha256": [0]}, {"sha256": list(range(8))}, {"sha256": [4, 16, 23]}):
        values = host.tpm.read_pcrs(selection)
        for alg in ("sha256", "sha384"):
            with _esapi(host.tpm) as (ectx, _):
                trial = ectx.start_auth_session(
                    ESYS_TR.NONE,
                    ESYS_TR.NONE,
                    TPM2_SE.TRIAL,
                    TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                    TPM2_ALG.SHA384 if alg == "sha384" else TPM2_ALG.SHA256,
                )
                # An empty pcrDigest: the TPM hashes its current PCR values itself.
                ectx.policy_pcr(trial, TPM2B_DIGEST(), pcr_selection_list(selection))
                from_tpm = bytes(ectx.policy_get_digest(trial))
                ectx.flush_context(trial)
            ours = policy_pcr_digest(name_algorithm=alg, selection=selection, pcr_values=values)
            assert ours == from_tpm, (selection, alg)


def test_wrong_nonce(host: Host) -> None:
    key = create_binding_key(host.tpm, pcr_selection=BOOT_PCRS)
    err = _rejection(lambda: host.authenticate(key, expected_nonce=b"another nonce"))
    assert err.reason.code == "binding.certify.nonce_mismatch"
    assert err.checks_run == {"binding.certify.parse", "binding.certify.signature"}


def test_certified_by_another_tpms_ak(host: Host, other_host: Host) -> None:
    key = create_binding_key(other_host.tpm, pcr_selection=BOOT_PCRS)
    err = _rejection(
        lambda: other_host.authenticate(
            key, ak=host.ak, expected_policy=other_host.expected_policy()
        )
    )
    assert err.reason.code == "binding.certify.signature_invalid"


def test_key_with_user_with_auth_is_refused(host: Host) -> None:
    values = host.tpm.read_pcrs(BOOT_PCRS)
    pcr_digest = hashlib.sha256(b"".join(values["sha256"][i] for i in range(8))).digest()
    with _esapi(host.tpm) as (ectx, transients):
        policy = _policy_digest(ectx, _branches(ectx, pcr_selection_list(BOOT_PCRS), pcr_digest))
        private, public, _, _, _ = ectx.create(
            _srk(ectx, transients),
            None,
            _binding_template(policy, attributes=_BINDING_ATTRIBUTES | TPMA_OBJECT.USERWITHAUTH),
        )
    key = BindingKey(
        private=bytes(private.marshal()),
        public=bytes(public.marshal()),
        pcr_selection={"sha256": tuple(range(8))},
        pcr_digest=pcr_digest,
    )
    err = _rejection(lambda: host.authenticate(key))
    assert err.reason.code == "binding.key.attributes_invalid"
    assert "USER_WITH_AUTH" in err.reason.detail


def test_policy_for_other_pcr_values(host: Host) -> None:
    key = create_binding_key(host.tpm, pcr_selection=BOOT_PCRS)
    reference = host.tpm.read_pcrs(BOOT_PCRS)
    reference["sha256"][7] = hashlib.sha256(b"the approved boot state").digest()
    err = _rejection(
        lambda: host.authenticate(key, expected_policy=host.expected_policy(reference))
    )
    assert err.reason.code == "binding.key.policy_mismatch"
    assert "binding.key.attributes" in err.checks_run


def test_certified_key_swapped_for_another(host: Host) -> None:
    certified = create_binding_key(host.tpm, pcr_selection=BOOT_PCRS)
    swapped = create_binding_key(host.tpm, pcr_selection=BOOT_PCRS)
    err = _rejection(lambda: host.authenticate(certified, binding_public=swapped.public))
    assert err.reason.code == "binding.key.name_mismatch"


def test_tampered_certification(host: Host) -> None:
    key = create_binding_key(host.tpm, pcr_selection=BOOT_PCRS)
    nonce = secrets.token_bytes(32)
    cert = certify_binding_key(host.tpm, key, ak_handle=AK_HANDLE, qualifying_data=nonce)
    attest = bytearray(cert.attest)
    attest[-1] ^= 1  # last byte of the certified qualifiedName
    err = _rejection(
        lambda: authenticate_binding_key(
            attest=bytes(attest),
            signature=cert.signature,
            ak=host.ak,
            binding_public=key.public,
            expected_qualifying_data=nonce,
            expected_policy_digest=host.expected_policy(),
        )
    )
    assert err.reason.code == "binding.certify.signature_invalid"


def test_a_quote_is_not_a_certification(host: Host) -> None:
    key = create_binding_key(host.tpm, pcr_selection=BOOT_PCRS)
    nonce = secrets.token_bytes(32)
    quote = host.tpm.quote(ak_handle=AK_HANDLE, qualifying_data=nonce, selection=BOOT_PCRS)
    err = _rejection(
        lambda: authenticate_binding_key(
            attest=quote.attest,
            signature=quote.signature,
            ak=host.ak,
            binding_public=key.public,
            expected_qualifying_data=nonce,
            expected_policy_digest=host.expected_policy(),
        )
    )
    assert err.reason.code == "binding.certify.not_a_certification"


def test_authenticated_key_cannot_be_forged(host: Host) -> None:
    key = create_binding_key(host.tpm, pcr_selection=BOOT_PCRS)
    authenticated = host.authenticate(key)
    other = parse_tpm2b_public(create_binding_key(host.tpm, pcr_selection=BOOT_PCRS).public)
    with pytest.raises(TypeError):
        dataclasses.replace(authenticated, public=other)
    with pytest.raises(TypeError):
        AuthenticatedBindingKey(
            public=other, certification=authenticated.certification, checks_run=frozenset()
        )
    with pytest.raises(TypeError):
        wrap_for_binding_key(other, DATA_KEYS, context=CONTEXT)  # type: ignore[arg-type]


def test_garbage_transport_key_is_a_tpm_error(host: Host) -> None:
    key = create_binding_key(host.tpm, pcr_selection=BOOT_PCRS)
    with pytest.raises(TpmError, match="could not decrypt"):
        unwrap_transport_key(host.tpm, key, b"\x01" * 256)
