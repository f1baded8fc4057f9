"""The host binding key: parse and authenticate its TPM2_Certify by the AK, and
compute the authPolicy it must carry.

A binding key is a TPM-resident RSA decryption key whose only authorization is a
policy over the attested boot-state PCRs. The verifier wraps key material to it
only after :func:`authenticate_binding_key` has shown that the enrolled AK
certified exactly this public area (so the key lives in the attested TPM) and
that the public area says what the verifier requires (non-exportable, decrypt
only, usable only through the expected policy).

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
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from cryptography.hazmat.primitives.asymmetric import rsa

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.keys import (
    MIN_RSA_BITS,
    STRONG_NAME_ALGORITHMS,
    TpmaObject,
    check_attestation_key,
    public_key,
    tpm_name,
)
from verifier.evidence.tpm.parse import (
    HASH_IDS,
    HASH_SIZES,
    ClockInfo,
    TpmPublic,
    parse_signature,
    parse_tpm2b_public,
    read_clock_info,
    read_field,
    unmarshal_attest,
)
from verifier.evidence.tpm.signature import SignatureCheckError, verify_tpm_signature
from verifier.verdict import Reason, VerificationError

__all__ = [
    "CHECK_ATTRIBUTES",
    "CHECK_NAME",
    "CHECK_NONCE",
    "CHECK_PARSE",
    "CHECK_POLICY",
    "CHECK_SIGNATURE",
    "CHECK_STRENGTH",
    "AuthenticatedBindingKey",
    "CertifyInfo",
    "authenticate_binding_key",
    "binding_key_policy_digest",
    "parse_certify_attest",
    "policy_pcr_digest",
]

TPM_ST_ATTEST_CERTIFY = 0x8017
TPM_CC_CERTIFY = 0x00000148
TPM_CC_RSA_DECRYPT = 0x00000159
TPM_CC_POLICY_COMMAND_CODE = 0x0000016C
TPM_CC_POLICY_OR = 0x00000171
TPM_CC_POLICY_PCR = 0x0000017F
# PC Client TPMs have 24 PCRs: a 3-byte select bitmap, which is also what the
# agent sends, and the bitmap size is part of the hashed TPML_PCR_SELECTION.
_PCR_SELECT_BYTES = 3

CHECK_PARSE = "binding.certify.parse"
CHECK_SIGNATURE = "binding.certify.signature"
CHECK_NONCE = "binding.certify.nonce"
CHECK_NAME = "binding.key.name"
CHECK_ATTRIBUTES = "binding.key.attributes"
CHECK_STRENGTH = "binding.key.strength"
CHECK_POLICY = "binding.key.policy"

_PARSE_CODES = {
    "bad_magic": "binding.certify.bad_magic",
    "not_a_certification": "binding.certify.not_a_certification",
}
# Non-exportable, generated inside the TPM, a plain decryption key.
_REQUIRED = (
    TpmaObject.FIXED_TPM
    | TpmaObject.FIXED_PARENT
    | TpmaObject.SENSITIVE_DATA_ORIGIN
    | TpmaObject.DECRYPT
    | TpmaObject.ADMIN_WITH_POLICY
)
# userWithAuth would let the (empty) authValue stand in for the PCR policy; a
# signing or restricted key is not what we wrap to.
_FORBIDDEN = TpmaObject.USER_WITH_AUTH | TpmaObject.SIGN_ENCRYPT | TpmaObject.RESTRICTED


@dataclass(frozen=True, slots=True)
class CertifyInfo:
    """The fields of a TPMS_ATTEST of type TPM_ST_ATTEST_CERTIFY."""

    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    name: bytes  # TPM name of the certified object
    qualified_name: bytes


def parse_certify_attest(data: bytes) -> CertifyInfo:
    """Parse a marshalled TPMS_ATTEST that must be a TPM2_Certify result.

    ParseError codes: ``bad_magic`` (not TPM_GENERATED_VALUE), ``not_a_certification``
    (another attestation type), ``malformed`` otherwise (including trailing bytes
    and non-canonical encodings, as for quotes).
    """
    attest = unmarshal_attest(
        data,
        expected_type=TPM_ST_ATTEST_CERTIFY,
        type_name="certification",
        type_code="not_a_certification",
    )

    def build() -> CertifyInfo:
        certify = attest.attested.certify
        name = bytes(certify.name)
        if not name:
            raise ParseError("TPMS_ATTEST: empty certified name")
        return CertifyInfo(
            qualified_signer=bytes(attest.qualifiedSigner.name),
            extra_data=bytes(attest.extraData),
            clock_info=read_clock_info(attest),
            firmware_version=int(attest.firmwareVersion),
            name=name,
            qualified_name=bytes(certify.qualifiedName),
        )

    return read_field("TPMS_ATTEST", build)


# --- policy digests (TPM 2.0 Part 3, 23) -----------------------------------------


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


# --- authentication --------------------------------------------------------------


class _Seal:
    """Proof that authenticate_binding_key built the value, bound to its content
    (so that ``dataclasses.replace`` with another public area fails)."""

    __slots__ = ("content",)

    def __init__(self, content: object) -> None:
        self.content = content


@dataclass(frozen=True, slots=True)
class AuthenticatedBindingKey:
    """A binding key certified by the enrolled AK, with acceptable attributes and
    the expected policy. Built only by :func:`authenticate_binding_key`."""

    public: TpmPublic
    certification: CertifyInfo
    checks_run: frozenset[str]
    _seal: object = field(default=None, repr=False, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        content = (self.public, self.certification, self.checks_run)
        if not isinstance(self._seal, _Seal) or self._seal.content != content:
            raise TypeError("AuthenticatedBindingKey is built only by authenticate_binding_key()")

    @property
    def name(self) -> bytes:
        return tpm_name(self.public)

    def rsa_public_key(self) -> rsa.RSAPublicKey:
        key = public_key(self.public)
        # authenticate_binding_key admits RSA keys only.
        assert isinstance(key, rsa.RSAPublicKey)
        return key


def _fail(code: str, detail: str, done: list[str]) -> NoReturn:
    raise VerificationError(Reason(code, detail), done)


def _check_attributes(pub: TpmPublic, done: list[str]) -> None:
    attributes = TpmaObject(pub.attributes)
    missing = _REQUIRED & ~attributes
    if missing:
        _fail("binding.key.attributes_invalid", f"binding key lacks {missing.name}", done)
    present = attributes & _FORBIDDEN
    if present:
        _fail("binding.key.attributes_invalid", f"binding key has {present.name}", done)
    if pub.key_type != "rsa":
        _fail("binding.key.attributes_invalid", f"{pub.key_type} key, RSA required", done)
    if (pub.scheme, pub.scheme_hash) != ("oaep", "sha256"):
        # A key not fixed to OAEP would also decrypt PKCS#1 v1.5 or raw RSA, i.e.
        # serve as a padding oracle to whoever satisfies its policy.
        _fail(
            "binding.key.attributes_invalid",
            f"scheme {pub.scheme}/{pub.scheme_hash}, OAEP-SHA256 required",
            done,
        )


def authenticate_binding_key(
    *,
    attest: bytes,
    signature: bytes,
    ak: TpmPublic,
    binding_public: bytes,
    expected_qualifying_data: bytes,
    expected_policy_digest: bytes,
) -> AuthenticatedBindingKey:
    """Authenticate a binding key's certification; raise VerificationError at the
    first failure (its reason, and the checks that passed before it).

    ``ak`` is the enrolled attestation key and ``expected_policy_digest`` comes
    from the host's reference values (:func:`binding_key_policy_digest`): both are
    trusted inputs. Checks, in order:

    1. ``binding.certify.parse``: ``attest`` is a TPMS_ATTEST certification
       (binding.certify.malformed / bad_magic / not_a_certification);
    2. ``binding.certify.signature``: the AK passes ``check_attestation_key`` (its
       ``enrollment.*`` reason otherwise); ``signature`` parses, suits the AK, is
       not SHA-1 and verifies over the exact ``attest`` bytes
       (binding.certify.signature_invalid, the detail says which);
    3. ``binding.certify.nonce``: extraData equals ``expected_qualifying_data``
       (binding.certify.nonce_mismatch);
    4. ``binding.key.name``: ``binding_public`` parses as a TPM2B_PUBLIC
       (binding.key.malformed) and its name is the certified name
       (binding.key.name_mismatch);
    5. ``binding.key.attributes``: fixedTPM, fixedParent, sensitiveDataOrigin,
       decrypt and adminWithPolicy set; userWithAuth, sign and restricted clear;
       RSA fixed to OAEP-SHA256 (binding.key.attributes_invalid);
    6. ``binding.key.strength``: nameAlg SHA-256 or stronger, RSA of at least 2048
       bits (binding.key.weak), valid key material (binding.key.invalid);
    7. ``binding.key.policy``: authPolicy equals ``expected_policy_digest``
       (binding.key.policy_mismatch).

    The certified qualifiedName is not checked: it depends on the storage parent,
    which is not attested; fixedTPM and fixedParent already keep the key in this TPM.
    Raises ValueError (a programming error) if a trusted input is empty.
    """
    if not expected_qualifying_data or not expected_policy_digest:
        raise ValueError("expected_qualifying_data and expected_policy_digest must be non-empty")
    done: list[str] = []

    try:
        info = parse_certify_attest(attest)
    except ParseError as exc:
        _fail(_PARSE_CODES.get(exc.code, "binding.certify.malformed"), str(exc), done)
    done.append(CHECK_PARSE)

    try:
        check_attestation_key(ak)
    except VerificationError as exc:
        raise VerificationError(exc.reason, done) from exc
    try:
        sig = parse_signature(signature)
        verify_tpm_signature(bytes(attest), sig, ak, allow_sha1=False)
    except ParseError as exc:
        _fail("binding.certify.signature_invalid", f"malformed signature: {exc}", done)
    except SignatureCheckError as exc:
        _fail("binding.certify.signature_invalid", str(exc), done)
    done.append(CHECK_SIGNATURE)

    if not hmac.compare_digest(info.extra_data, bytes(expected_qualifying_data)):
        _fail("binding.certify.nonce_mismatch", "extraData != the nonce issued", done)
    done.append(CHECK_NONCE)

    try:
        pub = parse_tpm2b_public(binding_public)
    except ParseError as exc:
        _fail("binding.key.malformed", str(exc), done)
    if not hmac.compare_digest(tpm_name(pub), info.name):
        _fail("binding.key.name_mismatch", "the certified name is not this key's name", done)
    done.append(CHECK_NAME)

    _check_attributes(pub, done)
    done.append(CHECK_ATTRIBUTES)

    if pub.name_algorithm not in STRONG_NAME_ALGORITHMS:
        _fail("binding.key.weak", f"nameAlg {pub.name_algorithm}", done)
    if pub.key_bits < MIN_RSA_BITS:
        _fail("binding.key.weak", f"RSA-{pub.key_bits}", done)
    try:
        public_key(pub)
    except ValueError as exc:
        _fail("binding.key.invalid", str(exc), done)
    done.append(CHECK_STRENGTH)

    if not hmac.compare_digest(pub.auth_policy, bytes(expected_policy_digest)):
        _fail(
            "binding.key.policy_mismatch",
            "authPolicy is not the policy for the host's reference boot state",
            done,
        )
    done.append(CHECK_POLICY)

    checks_run = frozenset(done)
    return AuthenticatedBindingKey(
        public=pub,
        certification=info,
        checks_run=checks_run,
        _seal=_Seal((pub, info, checks_run)),
    )
