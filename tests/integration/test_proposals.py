"""The two-person rule over real gRPC and real mutual TLS, against a real store.

Two approvals are needed for every kind here. People come from the `weightgate
pki` evaluation CA: two operators who propose, two approvers, a security
admin (who may both propose and approve, never their own), and a viewer.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from tests.mtls import client_channels
from tests.verifier_harness import VerifierHarness, running_verifier
from verifier import pki
from verifier.audit.chain import OK, AuditEntry, verify_chain
from verifier.cli import main
from verifier.config import PROPOSAL_KINDS, ApprovalPolicy, TlsConfig
from verifier.identity import Role
from verifier.store import ProposalState, SelfApproval, Store
from weightgate.v1 import common_pb2, operator_pb2, operator_pb2_grpc

RPC_TIMEOUT = 10.0
TTL_SECONDS = 4.0
PEOPLE = {
    "olga": [Role.OPERATOR],
    "otto": [Role.OPERATOR],
    "amy": [Role.APPROVER],
    "bob": [Role.APPROVER],
    "sam": [Role.SECURITY_ADMIN],
    "vic": [Role.VIEWER],
}


@dataclass(frozen=True)
class Pki:
    directory: Path
    server: pki.IssuedFiles
    people: dict[str, pki.IssuedFiles]


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("proposals-pki") / "ca"
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
    approvals = ApprovalPolicy({kind: 2 for kind in PROPOSAL_KINDS}, TTL_SECONDS)
    with running_verifier(
        tmp_path_factory.mktemp("proposals-verifier"),
        ek_ca_certificates=(),
        insecure=False,
        tls=tls,
        approvals=approvals,
    ) as harness:
        yield harness


@pytest.fixture(scope="module")
def stubs(verifier: VerifierHarness, material: Pki) -> Iterator[dict[str, Any]]:
    with client_channels(verifier.address, material.directory, material.people) as channels:
        yield {name: operator_pb2_grpc.OperatorStub(c) for name, c in channels.items()}


def _reference_change(group: str, fill: str) -> operator_pb2.ProposedChange:
    bank = common_pb2.PcrBank(hash_algorithm="sha256", values={0: bytes.fromhex(fill * 32)})
    return operator_pb2.ProposedChange(
        reference_values=operator_pb2.SetReferenceValuesRequest(group=group, pcrs=[bank])
    )


def _site_change(site_id: str, tiers: list[str]) -> operator_pb2.ProposedChange:
    site = operator_pb2.Site(site_id=site_id, cleared_risk_tiers=tiers, description="dc")
    return operator_pb2.ProposedChange(site=operator_pb2.SetSiteRequest(site=site))


def _propose(stub: Any, change: operator_pb2.ProposedChange, why: str = "") -> Any:
    request = operator_pb2.ProposeChangeRequest(change=change, justification=why)
    return stub.ProposeChange(request, timeout=RPC_TIMEOUT)


def _approve(stub: Any, proposal_id: str, comment: str = "") -> Any:
    request = operator_pb2.DecideProposalRequest(proposal_id=proposal_id, comment=comment)
    return stub.ApproveProposal(request, timeout=RPC_TIMEOUT)


def _reject(stub: Any, proposal_id: str) -> Any:
    request = operator_pb2.DecideProposalRequest(proposal_id=proposal_id)
    return stub.RejectProposal(request, timeout=RPC_TIMEOUT)


def _refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def _last_record(verifier: VerifierHarness) -> Any:
    (record,) = verifier.store.audit_records(limit=1, newest=True)
    return record


# -- the quorum ------------------------------------------------------------------------


def test_reference_values_take_effect_only_at_the_quorum(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    proposal = _propose(stubs["olga"], _reference_change("quorum", "aa"), "new firmware")
    assert proposal.state == operator_pb2.PROPOSAL_STATE_PENDING
    assert (proposal.proposer, proposal.required_approvals) == ("olga", 2)
    assert list(proposal.diff) == [f"+ sha256[0] = {'aa' * 32}"]
    proposed = _last_record(verifier)
    assert (proposed.actor, proposed.action, proposed.outcome) == ("olga", "ProposeChange", OK)
    assert proposed.details["proposal_id"] == proposal.proposal_id
    assert proposed.details["justification"] == "new firmware"
    assert verifier.store.get_reference("quorum") is None

    first = _approve(stubs["amy"], proposal.proposal_id, "checked the RIM")
    assert first.state == operator_pb2.PROPOSAL_STATE_PENDING
    assert verifier.store.get_reference("quorum") is None, "one approval is not enough"

    applied = _approve(stubs["bob"], proposal.proposal_id)
    assert applied.state == operator_pb2.PROPOSAL_STATE_APPLIED
    assert [d.actor for d in applied.decisions] == ["amy", "bob"]
    assert applied.decisions[0].comment == "checked the RIM"
    reference = verifier.store.get_reference("quorum")
    assert reference is not None and reference.pcrs == {"sha256": {0: bytes.fromhex("aa" * 32)}}
    record = _last_record(verifier)
    assert (record.actor, record.action, record.outcome) == ("bob", "ApproveProposal", OK)
    assert record.target == {"proposal_id": proposal.proposal_id}
    assert record.details["result"] == "applied"
    assert verify_chain(verifier.store.audit_records(limit=1000), head=verifier.store.audit_head())

    # A decided proposal cannot be decided again.
    again = _refused(lambda: _approve(stubs["sam"], proposal.proposal_id))
    assert again.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert again.details().startswith("proposal.not_pending")


def test_a_replacement_shows_what_it_replaces(stubs: dict[str, Any]) -> None:
    first = _propose(stubs["olga"], _reference_change("diffed", "11"))
    _approve(stubs["amy"], first.proposal_id)
    _approve(stubs["bob"], first.proposal_id)
    second = _propose(stubs["otto"], _reference_change("diffed", "22"))
    assert list(second.diff) == [f"- sha256[0] = {'11' * 32}", f"+ sha256[0] = {'22' * 32}"]


def test_self_approval_is_refused_audited_and_changes_nothing(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    proposal = _propose(stubs["sam"], _site_change("self-approved", ["high"]))
    refused = _refused(lambda: _approve(stubs["sam"], proposal.proposal_id))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details().startswith("proposal.self_approval")
    record = _last_record(verifier)
    assert (record.actor, record.action, record.outcome) == (
        "sam",
        "ApproveProposal",
        "PERMISSION_DENIED",
    )
    shown = stubs["vic"].GetProposal(
        operator_pb2.GetProposalRequest(proposal_id=proposal.proposal_id), timeout=RPC_TIMEOUT
    )
    assert shown.state == operator_pb2.PROPOSAL_STATE_PENDING and not shown.decisions
    assert verifier.store.get_site("self-approved") is None


def test_the_same_approver_twice_counts_once(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    proposal = _propose(stubs["olga"], _site_change("twice", ["low"]))
    _approve(stubs["amy"], proposal.proposal_id)
    refused = _refused(lambda: _approve(stubs["amy"], proposal.proposal_id))
    assert refused.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "counts once" in refused.details()
    shown = stubs["vic"].GetProposal(
        operator_pb2.GetProposalRequest(proposal_id=proposal.proposal_id), timeout=RPC_TIMEOUT
    )
    assert shown.state == operator_pb2.PROPOSAL_STATE_PENDING
    assert [d.actor for d in shown.decisions] == ["amy"]
    assert verifier.store.get_site("twice") is None


def test_one_rejection_ends_a_proposal(verifier: VerifierHarness, stubs: dict[str, Any]) -> None:
    proposal = _propose(stubs["olga"], _site_change("rejected", ["low"]))
    _approve(stubs["amy"], proposal.proposal_id)
    rejected = _reject(stubs["bob"], proposal.proposal_id)
    assert rejected.state == operator_pb2.PROPOSAL_STATE_REJECTED
    assert rejected.outcome_detail == "rejected by bob"
    late = _refused(lambda: _approve(stubs["sam"], proposal.proposal_id))
    assert late.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert verifier.store.get_site("rejected") is None


def test_roles_and_withdrawal(verifier: VerifierHarness, stubs: dict[str, Any]) -> None:
    viewer = _refused(lambda: _propose(stubs["vic"], _site_change("by-viewer", ["low"])))
    assert viewer.code() is grpc.StatusCode.PERMISSION_DENIED
    proposal = _propose(stubs["olga"], _site_change("withdrawn", ["low"]))
    operator_approves = _refused(lambda: _approve(stubs["otto"], proposal.proposal_id))
    assert operator_approves.code() is grpc.StatusCode.PERMISSION_DENIED
    assert operator_approves.details().startswith("authz.denied")
    other_operator = _refused(lambda: _reject(stubs["otto"], proposal.proposal_id))
    assert other_operator.code() is grpc.StatusCode.PERMISSION_DENIED
    withdrawn = _reject(stubs["olga"], proposal.proposal_id)
    assert withdrawn.state == operator_pb2.PROPOSAL_STATE_REJECTED
    assert withdrawn.outcome_detail == "withdrawn by olga"


def test_an_expired_proposal_cannot_be_applied(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    proposal = _propose(stubs["olga"], _site_change("expired", ["high"]))
    _approve(stubs["amy"], proposal.proposal_id)
    time.sleep(TTL_SECONDS + 0.5)
    refused = _refused(lambda: _approve(stubs["bob"], proposal.proposal_id))
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.details().startswith("proposal.expired")
    record = _last_record(verifier)
    assert (record.actor, record.outcome) == ("bob", "FAILED_PRECONDITION")
    assert record.details["result"] == "expired"
    assert verifier.store.get_site("expired") is None
    shown = stubs["vic"].GetProposal(
        operator_pb2.GetProposalRequest(proposal_id=proposal.proposal_id), timeout=RPC_TIMEOUT
    )
    assert shown.state == operator_pb2.PROPOSAL_STATE_EXPIRED


def test_listing_expires_what_ran_out_of_time(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    proposal = _propose(stubs["olga"], _site_change("forgotten", ["low"]))
    time.sleep(TTL_SECONDS + 0.5)
    pending = stubs["vic"].ListProposals(
        operator_pb2.ListProposalsRequest(state=operator_pb2.PROPOSAL_STATE_PENDING),
        timeout=RPC_TIMEOUT,
    )
    assert proposal.proposal_id not in [p.proposal_id for p in pending.proposals]
    expiries = [
        r
        for r in verifier.store.audit_records(limit=50, newest=True)
        if r.action == "ExpireProposal" and r.target["proposal_id"] == proposal.proposal_id
    ]
    assert len(expiries) == 1 and expiries[0].actor == "weightgate-verifier"


def test_a_proposal_over_a_changed_state_goes_stale(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    slow = _propose(stubs["olga"], _site_change("contested", ["low"]))
    fast = _propose(stubs["otto"], _site_change("contested", ["high"]))
    _approve(stubs["amy"], fast.proposal_id)
    _approve(stubs["bob"], fast.proposal_id)
    _approve(stubs["amy"], slow.proposal_id)
    refused = _refused(lambda: _approve(stubs["bob"], slow.proposal_id))
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.details().startswith("proposal.stale")
    site = verifier.store.get_site("contested")
    assert site is not None and site.cleared_risk_tiers == {"high"}


def test_host_assignment_and_unknown_targets(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    stubs["olga"].RegisterHost(
        operator_pb2.RegisterHostRequest(host_id="assigned-host", group="g"), timeout=RPC_TIMEOUT
    )
    site = _propose(stubs["olga"], _site_change("dc-assign", ["low"]))
    _approve(stubs["amy"], site.proposal_id)
    _approve(stubs["bob"], site.proposal_id)
    change = operator_pb2.ProposedChange(
        host_site=operator_pb2.AssignHostToSiteRequest(host_id="assigned-host", site_id="dc-assign")
    )
    proposal = _propose(stubs["olga"], change)
    assert list(proposal.diff) == ["- site: (none)", "+ site: dc-assign"]
    _approve(stubs["sam"], proposal.proposal_id)
    assert verifier.store.get_host("assigned-host").site is None
    watch = stubs["vic"].WatchHosts(
        operator_pb2.WatchHostsRequest(host_ids=["assigned-host"], include_current=True),
        timeout=RPC_TIMEOUT,
    )
    try:
        assert next(watch).cause == "snapshot"  # subscribed: no change can slip by now
        _approve(stubs["amy"], proposal.proposal_id)
        assert verifier.store.get_host("assigned-host").site == "dc-assign"
        change = next(watch)
    finally:
        watch.cancel()
    assert (change.cause, change.host.host_id, change.host.site) == (
        "site_assigned",
        "assigned-host",
        "dc-assign",
    )

    missing = operator_pb2.ProposedChange(
        host_site=operator_pb2.AssignHostToSiteRequest(host_id="no-such-host", site_id="dc-assign")
    )
    refused = _refused(lambda: _propose(stubs["olga"], missing))
    assert refused.code() is grpc.StatusCode.NOT_FOUND


def test_reviews_need_categories_and_known_controls_and_carry_their_approvers(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    site = _propose(stubs["olga"], _site_change("dc-review", ["high"]))
    _approve(stubs["amy"], site.proposal_id)
    _approve(stubs["bob"], site.proposal_id)
    manifest = b"a manifest the store takes on trust; the server would verify it"
    digest = hashlib.sha256(manifest).digest()
    verifier.store.add_model_version(
        manifest=manifest,
        manifest_signature=b"sig",
        manifest_digest=digest,
        name="frontier",
        version="1",
        risk_tier="high",
        file_count=1,
        plaintext_bytes=1,
        wrapped_data_keys={"00" * 16: b"wrapped"},
        now=datetime.now(UTC),
    )

    def review(**fields: Any) -> operator_pb2.ProposedChange:
        request = operator_pb2.RecordReviewRequest(
            manifest_digest=digest, site_id="dc-review", **fields
        )
        return operator_pb2.ProposedChange(review=request)

    no_categories = _refused(lambda: _propose(stubs["olga"], review()))
    assert no_categories.code() is grpc.StatusCode.INVALID_ARGUMENT
    typo = _refused(
        lambda: _propose(
            stubs["olga"], review(categories_assessed=["cyber"], required_controls=["cvm"])
        )
    )
    assert typo.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "confidential_vm" in typo.details(), "the refusal lists the known controls"
    lower = _refused(
        lambda: _propose(stubs["olga"], review(categories_assessed=["cyber"], risk_tier="low"))
    )
    assert lower.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "tier_mismatch" in lower.details()

    proposal = _propose(
        stubs["olga"],
        review(
            categories_assessed=["cyber", "cbrn"],
            required_controls=["confidential_vm"],
            findings="no blocking findings",
            valid_days=30,
        ),
    )
    assert verifier.store.effective_review(digest, "dc-review", now=datetime.now(UTC)) is None
    _approve(stubs["amy"], proposal.proposal_id)
    _approve(stubs["sam"], proposal.proposal_id)
    effective = verifier.store.effective_review(digest, "dc-review", now=datetime.now(UTC))
    assert effective is not None
    assert (effective.reviewer, effective.approvers) == ("olga", ("amy", "sam"))
    assert effective.risk_tier == "high", "an empty tier takes the manifest's"
    assert effective.required_controls == ("confidential_vm",)
    assert effective.categories_assessed == ("cbrn", "cyber")
    assert effective.proposal_id == proposal.proposal_id
    assert effective.expires_at - effective.recorded_at == timedelta(days=30)
    listed = stubs["vic"].ListReviews(
        operator_pb2.ListReviewsRequest(site_id="dc-review", effective_only=True),
        timeout=RPC_TIMEOUT,
    )
    assert [r.review_id for r in listed.reviews] == [effective.review_id]
    assert "confidential_vm" in listed.known_controls


def test_change_and_audit_record_commit_together(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    """With the audit head gone no record can be written: the quorum-reaching
    approval then changes nothing, and the client hears INTERNAL."""
    proposal = _propose(stubs["olga"], _site_change("atomic", ["low"]))
    _approve(stubs["amy"], proposal.proposal_id)
    store: Store = verifier.store
    with store._engine.begin() as conn:
        head = conn.execute(sa.text("SELECT seq, hash FROM audit_head")).one()
        conn.execute(sa.text("DELETE FROM audit_head"))
    try:
        refused = _refused(lambda: _approve(stubs["bob"], proposal.proposal_id))
    finally:
        with store._engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO audit_head (id, seq, hash) VALUES (1, :seq, :hash)"),
                {"seq": head.seq, "hash": head.hash},
            )
    assert refused.code() is grpc.StatusCode.INTERNAL
    assert store.get_site("atomic") is None
    still = store.get_proposal(proposal.proposal_id)
    assert still is not None and still.state is ProposalState.PENDING
    assert still.approvers == ("amy",)
    applied = _approve(stubs["bob"], proposal.proposal_id)
    assert applied.state == operator_pb2.PROPOSAL_STATE_APPLIED


# -- the store's own checks (whatever the server did) ------------------------------------


def test_the_store_refuses_self_approval_and_bad_quorums(verifier: VerifierHarness) -> None:
    store: Store = verifier.store
    now = datetime.now(UTC)
    entry = AuditEntry(now, "olga", "ProposeChange", {}, OK, {})
    proposal = store.create_proposal(
        kind="site",
        target="site store-level",
        payload={"site_id": "store-level", "cleared_risk_tiers": [], "description": ""},
        proposer="olga",
        justification="",
        required_approvals=1,
        now=now,
        expires_at=now + timedelta(hours=1),
        audit=entry,
    )
    with pytest.raises(SelfApproval):
        store.decide_proposal(
            proposal.proposal_id,
            actor="olga",
            approve=True,
            comment="",
            now=now,
            audit=replace(entry, action="ApproveProposal"),
        )
    with pytest.raises(ValueError, match="unknown proposal kind"):
        store.create_proposal(**{**_kwargs(now, entry), "kind": "trust_everything"})


def _kwargs(now: datetime, entry: AuditEntry) -> dict[str, Any]:
    return {
        "kind": "site",
        "target": "t",
        "payload": {},
        "proposer": "olga",
        "justification": "",
        "required_approvals": 1,
        "now": now,
        "expires_at": now + timedelta(hours=1),
        "audit": entry,
    }


# -- the command line --------------------------------------------------------------------


def test_cli_propose_show_approve(
    verifier: VerifierHarness,
    material: Pki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def cli(who: str, *argv: str) -> tuple[int, str, str]:
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

    pcrs = tmp_path / "pcrs.json"
    pcrs.write_text('{"pcrs": {"sha256": {"7": "' + "cd" * 32 + '"}}}')
    code, out, _ = cli("olga", "reference", "set", "--group", "cli", "--pcrs", str(pcrs),
                       "--justification", "golden from host-1")  # fmt: skip
    assert code == 0
    first = out.splitlines()[0]
    assert first.startswith("proposal ") and first.endswith("reference values of group cli")
    proposal_id = first.split()[1].rstrip(":")
    assert f"+ sha256[7] = {'cd' * 32}" in out
    assert f"weightgate proposals approve {proposal_id}" in out

    code, out, _ = cli("vic", "proposals", "list", "--state", "pending")
    assert code == 0 and proposal_id in out and "0/2" in out
    code, out, _ = cli("amy", "proposals", "show", proposal_id)
    assert code == 0 and "why:         golden from host-1" in out
    assert f"+ sha256[7] = {'cd' * 32}" in out

    code, _, err = cli("olga", "proposals", "approve", proposal_id)
    assert code == 1 and "PERMISSION_DENIED" in err
    code, out, _ = cli("amy", "proposals", "approve", proposal_id, "--comment", "matches RIM")
    assert (code, out.strip()) == (
        0,
        f"proposal {proposal_id}: 1 of 2 approvals; waiting for more",
    )
    code, out, _ = cli("bob", "proposals", "approve", proposal_id)
    assert code == 0
    assert out.strip() == (
        f"proposal {proposal_id} applied: reference values of group cli replaced (1 PCRs)"
    )
    code, out, _ = cli("vic", "reference", "show", "--group", "cli")
    assert code == 0 and "cd" * 32 in out


def test_break_glass_is_a_bounded_approved_grant(
    verifier: VerifierHarness, stubs: dict[str, Any]
) -> None:
    stubs["olga"].RegisterHost(
        operator_pb2.RegisterHostRequest(host_id="glass-host", group="g"), timeout=RPC_TIMEOUT
    )
    manifest = b"another manifest for break-glass"
    digest = hashlib.sha256(manifest).digest()
    verifier.store.add_model_version(
        manifest=manifest, manifest_signature=b"sig", manifest_digest=digest, name="glass",
        version="1", risk_tier="high", file_count=1, plaintext_bytes=1,
        wrapped_data_keys={"00" * 16: b"wrapped"}, now=datetime.now(UTC),
    )  # fmt: skip

    def grant(hours: int) -> operator_pb2.ProposedChange:
        request = operator_pb2.BreakGlassRelease(
            host_id="glass-host", manifest_digest=digest, hours=hours
        )
        return operator_pb2.ProposedChange(break_glass=request)

    for hours in (0, 73):
        refused = _refused(lambda h=hours: _propose(stubs["olga"], grant(h), "incident"))
        assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT, hours
    proposal = _propose(stubs["olga"], grant(4), "incident 4711: restore serving")
    assert "without site clearance or review" in proposal.diff[0]
    _approve(stubs["amy"], proposal.proposal_id)
    now = datetime.now(UTC)
    assert verifier.store.active_break_glass("glass-host", digest, now=now) is None
    _approve(stubs["bob"], proposal.proposal_id)
    active = verifier.store.active_break_glass("glass-host", digest, now=datetime.now(UTC))
    assert active is not None and active.approvers == ("amy", "bob")
    assert active.expires_at - active.granted_at == timedelta(hours=4)
    later = active.expires_at + timedelta(seconds=1)
    assert verifier.store.active_break_glass("glass-host", digest, now=later) is None
    events = [e.kind for e in verifier.store.events("glass-host")]
    assert "break_glass" in events
