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
    assert (policy.allow_migratable, policy.allow_sept_ve) == (False, False)
    assert (policy.tdattributes, policy.mrservicetd) == (None, None)
    assert policy.registers == ()


def test_td_field_keys_load() -> None:
    doc = {
        "version": 1,
        "mrtd": [MRTD],
        "xfam": ["E71A060000000000"],
        "mrseam": ["cd" * 48],
        "mrownerconfig": ["ef" * 48],
        "mrservicetd": ["00" * 48, "12" * 48],
        "allow_migratable": True,
        "allow_sept_ve": True,
        "tdattributes": "0000002000000000",
        "tdattributes_mask": "00000030ffffffff",
    }
    policy = load_policy(json.dumps(doc))
    assert dict(policy.registers) == {
        "mrownerconfig": frozenset({bytes.fromhex("ef" * 48)}),
        "mrseam": frozenset({bytes.fromhex("cd" * 48)}),
        "xfam": frozenset({bytes.fromhex("e71a060000000000")}),
    }
    assert policy.mrservicetd == frozenset({bytes(48), bytes.fromhex("12" * 48)})
    assert (policy.allow_migratable, policy.allow_sept_ve) == (True, True)
    # Quote byte order: little-endian, bit 29 (MIGRATABLE) is byte 3's 0x20.
    assert policy.tdattributes == (1 << 29, 0xFFFFFFFF_30000000)
    exact = load_policy(
        json.dumps({"version": 1, "mrtd": [MRTD], "tdattributes": "00" * 3 + "10" + "00" * 4})
    )
    assert exact.tdattributes == (1 << 28, (1 << 64) - 1)


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
        {"version": 1, "mrtd": [MRTD], "allow_migratable": 1},
        {"version": 1, "mrtd": [MRTD], "allow_sept_ve": "true"},
        {"version": 1, "mrtd": [MRTD], "allow_tud": True},
        {"version": 1, "mrtd": [MRTD], "xfam": []},
        {"version": 1, "mrtd": [MRTD], "xfam": [MRTD]},
        {"version": 1, "mrtd": [MRTD], "mrseam": ["e71a060000000000"]},
        {"version": 1, "mrtd": [MRTD], "mrownerconfig": "ab" * 48},
        {"version": 1, "mrtd": [MRTD], "mrservicetd": []},
        {"version": 1, "mrtd": [MRTD], "mrservicetd": ["00" * 47]},
        {"version": 1, "mrtd": [MRTD], "tdattributes": "10"},
        {"version": 1, "mrtd": [MRTD], "tdattributes": 0x10000000},
        {"version": 1, "mrtd": [MRTD], "tdattributes": "zz" * 8},
        {"version": 1, "mrtd": [MRTD], "tdattributes_mask": "ff" * 8},
        {"version": 1, "mrtd": [MRTD], "tdattributes": "00" * 8, "tdattributes_mask": "00" * 8},
        # A value with bits outside its mask is ambiguous.
        {
            "version": 1,
            "mrtd": [MRTD],
            "tdattributes": "01" + "00" * 7,
            "tdattributes_mask": "02" + "00" * 7,
        },
        # Values no quote could pass: a TUD bit, DEBUG / MIGRATABLE not allowed, SEPT #VE.
        {"version": 1, "mrtd": [MRTD], "tdattributes": "02000010" + "00" * 4},
        {"version": 1, "mrtd": [MRTD], "tdattributes": "01000010" + "00" * 4},
        {"version": 1, "mrtd": [MRTD], "tdattributes": "00000030" + "00" * 4},
        {"version": 1, "mrtd": [MRTD], "tdattributes": "00" * 8},
    ],
)
def test_refused(doc: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        load_policy(json.dumps(doc))


@pytest.mark.parametrize(
    "doc",
    [
        {"tdattributes": "01000010" + "00" * 4, "allow_debug": True},
        {"tdattributes": "00000030" + "00" * 4, "allow_migratable": True},
        {"tdattributes": "00" * 8, "allow_sept_ve": True},
        # SEPT_VE_DISABLE outside the mask: not required clear, so no allow key needed.
        {"tdattributes": "00" * 8, "tdattributes_mask": "01" + "00" * 7},
    ],
)
def test_tdattributes_allowed_by_their_allow_keys(doc: dict[str, object]) -> None:
    assert load_policy(json.dumps({"version": 1, "mrtd": [MRTD], **doc})).tdattributes is not None


def test_min_tcb_evaluation_data_number_loads_and_defaults_to_none() -> None:
    assert load_policy(json.dumps({"version": 1, "mrtd": [MRTD]})).tcb.min_evaluation_number is None
    for number in (0, 17, 0xFFFFFFFF):
        doc = {"version": 1, "mrtd": [MRTD], "min_tcb_evaluation_data_number": number}
        assert load_policy(json.dumps(doc)).tcb.min_evaluation_number == number


@pytest.mark.parametrize(
    "value",
    ["17", -1, True, False, 17.0, None, [17], {"number": 17}, 0x1_0000_0000],
    ids=["string", "negative", "true", "false", "float", "null", "list", "object", "over_uint32"],
)
def test_min_tcb_evaluation_data_number_refused(value: object) -> None:
    doc = {"version": 1, "mrtd": [MRTD], "min_tcb_evaluation_data_number": value}
    with pytest.raises(PolicyError, match=r"^min_tcb_evaluation_data_number must be an integer"):
        load_policy(json.dumps(doc))
