"""A host group's NVIDIA GPU policy under the two-person rule, and the policy reads.

Real gRPC over loopback with mutual TLS, a real store: `weightgate reference
propose-gpu` proposes, approvers other than the proposer apply it, and
GetGpuPolicy / GetImaPolicy (`reference show-gpu` / `show-ima`) read what is in
force. People come from the `weightgate pki` evaluation CA.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.mtls import client_channels
from tests.verifier_harness import VerifierHarness, running_verifier
from verifier import pki
from verifier.audit.chain import OK
from verifier.cli import main
from verifier.config import PROPOSAL_KINDS, ApprovalPolicy, TlsConfig
from verifier.identity import Role
from verifier.store import ProposalState
from weightgate.v1 import operator_pb2, operator_pb2_grpc

RPC_TIMEOUT = 10.0
PEOPLE = {
    "olga": [Role.OPERATOR],
    "otto": [Role.OPERATOR],
    "amy": [Role.APPROVER],
    "bob": [Role.APPROVER],
    "sam": [Role.SECURITY_ADMIN],
    "vic": [Role.VIEWER],
}
H100_RIM = "NV_GPU_DRIVER_GH100_550.54.15"
VBIOS_RIM = "NV_GPU_VBIOS_1010_0200_882_96005E0001"


def _policy(*rim_ids: str, **overrides: Any) -> dict[str, Any]:
    """A valid policy (the format in verifier/evidence/nvidia/gpu_policy.py)."""
    return {
        "version": 1,
        "allowed_cc_states": ["on"],
        "min_driver_version": "550.54.15",
        "min_vbios_version": "96.00.5e.00.01",
        "allowed_rim_ids": list(rim_ids or (H100_RIM, VBIOS_RIM)),
        **overrides,
    }


@dataclass(frozen=True)
class Pki:
    directory: Path
    server: pki.IssuedFiles
    people: dict[str, pki.IssuedFiles]


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("gpu-policy-pki") / "ca"
    pki.init_ca(directory)
    people = {name: pki.issue_operator(directory, name, roles) for name, roles in PEOPLE.items()}
    return Pki(directory, pki.issue_server(directory, "verifier", ["127.0.0.1"]), people)


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory, material: Pki) -> Iterator[VerifierHarness]:
    tls = TlsConfig(
        certificate=material.server.certificate,
        private_key=material.server.private_key,
        client_ca=material.directory / pki.CA_CERTIFICATE,
    )
    with running_verifier(
        tmp_path_factory.mktemp("gpu-policy-verifier"),
        ek_ca_certificates=(),
        insecure=False,
        tls=tls,
        approvals=ApprovalPolicy({kind: 2 for kind in PROPOSAL_KINDS}, 3600.0),
    ) as harness:
        yield harness


@pytest.fixture(scope="module")
def stubs(verifier: VerifierHarness, material: Pki) -> Iterator[dict[str, Any]]:
    with client_channels(verifier.address, material.directory, material.people) as channels:
        yield {name: operator_pb2_grpc.OperatorStub(c) for name, c in channels.items()}


@pytest.fixture
def cli(verifier: VerifierHarness, material: Pki, capsys: pytest.CaptureFixture[str]) -> Any:
    def run(who: str, *argv: str) -> tuple[int, str, str]:
        files = material.people[who]
        capsys.readouterr()
        code = main(
            [
                *argv,
                f"--verifier={verifier.address}",
                f"--ca={material.directory / pki.CA_CERTIFICATE}",
                f"--cert={files.certificate}",
                f"--key={files.private_key}",
            ]
        )
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _gpu_change(group: str, policy: dict[str, Any] | bytes) -> operator_pb2.ProposedChange:
    data = policy if isinstance(policy, bytes) else json.dumps(policy).encode()
    return operator_pb2.ProposedChange(
        gpu_policy=operator_pb2.GpuPolicyChange(group=group, policy_json=data)
    )


def _propose(stub: Any, change: operator_pb2.ProposedChange) -> Any:
    request = operator_pb2.ProposeChangeRequest(change=change, justification="new driver")
    return stub.ProposeChange(request, timeout=RPC_TIMEOUT)


def _approve(stub: Any, proposal_id: str) -> Any:
    request = operator_pb2.DecideProposalRequest(proposal_id=proposal_id)
    return stub.ApproveProposal(request, timeout=RPC_TIMEOUT)


def _get_gpu(stub: Any, group: str) -> Any:
    request = operator_pb2.GetReferenceValuesRequest(group=group)
    return stub.GetGpuPolicy(request, timeout=RPC_TIMEOUT)


def _refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def _last_record(verifier: VerifierHarness) -> Any:
    (record,) = verifier.store.audit_records(limit=1, newest=True)
    return record


def test_propose_gpu_applies_at_the_quorum_and_show_gpu_reads_it(
    verifier: VerifierHarness, stubs: dict[str, Any], cli: Any, tmp_path: Path
) -> None:
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(_policy()))
    code, out, err = cli("olga", "reference", "propose-gpu", "--group", "h100",
                         "--policy", str(path), "--justification", "driver 550")  # fmt: skip
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.endswith(": NVIDIA GPU policy of group h100"), out
    assert f"  + allowed_rim_ids: {H100_RIM}" in out.splitlines()
    assert '  + min_driver_version: "550.54.15"' in out.splitlines()
    proposal_id = first.split()[1].rstrip(":")

    refused = _refused(lambda: _approve(stubs["olga"], proposal_id))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED, "operators do not approve"
    assert _approve(stubs["amy"], proposal_id).state == operator_pb2.PROPOSAL_STATE_PENDING
    assert verifier.store.get_gpu_policy("h100") is None, "one approval is not enough"
    assert _refused(lambda: _get_gpu(stubs["vic"], "h100")).code() is grpc.StatusCode.NOT_FOUND
    applied = _approve(stubs["bob"], proposal_id)
    assert applied.state == operator_pb2.PROPOSAL_STATE_APPLIED
    assert applied.outcome_detail == "NVIDIA GPU policy of group h100 replaced"

    record = verifier.store.get_gpu_policy("h100")
    assert record is not None
    assert (record.group, record.proposal_id) == ("h100", proposal_id)
    assert record.document == _policy()
    read = _get_gpu(stubs["vic"], "h100")
    assert (read.group, read.proposal_id) == ("h100", proposal_id)
    assert json.loads(read.policy_json) == _policy()
    audited = _last_record(verifier)
    assert (audited.actor, audited.action, audited.outcome) == ("vic", "GetGpuPolicy", OK)
    assert audited.target == {"group": "h100"}

    code, out, err = cli("vic", "reference", "show-gpu", "--group", "h100", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["group"] == "h100" and shown["proposal_id"] == proposal_id
    assert shown["policy"] == _policy()
    assert shown["updated_at"].endswith("Z")
    code, out, _ = cli("vic", "reference", "show-gpu", "--group", "h100")
    assert code == 0
    assert out.startswith(f"NVIDIA GPU policy of group h100, set by proposal {proposal_id} at ")
    assert json.loads(out.split("\n", 1)[1]) == _policy()


def test_the_proposer_cannot_approve_their_own_gpu_policy(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    # A security admin may both propose and approve, never their own proposal.
    proposal = _propose(stubs["sam"], _gpu_change("own", _policy()))
    refused = _refused(lambda: _approve(stubs["sam"], proposal.proposal_id))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details().startswith("proposal.self_approval")
    _approve(stubs["amy"], proposal.proposal_id)
    assert verifier.store.get_gpu_policy("own") is None, "the proposer's approval did not count"
    assert verifier.store.get_proposal(proposal.proposal_id).state is ProposalState.PENDING
    _approve(stubs["bob"], proposal.proposal_id)
    record = verifier.store.get_gpu_policy("own")
    assert record is not None and record.proposal_id == proposal.proposal_id


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (_policy(allowed_rim_ids=[]), "allowed_rim_ids must list at least one RIM id"),
        (_policy(allow_everything=True), "unknown policy keys"),
        ({k: v for k, v in _policy().items() if k != "min_vbios_version"}, "are required"),
        (_policy(min_driver_version="latest"), "is not dotted decimal"),
        (_policy(version=2), "policy version must be 1"),
        (b"{not json", "policy is not JSON"),
    ],
)
def test_a_permissive_or_malformed_policy_is_refused_and_nothing_stored(
    verifier: VerifierHarness,
    stubs: dict[str, Any],
    cli: Any,
    tmp_path: Path,
    policy: dict[str, Any] | bytes,
    reason: str,
) -> None:
    before = verifier.store.list_proposals(limit=1000)
    refused = _refused(lambda: _propose(stubs["olga"], _gpu_change("refused", policy)))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details().startswith("gpu_policy.policy_json: "), refused.details()
    assert reason in refused.details()
    assert verifier.store.list_proposals(limit=1000) == before
    assert verifier.store.get_gpu_policy("refused") is None
    audited = _last_record(verifier)
    assert (audited.action, audited.outcome) == ("ProposeChange", "INVALID_ARGUMENT")

    path = tmp_path / "bad.json"
    path.write_bytes(policy if isinstance(policy, bytes) else json.dumps(policy).encode())
    code, out, err = cli("olga", "reference", "propose-gpu", "--group", "refused",
                         "--policy", str(path))  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"weightgate: {path}: "), err
    assert reason in err
    assert verifier.store.list_proposals(limit=1000) == before


def test_a_bad_group_name_is_refused(stubs: dict[str, Any]) -> None:
    refused = _refused(lambda: _propose(stubs["olga"], _gpu_change("no/such group", _policy())))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == "gpu_policy.group: not a valid group name"
    for read in ("GetGpuPolicy", "GetImaPolicy"):
        request = operator_pb2.GetReferenceValuesRequest(group="no/such group")
        call = getattr(stubs["vic"], read)
        refused = _refused(lambda: call(request, timeout=RPC_TIMEOUT))  # noqa: B023
        assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT, read
        assert refused.details().startswith("group: "), read


def test_a_gpu_policy_proposed_over_a_changed_policy_goes_stale(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    slow = _propose(stubs["olga"], _gpu_change("contested", _policy(H100_RIM)))
    fast = _propose(stubs["otto"], _gpu_change("contested", _policy(VBIOS_RIM)))
    _approve(stubs["amy"], fast.proposal_id)
    _approve(stubs["bob"], fast.proposal_id)
    _approve(stubs["amy"], slow.proposal_id)
    refused = _refused(lambda: _approve(stubs["bob"], slow.proposal_id))
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.details().startswith("proposal.stale")
    assert verifier.store.get_proposal(slow.proposal_id).state is ProposalState.STALE
    record = verifier.store.get_gpu_policy("contested")
    assert record is not None and record.document == _policy(VBIOS_RIM)
    assert record.proposal_id == fast.proposal_id

    # Over the policy now in force, a new proposal shows only what it changes.
    again = _propose(stubs["olga"], _gpu_change("contested", _policy(VBIOS_RIM, H100_RIM)))
    assert list(again.diff) == [f"+ allowed_rim_ids: {H100_RIM}"]
    narrower = _propose(
        stubs["otto"], _gpu_change("contested", _policy(VBIOS_RIM, allowed_cc_states=["ppcie"]))
    )
    assert list(narrower.diff) == ["- allowed_cc_states: on", "+ allowed_cc_states: ppcie"]


def test_policy_reads_are_not_found_for_a_group_without_one(
    verifier: VerifierHarness, stubs: dict[str, Any], cli: Any
) -> None:
    request = operator_pb2.GetReferenceValuesRequest(group="nobody")
    for read, what in (("GetGpuPolicy", "NVIDIA GPU"), ("GetImaPolicy", "IMA runtime")):
        call = getattr(stubs["vic"], read)
        refused = _refused(lambda: call(request, timeout=RPC_TIMEOUT))  # noqa: B023
        assert refused.code() is grpc.StatusCode.NOT_FOUND, read
        assert refused.details() == f"no {what} policy for group 'nobody'"
        audited = _last_record(verifier)
        assert (audited.actor, audited.action, audited.outcome) == ("vic", read, "NOT_FOUND")
        assert audited.target == {"group": "nobody"}
    for command in ("show-gpu", "show-ima"):
        code, _, err = cli("vic", "reference", command, "--group", "nobody", "--json")
        assert code == 1 and "NOT_FOUND" in err, command


def test_show_ima_reads_the_approved_ima_policy(
    verifier: VerifierHarness, stubs: dict[str, Any], cli: Any
) -> None:
    document = {"version": 1, "digests": {"/usr/bin/a": ["sha256:" + "ab" * 32]}}
    change = operator_pb2.ProposedChange(
        ima_policy=operator_pb2.ImaPolicyChange(
            group="ima-group", policy_json=json.dumps(document).encode()
        )
    )
    proposal = _propose(stubs["olga"], change)
    _approve(stubs["amy"], proposal.proposal_id)
    _approve(stubs["bob"], proposal.proposal_id)
    read = stubs["vic"].GetImaPolicy(
        operator_pb2.GetReferenceValuesRequest(group="ima-group"), timeout=RPC_TIMEOUT
    )
    assert json.loads(read.policy_json) == document
    assert read.proposal_id == proposal.proposal_id
    code, out, err = cli("vic", "reference", "show-ima", "--group", "ima-group", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["group"], shown["policy"]) == ("ima-group", document)
    assert shown["proposal_id"] == proposal.proposal_id
