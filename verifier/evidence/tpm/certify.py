"""The host binding key: authenticate its TPM2_Certify by the AK.

A binding key is a TPM-resident RSA decryption key whose only authorization is a
policy over the attested boot-state PCRs. The verifier wraps key material to it
only after :func:`authenticate_binding_key` has shown that the enrolled AK
certified exactly this public area (so the key lives in the attested TPM) and
that the public area says what the verifier requires (non-exportable, decrypt
only, usable only through the expected policy).

Parsing the certification lives in :mod:`verifier.evidence.tpm.certify_attest`
and the policy in :mod:`verifier.evidence.tpm.binding_policy`; both are
re-exported here.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import NoReturn

from cryptography.hazmat.primitives.asymmetric import rsa

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.binding_policy import binding_key_policy_digest, policy_pcr_digest
from verifier.evidence.tpm.certify_attest import CertifyInfo, parse_certify_attest
from verifier.evidence.tpm.keys import (
    MIN_RSA_BITS,
    STRONG_NAME_ALGORITHMS,
    TpmaObject,
    check_attestation_key,
    public_key,
    tpm_name,
)
from verifier.evidence.tpm.parse import TpmPublic, parse_signature, parse_tpm2b_public
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
