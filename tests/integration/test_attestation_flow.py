"""Enrollment and continuous attestation over real gRPC with a real swtpm.

Each rejection test takes the honest path and changes one thing, then expects
one named reason.
"""

from __future__ import annotations

import json
import queue
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.collectors.tpm import Tpm
from tests.vectors import vectors_dir
from tests.verifier_harness import VerifierHarness, running_verifier
from verifier.boot_reference_cli import reference_document
from weightgate.v1 import (
    attestation_pb2,
    common_pb2,
    enrollment_pb2,
    operator_pb2,
)

AK_HANDLE = 0x81010002
GROUP = "lab"
REFERENCE = {"sha256": [0, 1, 2, 3, 4, 5, 6, 7]}


@pytest.fixture(scope="module")
def tpm_process(swtpm_factory_module: Any) -> Any:
    return swtpm_factory_module()


@pytest.fixture(scope="module")
def verifier(
    tmp_path_factory: pytest.TempPathFactory, tpm_process: Any
) -> Iterator[VerifierHarness]:
    state = tmp_path_factory.mktemp("verifier")
    with running_verifier(state, ek_ca_certificates=tpm_process.ek_ca_certificates) as harness:
        yield harness


@pytest.fixture(scope="module")
def tpm(tpm_process: Any) -> Tpm:
    return Tpm(tpm_process.tcti)


def set_reference_from(verifier: VerifierHarness, tpm: Tpm, group: str = GROUP) -> None:
    values = tpm.read_pcrs(REFERENCE)
    verifier.operator.ProposeChange(
        operator_pb2.ProposeChangeRequest(
            change=operator_pb2.ProposedChange(
                reference_values=operator_pb2.SetReferenceValuesRequest(
                    group=group,
                    pcrs=[
                        common_pb2.PcrBank(hash_algorithm=b, values=v) for b, v in values.items()
                    ],
                )
            )
        ),
    )


def register(verifier: VerifierHarness, host_id: str) -> None:
    verifier.operator.RegisterHost(operator_pb2.RegisterHostRequest(host_id=host_id, group=GROUP))


def begin_request(tpm: Tpm, host_id: str) -> enrollment_pb2.BeginEnrollmentRequest:
    endorsement = tpm.read_endorsement()
    return enrollment_pb2.BeginEnrollmentRequest(
        host_id=host_id,
        ek_public=endorsement.ek_public,
        ek_certificate=endorsement.ek_certificate,
        ak_public=tpm.ensure_ak(AK_HANDLE),
    )


def enroll(verifier: VerifierHarness, tpm: Tpm, host_id: str) -> bytes:
    begun = verifier.enrollment.BeginEnrollment(begin_request(tpm, host_id))
    secret = tpm.activate_credential(
        ak_handle=AK_HANDLE,
        credential_blob=begun.credential_blob,
        encrypted_secret=begun.encrypted_secret,
    )
    done = verifier.enrollment.CompleteEnrollment(
        enrollment_pb2.CompleteEnrollmentRequest(
            enrollment_id=begun.enrollment_id, activated_secret=secret
        )
    )
    assert done.host_id == host_id
    return bytes(done.ak_name)


