"""The SPDM nonce each GPU signs: one derivation, shared by the agent and the verifier.

The agent needs it to ask each GPU for a report, the verifier to check the report;
both import it from here (they meet only in ``weightgate``). It binds three things:

- the verifier's challenge nonce (freshness: the verifier minted it, single use);
- the host's own CPU-side evidence of the same round, the exact TPMS_ATTEST bytes
  its AK signed (binding: a GPU report produced for another host's quote, or for
  another round, answers a different nonce);
- the device's position in ``GpuEvidence.devices`` (each GPU answers its own value,
  so reports cannot be swapped between positions unnoticed).

A domain prefix separates it from every other derivation of the challenge nonce
(the TPM quote's and the binding key's qualifyingData), and each variable-length
input is length-prefixed so no two input tuples share an encoding.
"""

from __future__ import annotations

import hashlib
import struct

__all__ = ["GPU_NONCE_SIZE", "gpu_nonce"]

GPU_NONCE_SIZE = 32  # the SPDM 1.1 GET_MEASUREMENTS nonce
_DOMAIN = b"weightgate/v1/nvidia-gpu-nonce\x00"
_U32 = struct.Struct(">I")
# NVML numbers devices with an unsigned int; far more than any host holds.
_MAX_POSITION = 0xFFFF_FFFF


def gpu_nonce(challenge_nonce: bytes, tpm_attest: bytes, position: int) -> bytes:
    """SHA-256(domain || len(nonce) || nonce || len(attest) || attest || position), 32 bytes.

    ``tpm_attest``: the TPMS_ATTEST bytes of this round's quote exactly as the TPM
    signed them (``TpmQuote.attest``); ``position``: the device's index in
    ``GpuEvidence.devices``. ValueError for an empty nonce or attest, or a
    position outside 0..2**32-1: the derivation never silently covers less.
    """
    if not challenge_nonce:
        raise ValueError("gpu_nonce: empty challenge nonce")
    if not tpm_attest:
        raise ValueError("gpu_nonce: empty TPM attest")
    if not 0 <= position <= _MAX_POSITION:
        raise ValueError(f"gpu_nonce: position {position} out of range")
    digest = hashlib.sha256(_DOMAIN)
    digest.update(_U32.pack(len(challenge_nonce)))
    digest.update(challenge_nonce)
    digest.update(_U32.pack(len(tpm_attest)))
    digest.update(tpm_attest)
    digest.update(_U32.pack(position))
    return digest.digest()
