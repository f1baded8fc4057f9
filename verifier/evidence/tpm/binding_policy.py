"""The authPolicy a host binding key must carry, computed from the host's
reference boot state (TPM 2.0 Part 3, 23).

The policy (:func:`binding_key_policy_digest`) is a PolicyOR of two branches:

* ``PolicyPCR(boot state) ∘ PolicyCommandCode(TPM2_RSA_Decrypt)``: decryption
  only while the PCRs hold the reference values;
* ``PolicyCommandCode(TPM2_Certify)``: with adminWithPolicy set, the TPM accepts
  a policy session for the ADMIN role (which TPM2_Certify needs) only if the
  policy names the command (Part 1, "Authorization Roles"; swtpm answers
  TPM_RC_POLICY_FAIL otherwise), so the key could not be certified without it.
  Certifying reveals nothing and works in any boot state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from verifier.evidence.tpm.parse import HASH_IDS, HASH_SIZES

__all__ = [
    "TPM_CC_CERTIFY",
    "TPM_CC_POLICY_COMMAND_CODE",
    "TPM_CC_POLICY_OR",
    "TPM_CC_POLICY_PCR",
    "TPM_CC_RSA_DECRYPT",
    "binding_key_policy_digest",
    "policy_pcr_digest",
]

TPM_CC_CERTIFY = 0x00000148
TPM_CC_RSA_DECRYPT = 0x00000159
TPM_CC_POLICY_COMMAND_CODE = 0x0000016C
TPM_CC_POLICY_OR = 0x00000171
TPM_CC_POLICY_PCR = 0x0000017F
# PC Client TPMs have 24 PCRs: a 3-byte select bitmap, which is also what the
# agent sends, and the bitmap size is part of the hashed TPML_PCR_SELECTION.
_PCR_SELECT_BYTES = 3


def _zero(name_algorithm: str) -> bytes:
    """The digest a policy session starts from."""
    if name_algorithm not in HASH_IDS:
        raise ValueError(f"unsupported policy hash {name_algorithm!r}")
    return bytes(HASH_SIZES[name_algorithm])


def _extend(name_algorithm: str, old: bytes, *parts: bytes) -> bytes:
    h = hashlib.new(name_algorithm, old)
    for part in parts:
        h.update(part)
    return h.digest()


def _policy_pcr(
    old: bytes,
    name_algorithm: str,
    selection: Mapping[str, Sequence[int]],
    pcr_values: Mapping[str, Mapping[int, bytes]],
) -> bytes:
    marshalled = bytearray()
    values = hashlib.new(name_algorithm)
    banks = 0
    for bank, indices in selection.items():
        wanted = sorted(set(indices))
        if not wanted:
            continue  # the agent drops empty banks too
        if bank not in HASH_SIZES or bank not in HASH_IDS:
            raise ValueError(f"unsupported PCR bank {bank!r}")
        bitmap = bytearray(_PCR_SELECT_BYTES)
        for index in wanted:
            if not 0 <= index < 8 * _PCR_SELECT_BYTES:
                raise ValueError(f"PCR index {index} out of range")
            bitmap[index // 8] |= 1 << (index % 8)
            value = pcr_values.get(bank, {}).get(index)
            if value is None or len(value) != HASH_SIZES[bank]:
                raise ValueError(f"no {HASH_SIZES[bank]}-byte value for {bank} PCR{index}")
            values.update(value)
        marshalled += HASH_IDS[bank].to_bytes(2, "big") + bytes([_PCR_SELECT_BYTES]) + bitmap
        banks += 1
    if not banks:
        raise ValueError("a PCR policy needs at least one PCR")
    # TPML_PCR_SELECTION: count (UINT32), then the selections in the order given;
    # the values are concatenated in that same order, indices ascending.
    pcrs = banks.to_bytes(4, "big") + bytes(marshalled)
    return _extend(name_algorithm, old, TPM_CC_POLICY_PCR.to_bytes(4, "big"), pcrs, values.digest())


def _policy_command_code(old: bytes, name_algorithm: str, command_code: int) -> bytes:
    return _extend(
        name_algorithm,
        old,
        TPM_CC_POLICY_COMMAND_CODE.to_bytes(4, "big"),
        command_code.to_bytes(4, "big"),
    )


def policy_pcr_digest(
    *,
    name_algorithm: str,
    selection: Mapping[str, Sequence[int]],
    pcr_values: Mapping[str, Mapping[int, bytes]],
) -> bytes:
    """The policyDigest after TPM2_PolicyPCR on a fresh session:
    H(0...0 || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || H(selected values)).

    Banks are marshalled in ``selection`` order, indices ascending, with a 3-byte
    bitmap. Name only banks the TPM allocates: it clears the bits of unallocated
    PCRs before hashing the selection, so such a digest would never match.
    Raises ValueError for an unknown hash or bank, an index outside 0..23, an
    empty selection, or a missing or wrong-sized value.
    """
    return _policy_pcr(_zero(name_algorithm), name_algorithm, selection, pcr_values)


def binding_key_policy_digest(
    *,
    selection: Mapping[str, Sequence[int]],
    pcr_values: Mapping[str, Mapping[int, bytes]],
    name_algorithm: str = "sha256",
) -> bytes:
    """The authPolicy a binding key for this boot state must carry (see module doc):
    PolicyOR{PolicyPCR(selection, values) ∘ PolicyCommandCode(RSA_Decrypt),
    PolicyCommandCode(Certify)}."""
    zero = _zero(name_algorithm)
    decrypt = _policy_command_code(
        _policy_pcr(zero, name_algorithm, selection, pcr_values),
        name_algorithm,
        TPM_CC_RSA_DECRYPT,
    )
    certify = _policy_command_code(zero, name_algorithm, TPM_CC_CERTIFY)
    # PolicyOR resets the digest to zero, then extends with the branch digests.
    return _extend(name_algorithm, zero, TPM_CC_POLICY_OR.to_bytes(4, "big"), decrypt, certify)
