"""Policy digests computed in software, against digests a TPM computed.

The expected digests were produced by swtpm (libtpms) with trial sessions:
TPM2_PolicyPCR with an explicit pcrDigest (H of the values below), then
TPM2_PolicyGetDigest; the binding-key policy adds PolicyCommandCode and PolicyOR
exactly as ``agent.collectors.binding_key`` does. The live comparison, with the
TPM reading its own PCRs, is in ``tests/integration/test_binding_key.py``.
"""

from __future__ import annotations

import hashlib

import pytest

from verifier.evidence.tpm.certify import binding_key_policy_digest, policy_pcr_digest

ZEROS_0_7 = {"sha256": {i: bytes(32) for i in range(8)}}

VECTORS = [
    (
        "sha256",
        {"sha256": list(range(8))},
        ZEROS_0_7,
        "9a72c2e06a93c453a86efb47532e9c7a91dcab018e675919910c58d6a1a5aa78",
    ),
    (
        "sha256",
        {"sha256": [23, 0, 7]},  # order and duplicates do not matter within a bank
        {"sha256": {i: bytes([i]) * 32 for i in (0, 7, 23)}},
        "40cd9432656e05e95c7b92d4056c2ebab1c7eb81b73d36471f2c4aefff152cc4",
    ),
    (
        "sha384",
        {"sha256": [4]},
        {"sha256": {4: bytes([0xAA]) * 32}},
        "6c9239d3e8b305a994d6217e79dbf88fb372c3d517caf81e"
        "5a1be415718afd29c46c2f7755e40dc8981ca89edb1eb385",
    ),
]


@pytest.mark.parametrize(("alg", "selection", "values", "expected"), VECTORS)
def test_policy_pcr_matches_tpm(
    alg: str,
    selection: dict[str, list[int]],
    values: dict[str, dict[int, bytes]],
    expected: str,
) -> None:
    digest = policy_pcr_digest(name_algorithm=alg, selection=selection, pcr_values=values)
    assert digest.hex() == expected


def test_binding_key_policy_matches_tpm() -> None:
    digest = binding_key_policy_digest(selection={"sha256": range(8)}, pcr_values=ZEROS_0_7)
    assert digest.hex() == "84ad8500d88bf97a0751710b165b8d9b8922a2e44163393acdce7c9432358755"


def test_binding_key_policy_structure() -> None:
    """PolicyOR{PolicyPCR ∘ PolicyCommandCode(RSA_Decrypt), PolicyCommandCode(Certify)}."""
    pcr = policy_pcr_digest(
        name_algorithm="sha256", selection={"sha256": range(8)}, pcr_values=ZEROS_0_7
    )
    decrypt = hashlib.sha256(pcr + bytes.fromhex("0000016c") + bytes.fromhex("00000159")).digest()
    certify = hashlib.sha256(bytes(32) + bytes.fromhex("0000016c00000148")).digest()
    # The Certify branch, as the TPM computed it.
    assert certify.hex() == "048e9a3ace08583f79f344ff785bbea9f07ac7fa3325b3d49a21dd5194c65850"
    expected = hashlib.sha256(bytes(32) + bytes.fromhex("00000171") + decrypt + certify).digest()
    assert binding_key_policy_digest(selection={"sha256": range(8)}, pcr_values=ZEROS_0_7) == (
        expected
    )


def test_any_value_change_changes_the_digest() -> None:
    base = policy_pcr_digest(
        name_algorithm="sha256", selection={"sha256": range(8)}, pcr_values=ZEROS_0_7
    )
    for index in range(8):
        values = {"sha256": dict(ZEROS_0_7["sha256"])}
        values["sha256"][index] = b"\x01" * 32
        other = policy_pcr_digest(
            name_algorithm="sha256", selection={"sha256": range(8)}, pcr_values=values
        )
        assert other != base


def test_values_outside_the_selection_are_ignored() -> None:
    values = {"sha256": {**ZEROS_0_7["sha256"], 9: b"\x07" * 32}, "sha1": {0: bytes(20)}}
    assert policy_pcr_digest(
        name_algorithm="sha256", selection={"sha256": range(8)}, pcr_values=values
    ) == policy_pcr_digest(
        name_algorithm="sha256", selection={"sha256": range(8)}, pcr_values=ZEROS_0_7
    )


@pytest.mark.parametrize(
    ("alg", "selection", "values", "message"),
    [
        ("md5", {"sha256": [0]}, ZEROS_0_7, "unsupported policy hash"),
        ("sha256", {"sm3_256": [0]}, ZEROS_0_7, "unsupported PCR bank"),
        ("sha256", {"sha256": [24]}, ZEROS_0_7, "out of range"),
        ("sha256", {"sha256": [-1]}, ZEROS_0_7, "out of range"),
        ("sha256", {"sha256": [8]}, ZEROS_0_7, "no 32-byte value for sha256 PCR8"),
        ("sha256", {"sha256": [0]}, {"sha256": {0: bytes(20)}}, "no 32-byte value"),
        ("sha256", {}, ZEROS_0_7, "at least one PCR"),
        ("sha256", {"sha256": []}, ZEROS_0_7, "at least one PCR"),
    ],
)
def test_bad_inputs_are_programming_errors(
    alg: str,
    selection: dict[str, list[int]],
    values: dict[str, dict[int, bytes]],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        policy_pcr_digest(name_algorithm=alg, selection=selection, pcr_values=values)