class Stream:
    """A hand-driven agent side of the Attest stream.

    Messages of other kinds than the one awaited are kept for later, because
    the verifier's timer may send the next challenge at any moment.
    """

    def __init__(self, verifier: VerifierHarness, host_id: str, ak_name: bytes) -> None:
        self._outbox: queue.Queue[attestation_pb2.AgentMessage | None] = queue.Queue()
        self._pending: list[attestation_pb2.VerifierMessage] = []
        self.send(
            attestation_pb2.AgentMessage(
                hello=attestation_pb2.Hello(host_id=host_id, ak_name=ak_name)
            )
        )
        self._responses = verifier.attestation.Attest(self._requests(), timeout=120)

    def _requests(self) -> Iterator[attestation_pb2.AgentMessage]:
        while (message := self._outbox.get()) is not None:
            yield message

    def send(self, message: attestation_pb2.AgentMessage) -> None:
        self._outbox.put(message)

    def receive(self, *kinds: str) -> attestation_pb2.VerifierMessage:
        for index, message in enumerate(self._pending):
            if message.WhichOneof("body") in kinds:
                return self._pending.pop(index)
        while True:
            message = next(self._responses)
            if message.WhichOneof("body") in kinds:
                return message
            self._pending.append(message)

    def next_challenge(self) -> attestation_pb2.Challenge:
        return self.receive("challenge").challenge

    def answer(self, evidence: attestation_pb2.Evidence) -> common_pb2.Verdict:
        self.send(attestation_pb2.AgentMessage(evidence=evidence))
        return self.receive("verdict").verdict

    def answer_with_extra(
        self, evidence: attestation_pb2.Evidence
    ) -> tuple[common_pb2.Verdict, attestation_pb2.VerifierMessage]:
        """The verdict, then the lease renewal or revocation that follows it.

        Renewals and revocations already received belong to earlier rounds (a round
        sends them before the next challenge, which the caller has read to build
        ``evidence``): e.g. a release created while the previous round was still
        renewing. They are dropped so that the one returned answers this verdict.
        """
        stale = ("lease_renewal", "revocation")
        self._pending = [m for m in self._pending if m.WhichOneof("body") not in stale]
        verdict = self.answer(evidence)
        return verdict, self.receive("lease_renewal", "revocation")

    def send_and_receive(
        self, message: attestation_pb2.AgentMessage
    ) -> attestation_pb2.VerifierMessage:
        self.send(message)
        return self.receive("key_release", "release_denied")

    def close(self) -> None:
        self._outbox.put(None)
        self._responses.cancel()


def selection_of(challenge: attestation_pb2.Challenge) -> dict[str, list[int]]:
    return {s.hash_algorithm: list(s.pcrs) for s in challenge.tpm.pcr_selection}


def evidence_for(
    tpm: Tpm,
    challenge: attestation_pb2.Challenge,
    *,
    qualifying_data: bytes | None = None,
    selection: dict[str, list[int]] | None = None,
) -> attestation_pb2.Evidence:
    quote = tpm.quote(
        ak_handle=AK_HANDLE,
        qualifying_data=challenge.tpm.qualifying_data
        if qualifying_data is None
        else qualifying_data,
        selection=selection_of(challenge) if selection is None else selection,
    )
    return attestation_pb2.Evidence(
        challenge_id=challenge.challenge_id,
        tpm=attestation_pb2.TpmQuote(
            attest=quote.attest,
            signature=quote.signature,
            pcrs=[common_pb2.PcrBank(hash_algorithm=b, values=v) for b, v in quote.pcrs.items()],
        ),
    )


def codes(verdict: common_pb2.Verdict) -> list[str]:
    return [r.code for r in verdict.reasons]


@pytest.fixture(scope="module")
def enrolled(verifier: VerifierHarness, tpm: Tpm) -> tuple[str, bytes]:
    host_id = "node-1"
    register(verifier, host_id)
    set_reference_from(verifier, tpm)
    return host_id, enroll(verifier, tpm, host_id)


@pytest.fixture
def stream(verifier: VerifierHarness, tpm: Tpm, enrolled: tuple[str, bytes]) -> Iterator[Stream]:
    set_reference_from(verifier, tpm)
    opened = Stream(verifier, *enrolled)
    yield opened
    opened.close()


def test_honest_host_is_trusted_and_history_is_kept(
    verifier: VerifierHarness, tpm: Tpm, stream: Stream, enrolled: tuple[str, bytes]
) -> None:
    for _ in range(2):
        challenge = stream.next_challenge()
        assert len(challenge.nonce) >= 32
        verdict = stream.answer(evidence_for(tpm, challenge))
        assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
        assert "tpm.quote.signature" in verdict.checks_run
        assert "tpm.pcr.reference" in verdict.checks_run
    detail = verifier.operator.GetHost(operator_pb2.GetHostRequest(host_id=enrolled[0]))
    assert detail.summary.status == operator_pb2.HOST_STATUS_TRUSTED
    assert len(detail.history) >= 2
    assert detail.ak_name == enrolled[1]


