"""A host group's Intel TDX policy under the two-person rule, and its read.

Real gRPC over loopback with mutual TLS, a real store: `weightgate reference
propose-tdx` proposes, approvers other than the proposer apply it, and
GetTdxPolicy (`reference show-tdx`) reads what is in force. People come from
the `weightgate pki` evaluation CA.
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
# 48-byte register values (verifier/evidence/tdx/policy.py), as the loader takes them: hex.
GOLDEN = "ab" * 48
OTHER = "5e" * 48
RTMR0 = "0c" * 48
OWNER = "de" * 48


def _policy(*mrtds: str, **overrides: Any) -> dict[str, Any]:
    """A valid policy (the format in verifier/evidence/tdx/policy.py)."""
    return {"version": 1, "mrtd": list(mrtds or (GOLDEN,)), **overrides}


@dataclass(frozen=True)
class Pki:
    directory: Path
    server: pki.IssuedFiles
    people: dict[str, pki.IssuedFiles]


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("tdx-policy-pki") / "ca"
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
        tmp_path_factory.mktemp("tdx-policy-verifier"),
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


def _tdx_change(group: str, policy: dict[str, Any] | bytes) -> operator_pb2.ProposedChange:
    data = policy if isinstance(policy, bytes) else json.dumps(policy).encode()
    return operator_pb2.ProposedChange(
        tdx_policy=operator_pb2.TdxPolicyChange(group=group, policy_json=data)
    )


def _propose(stub: Any, change: operator_pb2.ProposedChange) -> Any:
    request = operator_pb2.ProposeChangeRequest(change=change, justification="new firmware")
    return stub.ProposeChange(request, timeout=RPC_TIMEOUT)


def _approve(stub: Any, proposal_id: str) -> Any:
    request = operator_pb2.DecideProposalRequest(proposal_id=proposal_id)
    return stub.ApproveProposal(request, timeout=RPC_TIMEOUT)


def _get_tdx(stub: Any, group: str) -> Any:
    request = operator_pb2.GetReferenceValuesRequest(group=group)
    return stub.GetTdxPolicy(request, timeout=RPC_TIMEOUT)


def _refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def _last_record(verifier: VerifierHarness) -> Any:
    (record,) = verifier.store.audit_records(limit=1, newest=True)
    return record


def test_propose_tdx_applies_at_the_quorum_and_show_tdx_reads_it(
    verifier: VerifierHarness, stubs: dict[str, Any], cli: Any, tmp_path: Path
) -> None:
    path = tmp_path / "tdx.json"
    path.write_text(json.dumps(_policy()))
    code, out, err = cli("olga", "reference", "propose-tdx", "--group", "sapphire",
                         "--policy", str(path), "--justification", "guest image 7")  # fmt: skip
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.endswith(": Intel TDX policy of group sapphire"), out
    assert f"  + mrtd: {GOLDEN}" in out.splitlines()
    # The loader's default, shown so that approvers see which TCB statuses pass.
    assert "  + accepted_tcb_statuses: UpToDate" in out.splitlines()
    proposal_id = first.split()[1].rstrip(":")

    refused = _refused(lambda: _approve(stubs["olga"], proposal_id))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED, "operators do not approve"
    assert _approve(stubs["amy"], proposal_id).state == operator_pb2.PROPOSAL_STATE_PENDING
    assert verifier.store.get_tdx_policy("sapphire") is None, "one approval is not enough"
    assert _refused(lambda: _get_tdx(stubs["vic"], "sapphire")).code() is grpc.StatusCode.NOT_FOUND
    applied = _approve(stubs["bob"], proposal_id)
    assert applied.state == operator_pb2.PROPOSAL_STATE_APPLIED
    assert applied.outcome_detail == "Intel TDX policy of group sapphire replaced"

    record = verifier.store.get_tdx_policy("sapphire")
    assert record is not None
    assert (record.group, record.proposal_id) == ("sapphire", proposal_id)
    assert record.document == _policy()
    assert record.updated_at.tzinfo is not None
    assert verifier.store.get_snp_policy("sapphire") is None, "a policy of its own kind"
    read = _get_tdx(stubs["vic"], "sapphire")
    assert (read.group, read.proposal_id) == ("sapphire", proposal_id)
    assert json.loads(read.policy_json) == _policy()
    audited = _last_record(verifier)
    assert (audited.actor, audited.action, audited.outcome) == ("vic", "GetTdxPolicy", OK)
    assert audited.target == {"group": "sapphire"}

    code, out, err = cli("vic", "reference", "show-tdx", "--group", "sapphire", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["group"] == "sapphire" and shown["proposal_id"] == proposal_id
    assert shown["policy"] == _policy()
    assert shown["updated_at"].endswith("Z")
    code, out, _ = cli("vic", "reference", "show-tdx", "--group", "sapphire")
    assert code == 0
    assert out.startswith(f"Intel TDX policy of group sapphire, set by proposal {proposal_id} at ")
    assert json.loads(out.split("\n", 1)[1]) == _policy()


def test_the_proposer_cannot_approve_their_own_tdx_policy(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    # A security admin may both propose and approve, never their own proposal.
    proposal = _propose(stubs["sam"], _tdx_change("own", _policy()))
    refused = _refused(lambda: _approve(stubs["sam"], proposal.proposal_id))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details().startswith("proposal.self_approval")
    _approve(stubs["amy"], proposal.proposal_id)
    assert verifier.store.get_tdx_policy("own") is None, "the proposer's approval did not count"
    assert verifier.store.get_proposal(proposal.proposal_id).state is ProposalState.PENDING
    _approve(stubs["bob"], proposal.proposal_id)
    record = verifier.store.get_tdx_policy("own")
    assert record is not None and record.proposal_id == proposal.proposal_id


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (_policy(mrtd=[]), "mrtd must be a non-empty list of hex strings"),
        ({"version": 1}, "mrtd must list at least one allowed MRTD"),
        (_policy(allow_everything=True), "unknown policy keys"),
        (_policy(mrtds=[GOLDEN]), "unknown policy keys: ['mrtds']"),
        (_policy(mrtd=["abcd"]), "mrtd: values are 48 bytes"),
        (_policy(rtmr0=["zz" * 48]), "is not hex"),
        (_policy(rtmr2=[]), "rtmr2 must be a non-empty list"),
        (_policy(allow_debug="yes"), "allow_debug must be true or false"),
        (_policy(accepted_tcb_statuses=["Revoked"]), "a Revoked TCB cannot be accepted"),
        (_policy(accepted_tcb_statuses=["Fine"]), "accepted_tcb_statuses must list some of"),
        (_policy(accepted_tcb_statuses=[]), "accepted_tcb_statuses must list some of"),
        (_policy(out_of_date_grace_days=0), "out_of_date_grace_days must be 1..365"),
        (_policy(out_of_date_grace_days=True), "out_of_date_grace_days must be an integer"),
        (_policy(version=2), "policy version must be 1"),
        (b"{not json", "policy is not JSON"),
        (b"[]", "policy must be a JSON object"),
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
    refused = _refused(lambda: _propose(stubs["olga"], _tdx_change("refused", policy)))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details().startswith("tdx_policy.policy_json: "), refused.details()
    assert reason in refused.details()
    assert verifier.store.list_proposals(limit=1000) == before
    assert verifier.store.get_tdx_policy("refused") is None
    audited = _last_record(verifier)
    assert (audited.action, audited.outcome) == ("ProposeChange", "INVALID_ARGUMENT")

    path = tmp_path / "bad.json"
    path.write_bytes(policy if isinstance(policy, bytes) else json.dumps(policy).encode())
    code, out, err = cli("olga", "reference", "propose-tdx", "--group", "refused",
                         "--policy", str(path))  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"weightgate: {path}: "), err
    assert reason in err
    assert verifier.store.list_proposals(limit=1000) == before


def test_an_unreadable_policy_file_is_named_and_nothing_proposed(
    verifier: VerifierHarness, cli: Any, tmp_path: Path
) -> None:
    before = verifier.store.list_proposals(limit=1000)
    missing = tmp_path / "missing.json"
    code, out, err = cli("olga", "reference", "propose-tdx", "--group", "refused",
                         "--policy", str(missing))  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"weightgate: {missing}: cannot read"), err
    assert verifier.store.list_proposals(limit=1000) == before


def test_an_oversized_policy_is_refused_before_it_is_parsed(stubs: dict[str, Any]) -> None:
    padded = json.dumps(_policy()).encode() + b" " * (1 << 20)
    refused = _refused(lambda: _propose(stubs["olga"], _tdx_change("big", padded)))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == f"tdx_policy.policy_json: larger than {1 << 20} bytes"


def test_a_bad_group_name_is_refused(stubs: dict[str, Any]) -> None:
    refused = _refused(lambda: _propose(stubs["olga"], _tdx_change("no/such group", _policy())))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == "tdx_policy.group: not a valid group name"
    refused = _refused(lambda: _get_tdx(stubs["vic"], "no/such group"))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details().startswith("group: ")


def test_a_tdx_policy_proposed_over_a_changed_policy_goes_stale(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    slow = _propose(stubs["olga"], _tdx_change("contested", _policy(GOLDEN)))
    fast = _propose(stubs["otto"], _tdx_change("contested", _policy(OTHER)))
    _approve(stubs["amy"], fast.proposal_id)
    _approve(stubs["bob"], fast.proposal_id)
    _approve(stubs["amy"], slow.proposal_id)
    refused = _refused(lambda: _approve(stubs["bob"], slow.proposal_id))
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.details().startswith("proposal.stale")
    assert verifier.store.get_proposal(slow.proposal_id).state is ProposalState.STALE
    record = verifier.store.get_tdx_policy("contested")
    assert record is not None and record.document == _policy(OTHER)
    assert record.proposal_id == fast.proposal_id

    # Over the policy now in force, a new proposal shows only what it changes; hex in
    # any case is the same value to the loader, so it is compared in lower case.
    again = _propose(stubs["olga"], _tdx_change("contested", _policy(OTHER.upper(), GOLDEN)))
    assert list(again.diff) == [f"+ mrtd: {GOLDEN}"]
    registers = _propose(
        stubs["otto"],
        _tdx_change(
            "contested",
            _policy(GOLDEN, rtmr0=[RTMR0], mrconfigid=[OTHER], mrowner=[OWNER]),
        ),
    )
    assert list(registers.diff) == [
        f"- mrtd: {OTHER}",
        f"+ mrtd: {GOLDEN}",
        f"+ rtmr0: {RTMR0}",
        f"+ mrconfigid: {OTHER}",
        f"+ mrowner: {OWNER}",
    ]
    statuses = _propose(
        stubs["otto"],
        _tdx_change("contested", _policy(OTHER, accepted_tcb_statuses=["SWHardeningNeeded"])),
    )
    assert list(statuses.diff) == [
        "- accepted_tcb_statuses: UpToDate",
        "+ accepted_tcb_statuses: SWHardeningNeeded",
    ]
    looser = _propose(
        stubs["otto"],
        _tdx_change("contested", _policy(OTHER, allow_debug=True, out_of_date_grace_days=30)),
    )
    assert list(looser.diff) == ["+ allow_debug: true", "+ out_of_date_grace_days: 30"]
    # Naming the loader's default changes nothing that appraisal enforces.
    same = _propose(
        stubs["otto"], _tdx_change("contested", _policy(OTHER, accepted_tcb_statuses=["UpToDate"]))
    )
    assert list(same.diff) == ["(no change)"]


def test_get_tdx_policy_is_not_found_for_a_group_without_one(
    verifier: VerifierHarness, stubs: dict[str, Any], cli: Any
) -> None:
    refused = _refused(lambda: _get_tdx(stubs["vic"], "nobody"))
    assert refused.code() is grpc.StatusCode.NOT_FOUND
    assert refused.details() == "no Intel TDX policy for group 'nobody'"
    audited = _last_record(verifier)
    assert (audited.actor, audited.action, audited.outcome) == ("vic", "GetTdxPolicy", "NOT_FOUND")
    assert audited.target == {"group": "nobody"}
    code, _, err = cli("vic", "reference", "show-tdx", "--group", "nobody", "--json")
    assert code == 1 and "NOT_FOUND" in err
