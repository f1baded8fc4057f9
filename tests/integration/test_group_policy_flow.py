"""A host group's NVIDIA GPU, AMD SEV-SNP and Intel TDX policies under the two-person
rule, and the policy reads (IMA runtime policy too).

Real gRPC over loopback with mutual TLS, a real store: `weightgate reference
propose-gpu|propose-snp|propose-tdx` proposes, approvers other than the proposer
apply it, and GetGpuPolicy / GetSnpPolicy / GetTdxPolicy / GetImaPolicy (`reference
show-gpu|show-snp|show-tdx|show-ima`) read what is in force. People come from the
`weightgate pki` evaluation CA. The per-kind data is tests.group_policy_cases.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.group_policy_cases import POLICY_KINDS, POLICY_READS, PolicyKind
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
KINDS = pytest.mark.parametrize("kind", POLICY_KINDS, ids=str)
READ_IDS = [rpc for rpc, _, _ in POLICY_READS]


@dataclass(frozen=True)
class Pki:
    directory: Path
    server: pki.IssuedFiles
    people: dict[str, pki.IssuedFiles]


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("group-policy-pki") / "ca"
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
        tmp_path_factory.mktemp("group-policy-verifier"),
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


def _propose(stub: Any, change: operator_pb2.ProposedChange) -> Any:
    request = operator_pb2.ProposeChangeRequest(change=change, justification="new firmware")
    return stub.ProposeChange(request, timeout=RPC_TIMEOUT)


def _approve(stub: Any, proposal_id: str) -> Any:
    request = operator_pb2.DecideProposalRequest(proposal_id=proposal_id)
    return stub.ApproveProposal(request, timeout=RPC_TIMEOUT)


def _read(stub: Any, rpc: str, group: str) -> Any:
    request = operator_pb2.GetReferenceValuesRequest(group=group)
    return getattr(stub, rpc)(request, timeout=RPC_TIMEOUT)


def _stored(verifier: VerifierHarness, kind: PolicyKind, group: str) -> Any:
    return getattr(verifier.store, f"get_{kind.field}")(group)


def _refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def _last_record(verifier: VerifierHarness) -> Any:
    (record,) = verifier.store.audit_records(limit=1, newest=True)
    return record


@KINDS
def test_propose_applies_at_the_quorum_and_show_reads_it(
    verifier: VerifierHarness, stubs: dict[str, Any], cli: Any, tmp_path: Path, kind: PolicyKind
) -> None:
    group = kind.group
    path = tmp_path / f"{kind.name}.json"
    path.write_text(json.dumps(kind.policy()))
    code, out, err = cli("olga", "reference", f"propose-{kind.name}", "--group", group,
                         "--policy", str(path), "--justification", "new firmware")  # fmt: skip
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.endswith(f": {kind.label} of group {group}"), out
    for line in kind.proposed_lines:
        assert line in out.splitlines(), (line, out)
    proposal_id = first.split()[1].rstrip(":")

    refused = _refused(lambda: _approve(stubs["olga"], proposal_id))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED, "operators do not approve"
    assert _approve(stubs["amy"], proposal_id).state == operator_pb2.PROPOSAL_STATE_PENDING
    assert _stored(verifier, kind, group) is None, "one approval is not enough"
    refused = _refused(lambda: _read(stubs["vic"], kind.rpc, group))
    assert refused.code() is grpc.StatusCode.NOT_FOUND
    applied = _approve(stubs["bob"], proposal_id)
    assert applied.state == operator_pb2.PROPOSAL_STATE_APPLIED
    assert applied.outcome_detail == f"{kind.label} of group {group} replaced"

    record = _stored(verifier, kind, group)
    assert record is not None
    assert (record.group, record.proposal_id) == (group, proposal_id)
    assert record.document == kind.policy()
    assert record.updated_at.tzinfo is not None
    for other in POLICY_KINDS:
        if other is not kind:
            assert _stored(verifier, other, group) is None, "a policy of its own kind"
    assert verifier.store.get_ima_policy(group) is None, "a policy of its own kind"
    read = _read(stubs["vic"], kind.rpc, group)
    assert (read.group, read.proposal_id) == (group, proposal_id)
    assert json.loads(read.policy_json) == kind.policy()
    audited = _last_record(verifier)
    assert (audited.actor, audited.action, audited.outcome) == ("vic", kind.rpc, OK)
    assert audited.target == {"group": group}

    code, out, err = cli("vic", "reference", f"show-{kind.name}", "--group", group, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["group"] == group and shown["proposal_id"] == proposal_id
    assert shown["policy"] == kind.policy()
    assert shown["updated_at"].endswith("Z")
    code, out, _ = cli("vic", "reference", f"show-{kind.name}", "--group", group)
    assert code == 0
    assert out.startswith(f"{kind.label} of group {group}, set by proposal {proposal_id} at ")
    assert json.loads(out.split("\n", 1)[1]) == kind.policy()


@KINDS
def test_the_proposer_cannot_approve_their_own_policy(
    verifier: VerifierHarness, stubs: dict[str, Any], kind: PolicyKind
) -> None:
    # A security admin may both propose and approve, never their own proposal.
    proposal = _propose(stubs["sam"], kind.change("own", kind.policy()))
    refused = _refused(lambda: _approve(stubs["sam"], proposal.proposal_id))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details().startswith("proposal.self_approval")
    _approve(stubs["amy"], proposal.proposal_id)
    assert _stored(verifier, kind, "own") is None, "the proposer's approval did not count"
    assert verifier.store.get_proposal(proposal.proposal_id).state is ProposalState.PENDING
    _approve(stubs["bob"], proposal.proposal_id)
    record = _stored(verifier, kind, "own")
    assert record is not None and record.proposal_id == proposal.proposal_id


@pytest.mark.parametrize(
    ("kind", "policy", "reason"),
    [
        pytest.param(kind, policy, reason, id=f"{kind}-{index}")
        for kind in POLICY_KINDS
        for index, (policy, reason) in enumerate(kind.refused)
    ],
)
def test_a_permissive_or_malformed_policy_is_refused_and_nothing_stored(
    verifier: VerifierHarness,
    stubs: dict[str, Any],
    cli: Any,
    tmp_path: Path,
    kind: PolicyKind,
    policy: dict[str, Any] | bytes,
    reason: str,
) -> None:
    before = verifier.store.list_proposals(limit=1000)
    refused = _refused(lambda: _propose(stubs["olga"], kind.change("refused", policy)))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details().startswith(f"{kind.field}.policy_json: "), refused.details()
    assert reason in refused.details()
    assert verifier.store.list_proposals(limit=1000) == before
    assert _stored(verifier, kind, "refused") is None
    audited = _last_record(verifier)
    assert (audited.action, audited.outcome) == ("ProposeChange", "INVALID_ARGUMENT")

    path = tmp_path / "bad.json"
    path.write_bytes(policy if isinstance(policy, bytes) else json.dumps(policy).encode())
    code, out, err = cli("olga", "reference", f"propose-{kind.name}", "--group", "refused",
                         "--policy", str(path))  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"weightgate: {path}: "), err
    assert reason in err
    assert verifier.store.list_proposals(limit=1000) == before


@KINDS
def test_an_unreadable_policy_file_is_named_and_nothing_proposed(
    verifier: VerifierHarness, cli: Any, tmp_path: Path, kind: PolicyKind
) -> None:
    before = verifier.store.list_proposals(limit=1000)
    missing = tmp_path / "missing.json"
    code, out, err = cli("olga", "reference", f"propose-{kind.name}", "--group", "refused",
                         "--policy", str(missing))  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"weightgate: {missing}: cannot read"), err
    assert verifier.store.list_proposals(limit=1000) == before


@KINDS
def test_an_oversized_policy_is_refused_before_it_is_parsed(
    stubs: dict[str, Any], kind: PolicyKind
) -> None:
    padded = json.dumps(kind.policy()).encode() + b" " * (1 << 20)
    refused = _refused(lambda: _propose(stubs["olga"], kind.change("big", padded)))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == f"{kind.field}.policy_json: larger than {1 << 20} bytes"


@KINDS
def test_a_bad_group_name_is_refused(stubs: dict[str, Any], kind: PolicyKind) -> None:
    change = kind.change("no/such group", kind.policy())
    refused = _refused(lambda: _propose(stubs["olga"], change))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == f"{kind.field}.group: not a valid group name"


@pytest.mark.parametrize("rpc", [rpc for rpc, _, _ in POLICY_READS])
def test_a_policy_read_refuses_a_bad_group_name(stubs: dict[str, Any], rpc: str) -> None:
    refused = _refused(lambda: _read(stubs["vic"], rpc, "no/such group"))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details().startswith("group: ")


@KINDS
def test_a_policy_proposed_over_a_changed_policy_goes_stale(
    verifier: VerifierHarness, stubs: dict[str, Any], kind: PolicyKind
) -> None:
    slow = _propose(stubs["olga"], kind.change("contested", kind.slow))
    fast = _propose(stubs["otto"], kind.change("contested", kind.fast))
    _approve(stubs["amy"], fast.proposal_id)
    _approve(stubs["bob"], fast.proposal_id)
    _approve(stubs["amy"], slow.proposal_id)
    refused = _refused(lambda: _approve(stubs["bob"], slow.proposal_id))
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.details().startswith("proposal.stale")
    assert verifier.store.get_proposal(slow.proposal_id).state is ProposalState.STALE
    record = _stored(verifier, kind, "contested")
    assert record is not None and record.document == kind.fast
    assert record.proposal_id == fast.proposal_id

    # Over the policy now in force, a new proposal shows only what it changes.
    for index, (policy, diff) in enumerate(kind.diffs):
        proposer = stubs["olga" if index == 0 else "otto"]
        again = _propose(proposer, kind.change("contested", policy))
        assert list(again.diff) == diff, index


@pytest.mark.parametrize(("rpc", "label", "command"), POLICY_READS, ids=READ_IDS)
def test_policy_reads_are_not_found_for_a_group_without_one(
    verifier: VerifierHarness, stubs: dict[str, Any], cli: Any, rpc: str, label: str, command: str
) -> None:
    refused = _refused(lambda: _read(stubs["vic"], rpc, "nobody"))
    assert refused.code() is grpc.StatusCode.NOT_FOUND
    assert refused.details() == f"no {label} for group 'nobody'"
    audited = _last_record(verifier)
    assert (audited.actor, audited.action, audited.outcome) == ("vic", rpc, "NOT_FOUND")
    assert audited.target == {"group": "nobody"}
    code, _, err = cli("vic", "reference", command, "--group", "nobody", "--json")
    assert code == 1 and "NOT_FOUND" in err


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
    read = _read(stubs["vic"], "GetImaPolicy", "ima-group")
    assert json.loads(read.policy_json) == document
    assert read.proposal_id == proposal.proposal_id
    code, out, err = cli("vic", "reference", "show-ima", "--group", "ima-group", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["group"], shown["policy"]) == ("ima-group", document)
    assert shown["proposal_id"] == proposal.proposal_id