def test_a_group_with_a_boot_reference_requires_the_boot_log(
    verifier: VerifierHarness, tpm: Tpm
) -> None:
    group, host_id = "lab-boot", "node-boot"
    verifier.operator.RegisterHost(operator_pb2.RegisterHostRequest(host_id=host_id, group=group))
    set_reference_from(verifier, tpm, group)
    ak_name = enroll(verifier, tpm, host_id)
    vector = vectors_dir("tpm", "swtpm-rsa-sha1sha256-loc0")
    document, _ = reference_document(vector / "eventlog.bin", vector / "pcrs.json")
    change = operator_pb2.BootReferenceChange(
        group=group, reference_json=json.dumps(document).encode()
    )
    verifier.operator.ProposeChange(
        operator_pb2.ProposeChangeRequest(change=operator_pb2.ProposedChange(boot_reference=change))
    )
    stream = Stream(verifier, host_id, ak_name)
    try:
        challenge = stream.next_challenge()
        assert challenge.want_boot_log
        # Every PCR the reference's facts are read from is asked for, logged or not.
        asked = {s.hash_algorithm: set(s.pcrs) for s in challenge.tpm.pcr_selection}
        assert asked["sha256"] >= {*range(10), 12}
        evidence = evidence_for(tpm, challenge)
        evidence.boot_log.unavailable = "no event log at /sys/kernel/security/tpm0/..."
        verdict = stream.answer(evidence)
    finally:
        stream.close()
    assert verdict.tier == common_pb2.TIER_CONTRAINDICATED
    assert codes(verdict) == ["tpm.boot.log_missing"]
    assert "no event log at" in verdict.reasons[0].detail


def test_wrong_nonce_is_rejected(tpm: Tpm, stream: Stream) -> None:
    challenge = stream.next_challenge()
    verdict = stream.answer(evidence_for(tpm, challenge, qualifying_data=secrets.token_bytes(32)))
    assert verdict.tier == common_pb2.TIER_CONTRAINDICATED
    assert codes(verdict) == ["tpm.quote.nonce_mismatch"]


def test_replayed_earlier_quote_is_rejected(tpm: Tpm, stream: Stream) -> None:
    first = stream.next_challenge()
    old = evidence_for(tpm, first)
    assert stream.answer(old).tier == common_pb2.TIER_AFFIRMING
    second = stream.next_challenge()
    replay = attestation_pb2.Evidence(challenge_id=second.challenge_id, tpm=old.tpm)
    verdict = stream.answer(replay)
    assert codes(verdict) == ["tpm.quote.nonce_replayed"]


def test_quote_from_another_tpms_ak_is_rejected(
    tpm: Tpm, stream: Stream, swtpm_factory_module: Any
) -> None:
    other = Tpm(swtpm_factory_module().tcti)
    other.ensure_ak(AK_HANDLE)
    challenge = stream.next_challenge()
    verdict = stream.answer(evidence_for(other, challenge))
    assert codes(verdict) == ["tpm.quote.signature_invalid"]


def test_garbage_signature_is_rejected(tpm: Tpm, stream: Stream) -> None:
    challenge = stream.next_challenge()
    evidence = evidence_for(tpm, challenge)
    signature = bytearray(evidence.tpm.signature)
    signature[-1] ^= 0x01
    evidence.tpm.signature = bytes(signature)
    assert codes(stream.answer(evidence)) == ["tpm.quote.signature_invalid"]
    challenge = stream.next_challenge()
    evidence = evidence_for(tpm, challenge)
    evidence.tpm.signature = secrets.token_bytes(40)
    assert codes(stream.answer(evidence)) == ["tpm.quote.signature_malformed"]


def test_quote_omitting_a_reference_pcr_is_rejected(tpm: Tpm, stream: Stream) -> None:
    challenge = stream.next_challenge()
    verdict = stream.answer(evidence_for(tpm, challenge, selection={"sha256": [0, 1, 2, 3]}))
    assert codes(verdict) == ["tpm.quote.pcr_selection_incomplete"]


def test_pcr_outside_reference_makes_host_untrusted(
    verifier: VerifierHarness, tpm: Tpm, stream: Stream, enrolled: tuple[str, bytes]
) -> None:
    tpm.extend_pcr(4, b"unapproved bootloader")
    challenge = stream.next_challenge()
    verdict = stream.answer(evidence_for(tpm, challenge))
    assert verdict.tier == common_pb2.TIER_CONTRAINDICATED
    assert codes(verdict) == ["tpm.pcr.mismatch"]
    assert "PCR4" in verdict.reasons[0].detail
    summary = verifier.operator.GetHost(operator_pb2.GetHostRequest(host_id=enrolled[0])).summary
    assert summary.status == operator_pb2.HOST_STATUS_UNTRUSTED
    assert summary.reasons[0].code == "tpm.pcr.mismatch"


