"""The GPU nonce derivation both sides import: bound to nonce, quote and position."""

from __future__ import annotations

import hashlib

import pytest

from verifier.challenges import binding_key_qualifying_data, tpm_qualifying_data
from weightgate.gpu_nonce import GPU_NONCE_SIZE, gpu_nonce

NONCE = bytes(range(32))
ATTEST = b"\xffTCG\x80\x18" + bytes(100)


def test_is_32_bytes_and_deterministic() -> None:
    value = gpu_nonce(NONCE, ATTEST, 0)
    assert len(value) == GPU_NONCE_SIZE == 32
    assert gpu_nonce(NONCE, ATTEST, 0) == value


@pytest.mark.parametrize(
    ("nonce", "attest", "position"),
    [
        (NONCE[:-1] + b"\x00", ATTEST, 0),  # another challenge
        (NONCE, ATTEST[:-1] + b"\x01", 0),  # another quote (another host or round)
        (NONCE, ATTEST, 1),  # another device position
    ],
)
def test_each_input_changes_it(nonce: bytes, attest: bytes, position: int) -> None:
    assert gpu_nonce(nonce, attest, position) != gpu_nonce(NONCE, ATTEST, 0)


def test_inputs_cannot_slide_between_fields() -> None:
    # Length prefixes: moving a byte from the nonce to the attest changes the value.
    assert gpu_nonce(NONCE + ATTEST[:1], ATTEST[1:], 0) != gpu_nonce(NONCE, ATTEST, 0)


def test_differs_from_the_other_derivations_of_the_nonce() -> None:
    value = gpu_nonce(NONCE, ATTEST, 0)
    assert value not in {tpm_qualifying_data(NONCE), binding_key_qualifying_data(NONCE)}
    assert value != hashlib.sha256(NONCE).digest()


@pytest.mark.parametrize(
    ("nonce", "attest", "position"),
    [(b"", ATTEST, 0), (NONCE, b"", 0), (NONCE, ATTEST, -1), (NONCE, ATTEST, 2**32)],
)
def test_refuses_inputs_that_would_cover_less(nonce: bytes, attest: bytes, position: int) -> None:
    with pytest.raises(ValueError, match="gpu_nonce"):
        gpu_nonce(nonce, attest, position)
