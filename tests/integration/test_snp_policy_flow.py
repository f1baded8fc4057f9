"""A host group's AMD SEV-SNP policy under the two-person rule, and its read.

Real gRPC over loopback with mutual TLS, a real store: `weightgate reference
propose-snp` proposes, approvers other than the proposer apply it, and
GetSnpPolicy (`reference show-snp`) reads what is in force. People come from
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
# The launch measurement of the shared Trustee v2 vector (tests/unit/test_snp_appraise.py).
TRUSTEE = (
    "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c"
    "23500644e0e692e6be917f9050d3d38c"
)
OTHER = "5e" * 48
MILAN_TCB = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}


def _policy(*measurements: str, **overrides: Any) -> dict[str, Any]:
    """A valid policy (the format in verifier/evidence/snp/policy.py)."""
    return {
        "version": 1,
        "allowed_measurements": list(measurements or (TRUSTEE,)),
        "min_tcb": {"Milan": MILAN_TCB},
        **overrides,
    }


@dataclass(frozen=True)
class Pki:
    directory: Path
    server: pki.IssuedFiles
    people: dict[str, pki.IssuedFiles]


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("snp-policy-pki") / "ca"
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
        tmp_path_factory.mktemp("snp-policy-verifier"),
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


def _snp_change(group: str, policy: dict[str, Any] | bytes) -> operator_pb2.ProposedChange:
    data = policy if isinstance(policy, bytes) else json.dumps(policy).encode()
    return operator_pb2.ProposedChange(
        snp_policy=operator_pb2.SnpPolicyChange(group=group, policy_json=data)
    )


def _propose(stub: Any, change: operator_pb2.ProposedChange) -> Any:
    request = operator_pb2.ProposeChangeRequest(change=change, justification="new firmware")
    return stub.ProposeChange(request, timeout=RPC_TIMEOUT)


def _approve(stub: Any, proposal_id: str) -> Any:
    request = operator_pb2.DecideProposalRequest(proposal_id=proposal_id)
    return stub.ApproveProposal(request, timeout=RPC_TIMEOUT)


def _get_snp(stub: Any, group: str) -> Any:
    request = operator_pb2.GetReferenceValuesRequest(group=group)
    return stub.GetSnpPolicy(request, timeout=RPC_TIMEOUT)


def _refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def _last_record(verifier: VerifierHarness) -> Any:
    (record,) = verifier.store.audit_records(limit=1, newest=True)
    return record


def test_propose_snp_applies_at_the_quorum_and_show_snp_reads_it(
    verifier: VerifierHarness, stubs: dict[str, Any], cli: Any, tmp_path: Path
) -> None:
    path = tmp_path / "snp.json"
    path.write_text(json.dumps(_policy()))
    code, out, err = cli("olga", "reference", "propose-snp", "--group", "milan",
                         "--policy", str(path), "--justification", "guest image 7")  # fmt: skip
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.endswith(": AMD SEV-SNP policy of group milan"), out
    assert f"  + allowed_measurements: {TRUSTEE}" in out.splitlines()
    assert (
        f"  + min_tcb[Milan]: {json.dumps(MILAN_TCB, sort_keys=True, separators=(',', ':'))}"
        in (out.splitlines())
    )
    proposal_id = first.split()[1].rstrip(":")

    refused = _refused(lambda: _approve(stubs["olga"], proposal_id))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED, "operators do not approve"
    assert _approve(stubs["amy"], proposal_id).state == operator_pb2.PROPOSAL_STATE_PENDING
    assert verifier.store.get_snp_policy("milan") is None, "one approval is not enough"
    assert _refused(lambda: _get_snp(stubs["vic"], "milan")).code() is grpc.StatusCode.NOT_FOUND
    applied = _approve(stubs["bob"], proposal_id)
    assert applied.state == operator_pb2.PROPOSAL_STATE_APPLIED
    assert applied.outcome_detail == "AMD SEV-SNP policy of group milan replaced"

    record = verifier.store.get_snp_policy("milan")
    assert record is not None
    assert (record.group, record.proposal_id) == ("milan", proposal_id)
    assert record.document == _policy()
    assert verifier.store.get_gpu_policy("milan") is None, "a policy of its own kind"
    read = _get_snp(stubs["vic"], "milan")
    assert (read.group, read.proposal_id) == ("milan", proposal_id)
    assert json.loads(read.policy_json) == _policy()
    audited = _last_record(verifier)
    assert (audited.actor, audited.action, audited.outcome) == ("vic", "GetSnpPolicy", OK)
    assert audited.target == {"group": "milan"}

    code, out, err = cli("vic", "reference", "show-snp", "--group", "milan", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["group"] == "milan" and shown["proposal_id"] == proposal_id
    assert shown["policy"] == _policy()
    assert shown["updated_at"].endswith("Z")
    code, out, _ = cli("vic", "reference", "show-snp", "--group", "milan")
    assert code == 0
    assert out.startswith(f"AMD SEV-SNP policy of group milan, set by proposal {proposal_id} at ")
    assert json.loads(out.split("\n", 1)[1]) == _policy()


def test_the_proposer_cannot_approve_their_own_snp_policy(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    # A security admin may both propose and approve, never their own proposal.
    proposal = _propose(stubs["sam"], _snp_change("own", _policy()))
    refused = _refused(lambda: _approve(stubs["sam"], proposal.proposal_id))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details().startswith("proposal.self_approval")
    _approve(stubs["amy"], proposal.proposal_id)
    assert verifier.store.get_snp_policy("own") is None, "the proposer's approval did not count"
    assert verifier.store.get_proposal(proposal.proposal_id).state is ProposalState.PENDING
    _approve(stubs["bob"], proposal.proposal_id)
    record = verifier.store.get_snp_policy("own")
    assert record is not None and record.proposal_id == proposal.proposal_id


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (_policy(allowed_measurements=[]), "allowed_measurements must be a non-empty list"),
        (
            {k: v for k, v in _policy().items() if k != "allowed_measurements"},
            "allowed_measurements must list at least one launch measurement",
        ),
        (_policy(min_tcb={}), "min_tcb must map at least one product line"),
        (_policy(allow_everything=True), "unknown policy keys"),
        (_policy(min_tcb={"Milan": {"bootloader": 3}}), "min_tcb[Milan] must give exactly"),
        (_policy(min_tcb={"Zen9": MILAN_TCB}), "unknown product line 'Zen9'"),
        (_policy(allowed_measurements=["abcd"]), "must be 48 bytes"),
        (_policy(allow_debug="yes"), "allow_debug must be true or false"),
        (_policy(max_vmpl=4), "max_vmpl must be an integer 0-3"),
        (_policy(allowed_signing_keys=["ANY"]), "allowed_signing_keys must be a non-empty list"),
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
    refused = _refused(lambda: _propose(stubs["olga"], _snp_change("refused", policy)))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details().startswith("snp_policy.policy_json: "), refused.details()
    assert reason in refused.details()
    assert verifier.store.list_proposals(limit=1000) == before
    assert verifier.store.get_snp_policy("refused") is None
    audited = _last_record(verifier)
    assert (audited.action, audited.outcome) == ("ProposeChange", "INVALID_ARGUMENT")

    path = tmp_path / "bad.json"
    path.write_bytes(policy if isinstance(policy, bytes) else json.dumps(policy).encode())
    code, out, err = cli("olga", "reference", "propose-snp", "--group", "refused",
                         "--policy", str(path))  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"weightgate: {path}: "), err
    assert reason in err
    assert verifier.store.list_proposals(limit=1000) == before


def test_an_oversized_policy_is_refused_before_it_is_parsed(stubs: dict[str, Any]) -> None:
    padded = json.dumps(_policy()).encode() + b" " * (1 << 20)
    refused = _refused(lambda: _propose(stubs["olga"], _snp_change("big", padded)))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == f"snp_policy.policy_json: larger than {1 << 20} bytes"


def test_a_bad_group_name_is_refused(stubs: dict[str, Any]) -> None:
    refused = _refused(lambda: _propose(stubs["olga"], _snp_change("no/such group", _policy())))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == "snp_policy.group: not a valid group name"
    refused = _refused(lambda: _get_snp(stubs["vic"], "no/such group"))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details().startswith("group: ")


def test_an_snp_policy_proposed_over_a_changed_policy_goes_stale(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    slow = _propose(stubs["olga"], _snp_change("contested", _policy(TRUSTEE)))
    fast = _propose(stubs["otto"], _snp_change("contested", _policy(OTHER)))
    _approve(stubs["amy"], fast.proposal_id)
    _approve(stubs["bob"], fast.proposal_id)
    _approve(stubs["amy"], slow.proposal_id)
    refused = _refused(lambda: _approve(stubs["bob"], slow.proposal_id))
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.details().startswith("proposal.stale")
    assert verifier.store.get_proposal(slow.proposal_id).state is ProposalState.STALE
    record = verifier.store.get_snp_policy("contested")
    assert record is not None and record.document == _policy(OTHER)
    assert record.proposal_id == fast.proposal_id

    # Over the policy now in force, a new proposal shows only what it changes.
    again = _propose(stubs["olga"], _snp_change("contested", _policy(OTHER, TRUSTEE)))
    assert list(again.diff) == [f"+ allowed_measurements: {TRUSTEE}"]
    newer_tcb = {**MILAN_TCB, "microcode": 120}
    stricter = _propose(
        stubs["otto"],
        _snp_change(
            "contested",
            _policy(OTHER, min_tcb={"Milan": newer_tcb}, allowed_signing_keys=["VLEK"]),
        ),
    )
    tcb = json.dumps(MILAN_TCB, sort_keys=True, separators=(",", ":"))
    new_tcb = json.dumps(newer_tcb, sort_keys=True, separators=(",", ":"))
    assert list(stricter.diff) == [
        "- allowed_signing_keys: VCEK",
        "+ allowed_signing_keys: VLEK",
        f"- min_tcb[Milan]: {tcb}",
        f"+ min_tcb[Milan]: {new_tcb}",
    ]
    looser = _propose(stubs["otto"], _snp_change("contested", _policy(OTHER, allow_smt=True)))
    assert list(looser.diff) == ["+ allow_smt: true"]


def test_get_snp_policy_is_not_found_for_a_group_without_one(
    verifier: VerifierHarness, stubs: dict[str, Any], cli: Any
) -> None:
    refused = _refused(lambda: _get_snp(stubs["vic"], "nobody"))
    assert refused.code() is grpc.StatusCode.NOT_FOUND
    assert refused.details() == "no AMD SEV-SNP policy for group 'nobody'"
    audited = _last_record(verifier)
    assert (audited.actor, audited.action, audited.outcome) == ("vic", "GetSnpPolicy", "NOT_FOUND")
    assert audited.target == {"group": "nobody"}
    code, _, err = cli("vic", "reference", "show-snp", "--group", "nobody", "--json")
    assert code == 1 and "NOT_FOUND" in err