def test_evidence_for_an_unknown_challenge_is_rejected(tpm: Tpm, stream: Stream) -> None:
    challenge = stream.next_challenge()
    evidence = evidence_for(tpm, challenge)
    evidence.challenge_id = "0" * 32
    assert codes(stream.answer(evidence)) == ["attestation.challenge_unknown"]


def test_unknown_host_cannot_enroll_or_attest(verifier: VerifierHarness, tpm: Tpm) -> None:
    with pytest.raises(grpc.RpcError) as enroll_error:
        verifier.enrollment.BeginEnrollment(begin_request(tpm, "stranger"))
    assert enroll_error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "enrollment.unknown_host" in (enroll_error.value.details() or "")
    stream = Stream(verifier, "stranger", b"\x00\x0b" + bytes(32))
    with pytest.raises(grpc.RpcError) as attest_error:
        stream.next_challenge()
    assert attest_error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "attestation.unknown_host" in (attest_error.value.details() or "")


def test_activation_with_the_wrong_secret_fails_for_good(
    verifier: VerifierHarness, tpm: Tpm
) -> None:
    register(verifier, "node-wrong-secret")
    begun = verifier.enrollment.BeginEnrollment(begin_request(tpm, "node-wrong-secret"))
    request = enrollment_pb2.CompleteEnrollmentRequest(
        enrollment_id=begun.enrollment_id, activated_secret=secrets.token_bytes(32)
    )
    with pytest.raises(grpc.RpcError) as wrong:
        verifier.enrollment.CompleteEnrollment(request)
    assert wrong.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "enrollment.activation_failed" in (wrong.value.details() or "")
    # Single attempt: the right secret afterwards does not rescue it.
    right = tpm.activate_credential(
        ak_handle=AK_HANDLE,
        credential_blob=begun.credential_blob,
        encrypted_secret=begun.encrypted_secret,
    )
    with pytest.raises(grpc.RpcError) as again:
        verifier.enrollment.CompleteEnrollment(
            enrollment_pb2.CompleteEnrollmentRequest(
                enrollment_id=begun.enrollment_id, activated_secret=right
            )
        )
    assert again.value.code() == grpc.StatusCode.NOT_FOUND
    host = verifier.operator.GetHost(operator_pb2.GetHostRequest(host_id="node-wrong-secret"))
    assert host.summary.status == operator_pb2.HOST_STATUS_REGISTERED


