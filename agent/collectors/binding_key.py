"""The host binding key: a TPM-resident RSA decryption key usable only in the
attested boot state, certified by the AK so that the verifier can wrap keys to it.

Key properties (checked again by the verifier, which trusts none of this code):
fixedTPM, fixedParent, sensitiveDataOrigin, decrypt, adminWithPolicy; not sign,
not restricted, not userWithAuth, so only its authPolicy authorizes any use. The
policy is

    PolicyOR{ PolicyPCR(selection, values at creation) ∘ PolicyCommandCode(RSA_Decrypt),
              PolicyCommandCode(Certify) }

because, with adminWithPolicy set, TPM2_Certify (an ADMIN-role command) is only
authorized by a policy that names it; certifying reveals nothing, decrypting
needs the boot state.

The key is a child of a storage root key (SRK) re-created on demand from the TCG
ECC P-256 storage template in the owner hierarchy: primary keys are derived from
the hierarchy seed and the template, so the same SRK comes back until the TPM is
cleared, and nothing is left persistent in the TPM. The private blob is encrypted
by the SRK and is safe to store on disk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_CC,
    TPM2_ECC,
    TPM2_RC,
    TPM2_SE,
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_PUBLIC_KEY_RSA,
    TPM2B_SENSITIVE_CREATE,
    TPMA_OBJECT,
    TPML_DIGEST,
    TPMT_PUBLIC,
    TPMT_RSA_DECRYPT,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TSS2_Exception,
)

from agent.collectors.tpm import (
    BANKS,
    Tpm,
    TpmError,
    check_persistent_handle,
    flush_handle,
    normalize_selection,
    pcr_selection_list,
    persistent_handle_exists,
)

__all__ = [
    "BindingKey",
    "Certification",
    "certify_binding_key",
    "create_binding_key",
    "unwrap_transport_key",
]

TRANSPORT_KEY_SIZE = 32  # AES-256
BOOT_STATE_CHANGED = "TPM refused: boot state (PCRs) changed since the binding key was created"

_SRK_ATTRIBUTES = (
    TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.DECRYPT
    | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.NODA
)
_BINDING_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.DECRYPT
    | TPMA_OBJECT.ADMINWITHPOLICY
    # The policy has no authValue term, so dictionary-attack lockout would only
    # ever lock the key out, never protect it.
    | TPMA_OBJECT.NODA
)


@dataclass(frozen=True)
class BindingKey:
    """A binding key as the TPM returned it; every field is safe to store on disk."""

    private: bytes  # marshalled TPM2B_PRIVATE, encrypted by the SRK
    public: bytes  # marshalled TPM2B_PUBLIC; the verifier checks it
    pcr_selection: Mapping[str, tuple[int, ...]]  # bank -> indices, in policy order
    pcr_digest: bytes  # SHA-256 of the selected PCR values at creation


@dataclass(frozen=True)
class Certification:
    attest: bytes  # TPMS_ATTEST exactly as signed (no size prefix)
    signature: bytes  # marshalled TPMT_SIGNATURE


@contextmanager
def _esapi(tpm: Tpm) -> Iterator[tuple[Any, ExitStack]]:
    """An ESAPI connection and a stack that flushes what is pushed on it before
    closing: swtpm and /dev/tpm0 have no resource manager to do it for us."""
    try:
        ectx = ESAPI(tpm.tcti)
    except (TSS2_Exception, RuntimeError, ValueError) as e:
        raise TpmError(f"cannot open TPM {tpm.tcti!r}: {e}") from e
    try:
        with ExitStack() as transients:
            yield ectx, transients
    except TSS2_Exception as e:
        raise TpmError(f"TPM command failed: {e}") from e
    finally:
        ectx.close()


def _transient(ectx: Any, transients: ExitStack, handle: Any) -> Any:
    transients.callback(flush_handle, ectx, handle)
    return handle


def _srk_template() -> Any:
    # TCG TPM v2.0 Provisioning Guidance, 7.5.1: the ECC P-256 SRK template.
    area = TPMT_PUBLIC(type=TPM2_ALG.ECC, nameAlg=TPM2_ALG.SHA256, objectAttributes=_SRK_ATTRIBUTES)
    ecc = area.parameters.eccDetail
    ecc.symmetric.algorithm = TPM2_ALG.AES
    ecc.symmetric.keyBits.aes = 128
    ecc.symmetric.mode.aes = TPM2_ALG.CFB
    ecc.scheme.scheme = TPM2_ALG.NULL
    ecc.curveID = TPM2_ECC.NIST_P256
    ecc.kdf.scheme = TPM2_ALG.NULL
    area.unique.ecc.x = bytes(32)
    area.unique.ecc.y = bytes(32)
    return TPM2B_PUBLIC(publicArea=area)


def _srk(ectx: Any, transients: ExitStack) -> Any:
    handle, _, _, _, _ = ectx.create_primary(
        TPM2B_SENSITIVE_CREATE(), _srk_template(), ESYS_TR.OWNER
    )
    return _transient(ectx, transients, handle)


def _binding_template(policy: bytes, *, attributes: int = _BINDING_ATTRIBUTES) -> Any:
    area = TPMT_PUBLIC(
        type=TPM2_ALG.RSA,
        nameAlg=TPM2_ALG.SHA256,
        objectAttributes=attributes,
        authPolicy=policy,
    )
    rsa = area.parameters.rsaDetail
    rsa.symmetric.algorithm = TPM2_ALG.NULL
    # Fixed to OAEP-SHA256: the key must not decrypt PKCS#1 v1.5 or raw RSA.
    rsa.scheme.scheme = TPM2_ALG.OAEP
    rsa.scheme.details.oaep.hashAlg = TPM2_ALG.SHA256
    rsa.keyBits = 2048
    rsa.exponent = 0
    return TPM2B_PUBLIC(publicArea=area)


def _start_session(ectx: Any, transients: ExitStack, kind: Any) -> Any:
    session = ectx.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, kind, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
    )
    return _transient(ectx, transients, session)


def _branches(ectx: Any, selection: Any, pcr_digest: bytes) -> Any:
    """The two PolicyOR branch digests, computed by the TPM in trial sessions.

    With an explicit pcrDigest a trial PolicyPCR uses it without reading the PCRs,
    so the branch is that of the creation-time state, whatever the PCRs hold now.
    """
    digests = []
    with ExitStack() as trials:
        trial = _start_session(ectx, trials, TPM2_SE.TRIAL)
        ectx.policy_pcr(trial, TPM2B_DIGEST(pcr_digest), selection)
        ectx.policy_command_code(trial, TPM2_CC.RSA_Decrypt)
        digests.append(ectx.policy_get_digest(trial))
        trial = _start_session(ectx, trials, TPM2_SE.TRIAL)
        ectx.policy_command_code(trial, TPM2_CC.Certify)
        digests.append(ectx.policy_get_digest(trial))
    return TPML_DIGEST(digests)


def _policy_digest(ectx: Any, branches: Any) -> bytes:
    with ExitStack() as trials:
        trial = _start_session(ectx, trials, TPM2_SE.TRIAL)
        ectx.policy_or(trial, branches)
        return bytes(ectx.policy_get_digest(trial))


def _load(ectx: Any, transients: ExitStack, key: BindingKey) -> Any:
    private, used_private = TPM2B_PRIVATE.unmarshal(key.private)
    public, used_public = TPM2B_PUBLIC.unmarshal(key.public)
    if used_private != len(key.private) or used_public != len(key.public):
        raise TpmError("malformed binding key blob: trailing bytes")
    parent = _srk(ectx, transients)
    return _transient(ectx, transients, ectx.load(parent, private, public))


def create_binding_key(tpm: Tpm, *, pcr_selection: Mapping[str, Sequence[int]]) -> BindingKey:
    """TPM2_Create a binding key under the SRK, bound to the current values of
    ``pcr_selection`` (e.g. ``{"sha256": range(8)}``)."""
    wanted = normalize_selection(pcr_selection)
    if not wanted:
        raise TpmError("a binding key needs at least one PCR in its policy")
    values = tpm.read_pcrs(wanted)
    # PolicyPCR hashes the values with the session's hash (SHA-256), in selection
    # order: banks as given, indices ascending.
    pcr_digest = hashlib.sha256(
        b"".join(values[bank][index] for bank, indices in wanted.items() for index in indices)
    ).digest()
    selection = pcr_selection_list(wanted)
    with _esapi(tpm) as (ectx, transients):
        policy = _policy_digest(ectx, _branches(ectx, selection, pcr_digest))
        parent = _srk(ectx, transients)
        private, public, _, _, _ = ectx.create(
            parent, TPM2B_SENSITIVE_CREATE(), _binding_template(policy)
        )
        return BindingKey(
            private=bytes(private.marshal()),
            public=bytes(public.marshal()),
            pcr_selection=MappingProxyType({b: tuple(i) for b, i in wanted.items()}),
            pcr_digest=pcr_digest,
        )


def certify_binding_key(
    tpm: Tpm, key: BindingKey, *, ak_handle: int, qualifying_data: bytes
) -> Certification:
    """TPM2_Certify the binding key with the AK at ``ak_handle`` over ``qualifying_data``."""
    check_persistent_handle(ak_handle)
    selection = _selection_of(key)
    with _esapi(tpm) as (ectx, transients):
        if not persistent_handle_exists(ectx, ak_handle):
            raise TpmError(f"no AK at persistent handle 0x{ak_handle:08x}")
        ak = ectx.tr_from_tpmpublic(ak_handle)
        branches = _branches(ectx, selection, key.pcr_digest)
        handle = _load(ectx, transients, key)
        session = _start_session(ectx, transients, TPM2_SE.POLICY)
        ectx.policy_command_code(session, TPM2_CC.Certify)
        ectx.policy_or(session, branches)
        attest, signature = ectx.certify(
            handle,
            ak,
            TPM2B_DATA(qualifying_data),
            TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
            session1=session,
            session2=ESYS_TR.PASSWORD,
        )
        return Certification(attest=bytes(attest), signature=bytes(signature.marshal()))


def unwrap_transport_key(tpm: Tpm, key: BindingKey, encrypted: bytes) -> bytes:
    """TPM2_RSA_Decrypt (OAEP-SHA256, empty label) of a transport key wrapped to the
    binding key; the TPM refuses unless the PCRs hold their creation-time values."""
    selection = _selection_of(key)
    with _esapi(tpm) as (ectx, transients):
        branches = _branches(ectx, selection, key.pcr_digest)
        handle = _load(ectx, transients, key)
        session = _start_session(ectx, transients, TPM2_SE.POLICY)
        try:
            # With pcrDigest given, the TPM compares it with the current values
            # and fails here, which tells a boot-state change from other errors.
            ectx.policy_pcr(session, TPM2B_DIGEST(key.pcr_digest), selection)
        except TSS2_Exception as e:
            if e.error == TPM2_RC.VALUE:
                raise TpmError(BOOT_STATE_CHANGED) from e
            raise
        ectx.policy_command_code(session, TPM2_CC.RSA_Decrypt)
        ectx.policy_or(session, branches)
        scheme = TPMT_RSA_DECRYPT(scheme=TPM2_ALG.OAEP)
        scheme.details.oaep.hashAlg = TPM2_ALG.SHA256
        try:
            plain = ectx.rsa_decrypt(
                handle, TPM2B_PUBLIC_KEY_RSA(encrypted), scheme, TPM2B_DATA(), session1=session
            )
        except TSS2_Exception as e:
            # PCR_CHANGED: a PCR was extended between PolicyPCR and the decrypt.
            if e.error in (TPM2_RC.POLICY_FAIL, TPM2_RC.PCR_CHANGED):
                raise TpmError(BOOT_STATE_CHANGED) from e
            raise TpmError(f"TPM could not decrypt the transport key: {e}") from e
        result = bytes(plain)
        if len(result) != TRANSPORT_KEY_SIZE:
            raise TpmError(f"transport key is {len(result)} bytes, not {TRANSPORT_KEY_SIZE}")
        return result


def _selection_of(key: BindingKey) -> Any:
    for bank in key.pcr_selection:
        if bank not in BANKS:
            raise TpmError(f"binding key names unknown PCR bank {bank!r}")
    return pcr_selection_list(key.pcr_selection)
