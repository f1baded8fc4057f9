"""TDX policy loading: deny by default, permissive or malformed files refused."""

from __future__ import annotations

import json

import pytest

from verifier.evidence.tdx.policy import PolicyError, load_policy

MRTD = "ab" * 48


def test_minimal_policy_defaults_deny_debug_and_accept_only_up_to_date() -> None:
    policy = load_policy(json.dumps({"version": 1, "mrtd": [MRTD]}))
    assert policy.mrtd == frozenset({bytes.fromhex(MRTD)})
    assert policy.allow_debug is False
    assert policy.tcb.accepted == frozenset({"UpToDate"})
    assert policy.tcb.out_of_date_grace is None


@pytest.mark.parametrize(
    "doc",
    [
        {"version": 1},
        {"version": 1, "mrtd": []},
        {"version": 2, "mrtd": [MRTD]},
        {"version": 1, "mrtd": ["abcd"]},
        {"version": 1, "mrtd": [MRTD], "rtmr0": []},
        {"version": 1, "mrtd": [MRTD], "mrtds": [MRTD]},
        {"version": 1, "mrtd": [MRTD], "allow_debug": "no"},
        {"version": 1, "mrtd": [MRTD], "accepted_tcb_statuses": ["Revoked"]},
        {"version": 1, "mrtd": [MRTD], "accepted_tcb_statuses": ["Fine"]},
        {"version": 1, "mrtd": [MRTD], "accepted_tcb_statuses": []},
        {"version": 1, "mrtd": [MRTD], "out_of_date_grace_days": 0},
        {"version": 1, "mrtd": [MRTD], "out_of_date_grace_days": 10000},
    ],
)
def test_refused(doc: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        load_policy(json.dumps(doc))
