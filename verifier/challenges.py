"""Challenges: fresh, single-use, expiring nonces, one derivation per evidence kind.

The verifier never lets the evidence supply its own freshness: every challenge
is minted here, remembered until it is redeemed once or expires, and each kind
of evidence binds its own domain-separated digest of the nonce so a value signed
for one purpose (a TPM quote) can never be replayed as another (a GPU report).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from verifier.verdict import Reason

NONCE_BYTES = 32
# Remembered per host to tell a replayed old quote from a merely wrong one. A
# bounded window: older replays still fail, as a plain nonce mismatch.
CONSUMED_WINDOW = 256
_TPM_QUOTE_DOMAIN = b"weightgate/v1/tpm-quote\x00"
_BINDING_KEY_DOMAIN = b"weightgate/v1/binding-key\x00"


def tpm_qualifying_data(nonce: bytes) -> bytes:
    """The bytes a TPM must sign as qualifyingData for a challenge with this nonce."""
    return hashlib.sha256(_TPM_QUOTE_DOMAIN + nonce).digest()


def binding_key_qualifying_data(nonce: bytes) -> bytes:
    """The qualifyingData of the binding key's TPM2_Certify for this challenge."""
    return hashlib.sha256(_BINDING_KEY_DOMAIN + nonce).digest()


@dataclass(frozen=True, slots=True)
class IssuedChallenge:
    challenge_id: str
    host_id: str
    nonce: bytes
    tpm_qualifying_data: bytes
    pcr_selection: Mapping[str, tuple[int, ...]]
    expires_at: float  # monotonic seconds


class ChallengeError(Exception):
    def __init__(self, reason: Reason) -> None:
        super().__init__(str(reason))
        self.reason = reason


class ChallengeRegistry:
    """Outstanding challenges, in memory.

    A verifier restart drops them, which is safe: the agent's stream breaks with
    the restart and it answers a fresh challenge on the new stream.
    """

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._outstanding: dict[str, IssuedChallenge] = {}
        self._consumed: dict[str, deque[bytes]] = {}
        self._monotonic = monotonic

    def issue(
        self, host_id: str, pcr_selection: Mapping[str, tuple[int, ...]], *, ttl_seconds: float
    ) -> IssuedChallenge:
        nonce = secrets.token_bytes(NONCE_BYTES)
        challenge = IssuedChallenge(
            challenge_id=uuid.uuid4().hex,
            host_id=host_id,
            nonce=nonce,
            tpm_qualifying_data=tpm_qualifying_data(nonce),
            pcr_selection=dict(pcr_selection),
            expires_at=self._monotonic() + ttl_seconds,
        )
        with self._lock:
            self._expire_locked()
            self._outstanding[challenge.challenge_id] = challenge
        return challenge

    def redeem(self, host_id: str, challenge_id: str) -> IssuedChallenge:
        """Take a challenge out of circulation; it can never be redeemed again."""
        with self._lock:
            challenge = self._outstanding.pop(challenge_id, None)
            if challenge is None:
                raise ChallengeError(
                    Reason("attestation.challenge_unknown", "no outstanding challenge with that id")
                )
            self._remember_locked(challenge)
            if challenge.host_id != host_id:
                raise ChallengeError(
                    Reason("attestation.challenge_unknown", "challenge was issued to another host")
                )
            if self._monotonic() > challenge.expires_at:
                raise ChallengeError(
                    Reason("attestation.challenge_expired", "evidence arrived after the deadline")
                )
            return challenge

    def discard(self, challenge_id: str) -> None:
        with self._lock:
            challenge = self._outstanding.pop(challenge_id, None)
            if challenge is not None:
                self._remember_locked(challenge)

    def consumed_qualifying_data(self, host_id: str) -> tuple[bytes, ...]:
        with self._lock:
            return tuple(self._consumed.get(host_id, ()))

    def _remember_locked(self, challenge: IssuedChallenge) -> None:
        window = self._consumed.setdefault(challenge.host_id, deque(maxlen=CONSUMED_WINDOW))
        window.append(challenge.tpm_qualifying_data)

    def _expire_locked(self) -> None:
        now = self._monotonic()
        for challenge_id in [c for c, ch in self._outstanding.items() if now > ch.expires_at]:
            self._remember_locked(self._outstanding.pop(challenge_id))
