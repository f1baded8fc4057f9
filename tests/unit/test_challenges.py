import hashlib

import pytest

from verifier.challenges import ChallengeError, ChallengeRegistry, tpm_qualifying_data


class FakeMonotonic:
    """Only time is simulated here; everything else is the real registry."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_nonces_are_fresh_and_domain_separated() -> None:
    registry = ChallengeRegistry()
    first = registry.issue("h", {"sha256": (0,)}, ttl_seconds=30)
    second = registry.issue("h", {"sha256": (0,)}, ttl_seconds=30)
    assert len(first.nonce) >= 32
    assert first.nonce != second.nonce
    assert first.tpm_qualifying_data == tpm_qualifying_data(first.nonce)
    assert first.tpm_qualifying_data != first.nonce
    assert first.tpm_qualifying_data != hashlib.sha256(first.nonce).digest()


def test_a_challenge_is_redeemed_once() -> None:
    registry = ChallengeRegistry()
    challenge = registry.issue("h", {"sha256": (0,)}, ttl_seconds=30)
    assert registry.redeem("h", challenge.challenge_id) == challenge
    with pytest.raises(ChallengeError) as again:
        registry.redeem("h", challenge.challenge_id)
    assert again.value.reason.code == "attestation.challenge_unknown"
    assert challenge.tpm_qualifying_data in registry.consumed_qualifying_data("h")


def test_expired_challenge_is_refused() -> None:
    clock = FakeMonotonic()
    registry = ChallengeRegistry(monotonic=clock)
    challenge = registry.issue("h", {"sha256": (0,)}, ttl_seconds=5)
    clock.now += 6
    with pytest.raises(ChallengeError) as expired:
        registry.redeem("h", challenge.challenge_id)
    assert expired.value.reason.code == "attestation.challenge_expired"


def test_another_hosts_challenge_is_refused() -> None:
    registry = ChallengeRegistry()
    challenge = registry.issue("a", {"sha256": (0,)}, ttl_seconds=5)
    with pytest.raises(ChallengeError) as wrong:
        registry.redeem("b", challenge.challenge_id)
    assert wrong.value.reason.code == "attestation.challenge_unknown"
