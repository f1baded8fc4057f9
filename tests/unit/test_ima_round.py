"""One attestation round's IMA check and the policy's ``violations`` mode.

Real material: each swtpm set's binary IMA list (6 ima-ng entries, entry 4 a ToMToU
violation that extended ff..ff) against the set's real quote, which covers PCR10;
the runtime policy allows exactly the list's file digests. One mutation per case:
the policy's ``violations``, or one entry added to or removed from the list.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.vectors import TPM_SWTPM_SETS, swtpm_quote_case, vectors_dir
from verifier.evidence.tpm.authenticate import AuthenticatedQuote, authenticate_quote
from verifier.evidence.tpm.ima import ImaEntry, parse_binary
from verifier.evidence.tpm.ima_encode import encode_binary
from verifier.evidence.tpm.ima_policy import RuntimePolicy, load_runtime_policy
from verifier.evidence.tpm.ima_round import (
    CHECK_IMA_POLICY,
    CHECK_IMA_REPLAY,
    ImaRound,
    appraise_ima_round,
)
from verifier.evidence.tpm.parse import parse_quote_attest, parse_tpm2b_public


def _quote(name: str) -> AuthenticatedQuote:
    case = swtpm_quote_case(name)
    info = parse_quote_attest(case.attest)
    return authenticate_quote(
        attest=case.attest,
        signature=case.signature,
        ak=parse_tpm2b_public(case.ak_public),
        expected_qualifying_data=case.nonce,
        required_pcrs={s.hash_algorithm: s.pcrs for s in info.pcr_selection},
        reported_pcrs=case.pcrs,
        previous_clock=None,
    )


def _entries(name: str) -> tuple[ImaEntry, ...]:
    raw = vectors_dir("tpm", name, "ima", "binary_runtime_measurements").read_bytes()
    return parse_binary(raw).entries


def _policy(entries: tuple[ImaEntry, ...], **fields: str) -> RuntimePolicy:
    digests: dict[str, list[str]] = {}
    for e in entries[1:]:
        if e.name is not None and e.digest is not None and not e.is_violation:
            digests.setdefault(e.name, []).append(f"{e.digest_alg}:{e.digest.hex()}")
    return load_runtime_policy(json.dumps({"version": 1, "digests": digests, **fields}))


def _round(name: str, entries: tuple[ImaEntry, ...], policy: RuntimePolicy) -> ImaRound:
    return appraise_ima_round(
        entries=encode_binary(entries),
        first_entry=0,
        unavailable="",
        quote=_quote(name),
        policy=policy,
        kept=None,
    )


def _reindexed(entries: list[ImaEntry]) -> tuple[ImaEntry, ...]:
    return tuple(replace(e, index=i) for i, e in enumerate(entries))


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_violation_denied_by_default(name: str) -> None:
    entries = _entries(name)
    assert [e.index for e in entries if e.is_violation] == [4]
    for policy in (_policy(entries), _policy(entries, violations="deny")):
        result = _round(name, entries, policy)
        assert [r.code for r in result.reasons] == ["tpm.ima.violation"]
        assert result.checks_run == {CHECK_IMA_REPLAY}
        assert (result.kept, result.violations_tolerated) == (None, 0)


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_violation_tolerated_is_counted(name: str) -> None:
    entries = _entries(name)
    result = _round(name, entries, _policy(entries, violations="tolerate"))
    assert result.reasons == ()
    assert result.checks_run == {CHECK_IMA_REPLAY, CHECK_IMA_POLICY}
    assert result.violations_tolerated == 1
    assert result.kept is not None and result.kept.entry_count == len(entries)


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_tolerated_violation_must_still_replay(name: str) -> None:
    """A violation the TPM never saw (added), or one left out, fails the replay."""
    entries = list(_entries(name))
    policy = _policy(tuple(entries), violations="tolerate")
    added = _reindexed([*entries[:4], entries[4], *entries[4:]])
    removed = _reindexed([*entries[:4], *entries[5:]])
    for changed in (added, removed):
        result = _round(name, changed, policy)
        assert [r.code for r in result.reasons] == ["tpm.ima.pcr_mismatch"]
        assert CHECK_IMA_POLICY not in result.checks_run
        assert (result.kept, result.violations_tolerated) == (None, 0)
