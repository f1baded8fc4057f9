"""TPM 2.0 access through tpm2-pytss (ESAPI over a TCTI loaded by name): :class:`Tpm`.

Every public method opens the TPM, does its work, flushes the transient handles
it created and closes the connection: swtpm serves one client at a time, and an
operator may need tpm2-tools between two agent operations.

The pieces live by job: :mod:`.tpm_keys` (EK, AK, names), :mod:`.tpm_pcrs` (banks,
selections, reads), :mod:`.tpm_handles` (the error, handles, exact inputs); their
names that other modules use are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_SE,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_SENSITIVE_CREATE,
    TPMT_SYM_DEF,
    TSS2_Exception,
)

from agent.collectors.tpm_handles import (
    TpmError,
    check_persistent_handle,
    flush_handle,
    persistent_handle_exists,
    unmarshal_exact,
)
from agent.collectors.tpm_keys import (
    EK_RSA2048_CERT_INDEX,
    Endorsement,
    ak_name,
    ak_template,
    create_ek,
    is_our_ak,
    trim_der,
)
from agent.collectors.tpm_pcrs import (
    BANKS,
    MAX_PCR,
    normalize_selection,
    pcr_digest,
    pcr_selection_list,
    quoted_digest,
    read_pcrs_once,
)

__all__ = [
    "BANKS",
    "EK_RSA2048_CERT_INDEX",
    "Endorsement",
    "Quote",
    "Tpm",
    "TpmError",
    "ak_name",
    "check_persistent_handle",
    "flush_handle",
    "normalize_selection",
    "pcr_selection_list",
    "persistent_handle_exists",
]

_QUOTE_ATTEMPTS = 3  # a PCR extend racing the quote is rare; three tries is plenty


@dataclass(frozen=True)
class Quote:
    attest: bytes  # TPMS_ATTEST exactly as signed (TPM2B_ATTEST contents, no size prefix)
    signature: bytes  # marshalled TPMT_SIGNATURE
    pcrs: dict[str, dict[int, bytes]]  # bank -> index -> value, exactly those quoted


class Tpm:
    """One TPM, addressed by a TCTI string such as ``swtpm:host=127.0.0.1,port=2321``,
    ``device:/dev/tpmrm0`` or ``tabrmd``."""

    def __init__(self, tcti: str) -> None:
        self._tcti = tcti

    @property
    def tcti(self) -> str:
        return self._tcti

    def read_endorsement(self) -> Endorsement:
        with self._open() as ectx:
            cert, ek, public = create_ek(ectx)
            flush_handle(ectx, ek)
            return Endorsement(ek_public=public, ek_certificate=trim_der(cert or b""))

    def ensure_ak(self, handle: int) -> bytes:
        """Return the AK at persistent ``handle``, creating and persisting it if absent."""
        check_persistent_handle(handle)
        with self._open() as ectx:
            if persistent_handle_exists(ectx, handle):
                key = ectx.tr_from_tpmpublic(handle)
                public, _, _ = ectx.read_public(key)
                if not is_our_ak(public.publicArea):
                    raise TpmError(
                        f"persistent handle 0x{handle:08x} holds a key that is not an"
                        " RSA-2048 restricted RSASSA-SHA256 signing key; refusing to use it"
                    )
                return bytes(public.marshal())
            # The endorsement hierarchy does not obfuscate clock and firmware version
            # in quotes, which the owner hierarchy would.
            transient, public, _, _, _ = ectx.create_primary(
                TPM2B_SENSITIVE_CREATE(), ak_template(), ESYS_TR.ENDORSEMENT
            )
            try:
                ectx.evict_control(ESYS_TR.OWNER, transient, handle)
            finally:
                flush_handle(ectx, transient)
            return bytes(public.marshal())

    def remove_ak(self, handle: int) -> None:
        """Evict the persistent key at ``handle``; no-op when the handle is empty."""
        check_persistent_handle(handle)
        with self._open() as ectx:
            if persistent_handle_exists(ectx, handle):
                ectx.evict_control(ESYS_TR.OWNER, ectx.tr_from_tpmpublic(handle), handle)

    def activate_credential(
        self, *, ak_handle: int, credential_blob: bytes, encrypted_secret: bytes
    ) -> bytes:
        """Recover the secret a verifier bound to the EK and this AK's name."""
        check_persistent_handle(ak_handle)
        blob = unmarshal_exact(TPM2B_ID_OBJECT, credential_blob, "credential_blob")
        secret = unmarshal_exact(TPM2B_ENCRYPTED_SECRET, encrypted_secret, "encrypted_secret")
        with self._open() as ectx:
            if not persistent_handle_exists(ectx, ak_handle):
                raise TpmError(f"no AK at persistent handle 0x{ak_handle:08x}")
            ak = ectx.tr_from_tpmpublic(ak_handle)
            _, ek, _ = create_ek(ectx)
            session = None
            try:
                # The default EK's authPolicy is PolicySecret(TPM_RH_ENDORSEMENT).
                session = ectx.start_auth_session(
                    ESYS_TR.NONE,
                    ESYS_TR.NONE,
                    TPM2_SE.POLICY,
                    TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                    TPM2_ALG.SHA256,
                )
                ectx.policy_secret(ESYS_TR.ENDORSEMENT, session)
                cred = ectx.activate_credential(
                    ak, ek, blob, secret, session1=ESYS_TR.PASSWORD, session2=session
                )
            finally:
                if session is not None:
                    flush_handle(ectx, session)
                flush_handle(ectx, ek)
            return bytes(cred)

    def quote(
        self, *, ak_handle: int, qualifying_data: bytes, selection: Mapping[str, Sequence[int]]
    ) -> Quote:
        """Quote ``selection`` with the AK and return the PCR values the quote covers.

        PCRs are read before and after the quote; if the PCR update counter moved in
        between, the quote is taken again so that the values match its pcrDigest.
        """
        check_persistent_handle(ak_handle)
        wanted = normalize_selection(selection)
        pcr_select = pcr_selection_list(wanted)
        with self._open() as ectx:
            if not persistent_handle_exists(ectx, ak_handle):
                raise TpmError(f"no AK at persistent handle 0x{ak_handle:08x}")
            ak = ectx.tr_from_tpmpublic(ak_handle)
            for _ in range(_QUOTE_ATTEMPTS):
                before = read_pcrs_once(ectx, wanted)
                attest, signature = ectx.quote(ak, pcr_select, qualifying_data)
                after = read_pcrs_once(ectx, wanted)
                if before is None or after is None or before != after:
                    continue
                _, values = after
                attest_bytes = bytes(attest)
                if quoted_digest(attest_bytes) != pcr_digest(values):
                    continue
                return Quote(attest=attest_bytes, signature=bytes(signature.marshal()), pcrs=values)
        raise TpmError(f"PCRs kept changing during {_QUOTE_ATTEMPTS} quote attempts")

    def read_pcrs(self, selection: Mapping[str, Sequence[int]]) -> dict[str, dict[int, bytes]]:
        wanted = normalize_selection(selection)
        with self._open() as ectx:
            for _ in range(_QUOTE_ATTEMPTS):
                result = read_pcrs_once(ectx, wanted)
                if result is not None:
                    return result[1]
        raise TpmError(f"PCRs kept changing during {_QUOTE_ATTEMPTS} read attempts")

    def extend_pcr(self, index: int, data: bytes) -> None:
        """TPM2_PCR_Event: extend every active bank of PCR ``index`` with H(data)."""
        if not 0 <= index <= MAX_PCR:
            raise TpmError(f"PCR index {index} out of range 0..{MAX_PCR}")
        with self._open() as ectx:
            ectx.pcr_event(ESYS_TR.PCR0 + index, data)

    @contextmanager
    def _open(self) -> Iterator[Any]:
        try:
            ectx = ESAPI(self._tcti)
        except (TSS2_Exception, RuntimeError, ValueError) as e:
            raise TpmError(f"cannot open TPM {self._tcti!r}: {e}") from e
        try:
            yield ectx
        except TSS2_Exception as e:
            raise TpmError(f"TPM command failed: {e}") from e
        finally:
            ectx.close()