def test_ek_certificate_from_an_untrusted_ca_is_refused(
    tmp_path: Path, tpm: Tpm, swtpm_factory_module: Any
) -> None:
    stranger_ca = swtpm_factory_module().ek_ca_certificates
    with running_verifier(tmp_path, ek_ca_certificates=stranger_ca) as other_verifier:
        register(other_verifier, "node-x")
        with pytest.raises(grpc.RpcError) as refused:
            other_verifier.enrollment.BeginEnrollment(begin_request(tpm, "node-x"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "enrollment.ek_certificate_untrusted" in (refused.value.details() or "")


def _anchor_change(pem_path: Path, *, remove: bool = False) -> operator_pb2.ProposeChangeRequest:
    certificate = x509.load_pem_x509_certificate(pem_path.read_bytes())
    change = operator_pb2.TrustAnchorChange(
        purpose="tpm_ek",
        certificate_der=certificate.public_bytes(serialization.Encoding.DER),
        remove=remove,
    )
    return operator_pb2.ProposeChangeRequest(
        change=operator_pb2.ProposedChange(trust_anchor=change)
    )


def test_ek_trust_anchors_added_and_removed_by_proposal(
    tmp_path: Path, tpm: Tpm, tpm_process: Any, swtpm_factory_module: Any
) -> None:
    """A verifier whose config trusts another vendor's EK CA: this TPM enrolls only
    while an approved proposal (no quorum in this plaintext harness) trusts its CA."""
    stranger_ca = swtpm_factory_module().ek_ca_certificates
    with running_verifier(tmp_path, ek_ca_certificates=stranger_ca) as other_verifier:
        register(other_verifier, "node-anchored")
        for pem in tpm_process.ek_ca_certificates:
            added = other_verifier.operator.ProposeChange(_anchor_change(pem))
            assert added.state == operator_pb2.PROPOSAL_STATE_APPLIED, added
        listed = other_verifier.operator.ListTrustAnchors(operator_pb2.ListTrustAnchorsRequest())
        assert len(listed.anchors) == len(tpm_process.ek_ca_certificates)
        other_verifier.enrollment.BeginEnrollment(begin_request(tpm, "node-anchored"))

        again = _refusal(
            lambda: other_verifier.operator.ProposeChange(
                _anchor_change(tpm_process.ek_ca_certificates[0])
            )
        )
        assert again.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "already" in (again.details() or "")
        for pem in tpm_process.ek_ca_certificates:
            other_verifier.operator.ProposeChange(_anchor_change(pem, remove=True))
        with pytest.raises(grpc.RpcError) as refused:
            other_verifier.enrollment.BeginEnrollment(begin_request(tpm, "node-anchored"))
    assert "enrollment.ek_certificate_untrusted" in (refused.value.details() or "")


def _refusal(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def test_malformed_operator_request_gets_invalid_argument(verifier: VerifierHarness) -> None:
    with pytest.raises(grpc.RpcError) as bad:
        verifier.operator.RegisterHost(
            operator_pb2.RegisterHostRequest(host_id="../etc/passwd", group=GROUP)
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    hosts = verifier.operator.ListHosts(operator_pb2.ListHostsRequest()).hosts
    assert "../etc/passwd" not in [h.host_id for h in hosts]


def test_a_host_cannot_switch_to_another_tpm(
    tmp_path: Path, tpm_process: Any, tpm: Tpm, swtpm_factory_module: Any
) -> None:
    other_process = swtpm_factory_module()
    both_cas = tpm_process.ek_ca_certificates + other_process.ek_ca_certificates
    with running_verifier(tmp_path, ek_ca_certificates=both_cas) as other_verifier:
        register(other_verifier, "node-pinned")
        enroll(other_verifier, tpm, "node-pinned")
        with pytest.raises(grpc.RpcError) as refused:
            other_verifier.enrollment.BeginEnrollment(
                begin_request(Tpm(other_process.tcti), "node-pinned")
            )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "enrollment.ek_changed" in (refused.value.details() or "")


def test_a_newer_stream_of_the_host_ends_the_older_one(
    verifier: VerifierHarness, tpm: Tpm, enrolled: tuple[str, bytes]
) -> None:
    set_reference_from(verifier, tpm)
    older = Stream(verifier, *enrolled)
    try:
        older.next_challenge()  # it is live
        newer = Stream(verifier, *enrolled)
        try:
            with pytest.raises(grpc.RpcError) as ended:
                while True:
                    older.receive("verdict")  # drains challenges until the stream ends
            assert ended.value.code() == grpc.StatusCode.ABORTED
            assert "attestation.superseded" in (ended.value.details() or "")
            verdict = newer.answer(evidence_for(tpm, newer.next_challenge()))
            assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
        finally:
            newer.close()
    finally:
        older.close()


def test_one_tpm_enrolls_as_one_host_only(tmp_path: Path, tpm_process: Any, tpm: Tpm) -> None:
    """The production default: a TPM enrolled as one host cannot enroll as another,
    not even between the other's begin and complete (test rigs opt out explicitly)."""
    with running_verifier(
        tmp_path, ek_ca_certificates=tpm_process.ek_ca_certificates, allow_shared_tpm=False
    ) as strict:
        for host_id in ("first", "second", "third"):
            register(strict, host_id)
        begun_third = strict.enrollment.BeginEnrollment(begin_request(tpm, "third"))
        enroll(strict, tpm, "first")
        enroll(strict, tpm, "first")  # the same host again: allowed
        with pytest.raises(grpc.RpcError) as refused:
            strict.enrollment.BeginEnrollment(begin_request(tpm, "second"))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "enrollment.ek_in_use" in (refused.value.details() or "")
        assert "'first'" in (refused.value.details() or "")
        secret = tpm.activate_credential(
            ak_handle=AK_HANDLE,
            credential_blob=begun_third.credential_blob,
            encrypted_secret=begun_third.encrypted_secret,
        )
        with pytest.raises(grpc.RpcError) as late:
            strict.enrollment.CompleteEnrollment(
                enrollment_pb2.CompleteEnrollmentRequest(
                    enrollment_id=begun_third.enrollment_id, activated_secret=secret
                )
            )
        assert "enrollment.ek_in_use" in (late.value.details() or "")
        assert strict.store.get_host("first").ak_name  # type: ignore[union-attr]
        assert not strict.store.get_host("second").ak_name  # type: ignore[union-attr]
        assert not strict.store.get_host("third").ak_name  # type: ignore[union-attr]
