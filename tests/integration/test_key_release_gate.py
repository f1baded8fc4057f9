"""The release gate over the real stream, driven by hand with a real swtpm.

One host walks from "no site" to "released": each step removes one reason and
the denial lists exactly the ones left. Then the released keys are unwrapped by
the TPM and decrypt the checkpoint bit-exact; after a PCR change the host is
untrusted, its release is revoked, and an AK-signed erase receipt closes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.collectors.binding_key import (
    BindingKey,
    certify_binding_key,
    create_binding_key,
    unwrap_transport_key,
)
from agent.collectors.tpm import Tpm, TpmError
from agent.keyunwrap import KeyUnwrapError, unwrap_data_keys
from tests.integration.test_attestation_flow import (
    AK_HANDLE,
    Stream,
    enroll,
    evidence_for,
    register,
    set_reference_from,
)
from tests.verifier_harness import VerifierHarness, running_verifier
from verifier.cli import main as weightgate
from verifier.keystore import FileKeyStore
from verifier.models.encrypt import encrypt_checkpoint
from weightgate.checkpoint.decrypt import decrypt_checkpoint
from weightgate.checkpoint.signature import sign_manifest, verify_manifest
from weightgate.v1 import attestation_pb2, common_pb2, operator_pb2

HOST = "gpu-node-1"
SEGMENT = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def tpm_process(swtpm_factory_module: Any) -> Any:
    return swtpm_factory_module()


@pytest.fixture(scope="module")
def tpm(tpm_process: Any) -> Tpm:
    return Tpm(tpm_process.tcti)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("checkpoint")
    (source / "config.json").write_text('{"layers": 2}')
    (source / "shards").mkdir()
    (source / "shards" / "model-00001.safetensors").write_bytes(os.urandom(SEGMENT * 2 + 17))
    (source / "shards" / "model-00002.safetensors").write_bytes(os.urandom(SEGMENT))
    return source


@pytest.fixture(scope="module")
def verifier(
    tmp_path_factory: pytest.TempPathFactory, tpm_process: Any
) -> Iterator[VerifierHarness]:
    state = tmp_path_factory.mktemp("verifier")
    with running_verifier(state, ek_ca_certificates=tpm_process.ek_ca_certificates) as harness:
        yield harness


def operator(verifier: VerifierHarness, *argv: str) -> None:
    code = weightgate([*argv, f"--verifier={verifier.address}", "--insecure"])
    assert code == 0, argv


@pytest.fixture(scope="module")
def model_digest(
    verifier: VerifierHarness, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> bytes:
    config = tmp_path_factory.mktemp("config") / "verifier.toml"
    config.write_text(
        f'[verifier]\nstate_dir = "{verifier.config.state_dir}"\ninsecure = true\n'
        "require_ek_certificate = false\n"
    )
    operator(verifier, "models", "add", "frontier", "--version", "1.0", "--path",
             str(checkpoint), "--risk-tier", "high", "--config", str(config))  # fmt: skip
    models = verifier.operator.ListModelVersions(operator_pb2.ListModelVersionsRequest()).models
    assert [(m.name, m.version, m.risk_tier, m.file_count) for m in models] == [
        ("frontier", "1.0", "high", 3)
    ]
    return bytes(models[0].manifest_digest)


@pytest.fixture(scope="module")
def stream(verifier: VerifierHarness, tpm: Tpm) -> Iterator[Stream]:
    register(verifier, HOST)
    set_reference_from(verifier, tpm)
    opened = Stream(verifier, HOST, enroll(verifier, tpm, HOST))
    yield opened
    opened.close()


class Agent:
    """Just enough of an agent: answers challenges, certifies a binding key."""

    def __init__(self, tpm: Tpm, stream: Stream) -> None:
        self.tpm = tpm
        self.stream = stream
        self.binding_key: BindingKey | None = None

    def attest(self) -> common_pb2.Verdict:
        challenge = self.stream.next_challenge()
        evidence = evidence_for(self.tpm, challenge)
        if challenge.HasField("binding_key"):
            request = challenge.binding_key
            selection = {s.hash_algorithm: list(s.pcrs) for s in request.pcr_selection}
            self.binding_key = create_binding_key(self.tpm, pcr_selection=selection)
            certification = certify_binding_key(
                self.tpm, self.binding_key, ak_handle=AK_HANDLE,
                qualifying_data=request.qualifying_data,
            )  # fmt: skip
            evidence.binding_key.CopyFrom(
                attestation_pb2.BindingKeyCertification(
                    public=self.binding_key.public,
                    attest=certification.attest,
                    signature=certification.signature,
                )
            )
        return self.stream.answer(evidence)

    def request(self, digest: bytes) -> attestation_pb2.VerifierMessage:
        return self.stream.send_and_receive(
            attestation_pb2.AgentMessage(
                release_request=attestation_pb2.ReleaseRequest(
                    request_id="r1", manifest_digest=digest
                )
            )
        )


def denial_codes(message: attestation_pb2.VerifierMessage) -> list[str]:
    assert message.WhichOneof("body") == "release_denied", message
    return sorted(r.code for r in message.release_denied.reasons)


def test_release_gate_end_to_end(
    verifier: VerifierHarness, tpm: Tpm, stream: Stream, model_digest: bytes, checkpoint: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    agent = Agent(tpm, stream)
    assert agent.attest().tier == common_pb2.TIER_AFFIRMING
    assert agent.binding_key is not None, "the first challenge asks for a binding key"

    unknown = agent.request(bytes(32))
    assert denial_codes(unknown) == ["release.model_unknown", "release.site_unassigned"]
    assert denial_codes(agent.request(model_digest)) == ["release.site_unassigned"]

    operator(verifier, "sites", "set", "eu-west", "--cleared", "low")
    operator(verifier, "hosts", "assign", HOST, "--site", "eu-west")
    assert denial_codes(agent.request(model_digest)) == [
        "release.review_missing",
        "release.site_not_cleared",
    ]
    operator(verifier, "sites", "set", "eu-west", "--cleared", "low,high")
    assert denial_codes(agent.request(model_digest)) == ["release.review_missing"]
    operator(verifier, "reviews", "propose", model_digest.hex(), "--site", "eu-west",
             "--categories", "cyber,autonomy", "--summary", "approved for eu-west")  # fmt: skip

    assert agent.attest().tier == common_pb2.TIER_AFFIRMING
    answer = agent.request(model_digest)
    assert answer.WhichOneof("body") == "key_release", answer
    release = answer.key_release

    # The agent's side: verify the manifest, unwrap in the TPM, decrypt bit-exact.
    keystore = FileKeyStore.open(verifier.config.keystore)
    public: Ed25519PublicKey = keystore.signing_public_key()
    manifest = verify_manifest(release.manifest, release.manifest_signature, public)
    assert manifest.digest() == model_digest
    transport = unwrap_transport_key(tpm, agent.binding_key, release.encrypted_transport_key)
    context = b"\x00".join(
        (b"weightgate/v1/release", HOST.encode(), release.release_id.encode(), model_digest)
    )
    keys = unwrap_data_keys(transport, release.wrapped_data_keys, context)
    output = tmp_path / "weights"
    decrypt_checkpoint(
        manifest,
        verifier.config.blob_dir / model_digest.hex(),
        output,
        {bytes.fromhex(file_id): key for file_id, key in keys.items()},
    )
    for original in checkpoint.rglob("*"):
        if original.is_file():
            copy = output / original.relative_to(checkpoint)
            assert copy.read_bytes() == original.read_bytes()

    # A wrong context (another host, another release) does not unwrap.
    with pytest.raises(KeyUnwrapError):
        unwrap_data_keys(transport, release.wrapped_data_keys, context + b"x")

    # The next affirming verdict renews the lease.
    verdict, renewal = agent.stream.answer_with_extra(agent_evidence(agent))
    assert verdict.tier == common_pb2.TIER_AFFIRMING
    assert renewal.WhichOneof("body") == "lease_renewal"
    assert renewal.lease_renewal.release_id == release.release_id

    # The site loses its clearance for the model's tier: the host is still
    # trusted, but the next round revokes the release under the policy.
    operator(verifier, "sites", "set", "eu-west", "--cleared", "low")
    verdict, lapsed = agent.stream.answer_with_extra(agent_evidence(agent))
    assert verdict.tier == common_pb2.TIER_AFFIRMING
    assert lapsed.WhichOneof("body") == "revocation", lapsed
    assert lapsed.revocation.release_id == release.release_id
    assert lapsed.revocation.reason.code == "release.revoked.policy"
    assert "release.site_not_cleared" in lapsed.revocation.reason.detail
    # Cleared again, the host gets a new release; the rest of the test follows it.
    operator(verifier, "sites", "set", "eu-west", "--cleared", "low,high")
    answer = agent.request(model_digest)
    assert answer.WhichOneof("body") == "key_release", answer
    release = answer.key_release

    # The boot state changes: the TPM refuses to unwrap, the host turns untrusted,
    # and its release is revoked and must be erased.
    tpm.extend_pcr(4, b"unapproved bootloader")
    with pytest.raises(TpmError, match="boot state"):
        unwrap_transport_key(tpm, agent.binding_key, release.encrypted_transport_key)
    verdict, revocation = agent.stream.answer_with_extra(agent_evidence(agent))
    assert verdict.tier == common_pb2.TIER_CONTRAINDICATED
    assert revocation.WhichOneof("body") == "revocation"
    assert revocation.revocation.reason.code == "release.revoked.untrusted"
    denied = agent.request(model_digest)
    assert "release.host_untrusted" in denial_codes(denied)

    quote = tpm.quote(
        ak_handle=AK_HANDLE,
        qualifying_data=revocation.revocation.qualifying_data,
        selection={"sha256": [0]},
    )
    agent.stream.send(
        attestation_pb2.AgentMessage(
            erase_receipt=attestation_pb2.EraseReceipt(
                release_id=release.release_id, attest=quote.attest, signature=quote.signature
            )
        )
    )
    states = wait_for_release_state(verifier, release.release_id, operator_pb2.RELEASE_STATE_ERASED)
    assert states == operator_pb2.RELEASE_STATE_ERASED

    # A newer review that requires confidential-VM evidence replaces the first
    # one; no verdict of this host shows that control, so the gate names it.
    assert "release.control_unsatisfied" not in denial_codes(agent.request(model_digest))
    operator(verifier, "reviews", "propose", model_digest.hex(), "--site", "eu-west",
             "--categories", "cyber", "--controls", "confidential_vm")  # fmt: skip
    denied = agent.request(model_digest)
    assert "release.control_unsatisfied" in denial_codes(denied)
    (control,) = [r for r in denied.release_denied.reasons if r.code.endswith("unsatisfied")]
    assert "confidential_vm" in control.detail


def agent_evidence(agent: Agent) -> attestation_pb2.Evidence:
    return evidence_for(agent.tpm, agent.stream.next_challenge())


def wait_for_release_state(verifier: VerifierHarness, release_id: str, state: int) -> int:
    deadline = time.monotonic() + 10
    current = -1
    while time.monotonic() < deadline:
        releases = verifier.operator.ListReleases(operator_pb2.ListReleasesRequest()).releases
        current = next(r.state for r in releases if r.release_id == release_id)
        if current == state:
            break
        time.sleep(0.1)
    return current


def test_registration_refuses_what_this_verifier_did_not_sign(
    verifier: VerifierHarness, checkpoint: Path, tmp_path: Path
) -> None:
    before = verifier.operator.ListModelVersions(operator_pb2.ListModelVersionsRequest()).models
    stranger = FileKeyStore.create(tmp_path / "stranger-keystore")
    foreign = encrypt_checkpoint(
        checkpoint, tmp_path / "out", name="rogue", version="1", risk_tier="high",
        keystore=stranger,
    )  # fmt: skip
    request = operator_pb2.AddModelVersionRequest(
        manifest=foreign.manifest_bytes,
        manifest_signature=foreign.signature,
        wrapped_data_keys=foreign.wrapped_keys,
    )
    with pytest.raises(grpc.RpcError) as unsigned:
        verifier.operator.AddModelVersion(request)
    assert unsigned.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "manifest" in (unsigned.value.details() or "")

    # Our signature over the manifest, but data keys wrapped by another key store.
    ours = FileKeyStore.open(verifier.config.keystore)
    request.manifest_signature = sign_manifest(foreign.manifest_bytes, ours.sign)
    with pytest.raises(grpc.RpcError) as wrong_keys:
        verifier.operator.AddModelVersion(request)
    assert wrong_keys.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not unwrap" in (wrong_keys.value.details() or "")
    after = verifier.operator.ListModelVersions(operator_pb2.ListModelVersionsRequest()).models
    assert list(after) == list(before)
