"""TPM 2.0 access through tpm2-pytss (ESAPI over a TCTI loaded by name).

Every public method opens the TPM, does its work, flushes the transient handles
it created and closes the connection: swtpm serves one client at a time, and an
operator may need tpm2-tools between two agent operations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_SE,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMA_OBJECT,
    TPML_PCR_SELECTION,
    TPMS_ATTEST,
    TPMS_PCR_SELECTION,
    TPMS_RSA_PARMS,
    TPMS_SCHEME_HASH,
    TPMT_PUBLIC,
    TPMT_RSA_SCHEME,
    TPMT_SYM_DEF,
    TPMT_SYM_DEF_OBJECT,
    TPMU_ASYM_SCHEME,
    TPMU_PUBLIC_PARMS,
    TSS2_Exception,
)
from tpm2_pytss.utils import NoSuchIndex, NVReadEK, create_ek_template

EK_RSA2048_CERT_INDEX = 0x01C00002  # TCG EK Credential Profile: RSA 2048 EK certificate
_NV_RANGE = 0x01000000
_PERSISTENT_RANGE = 0x81000000
_MAX_PCR = 23  # PC Client platforms implement PCRs 0..23
_QUOTE_ATTEMPTS = 3  # a PCR extend racing the quote is rare; three tries is plenty
_TPM_ST_ATTEST_QUOTE = 0x8018

BANKS: Mapping[str, int] = {
    "sha1": TPM2_ALG.SHA1,
    "sha256": TPM2_ALG.SHA256,
    "sha384": TPM2_ALG.SHA384,
    "sha512": TPM2_ALG.SHA512,
    "sm3_256": TPM2_ALG.SM3_256,
}
_BANK_NAMES = {int(alg): name for name, alg in BANKS.items()}

_AK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
)


class TpmError(Exception):
    """A TPM operation failed; the message says which and why."""


@dataclass(frozen=True)
class Endorsement:
    ek_public: bytes  # marshalled TPM2B_PUBLIC exactly as the TPM returned it
    ek_certificate: bytes  # DER from NV 0x01c00002; b"" when the TPM has none


@dataclass(frozen=True)
class Quote:
    attest: bytes  # TPMS_ATTEST exactly as signed (TPM2B_ATTEST contents, no size prefix)
    signature: bytes  # marshalled TPMT_SIGNATURE
    pcrs: dict[str, dict[int, bytes]]  # bank -> index -> value, exactly those quoted


def ak_name(ak_public: bytes) -> bytes:
    """TPM name of a key from its marshalled TPM2B_PUBLIC: nameAlg (BE16) || H(TPMT_PUBLIC)."""
    if len(ak_public) < 6 or int.from_bytes(ak_public[:2], "big") != len(ak_public) - 2:
        raise TpmError("malformed TPM2B_PUBLIC")
    public_area = ak_public[2:]
    name_alg = public_area[2:4]
    if int.from_bytes(name_alg, "big") != TPM2_ALG.SHA256:
        raise TpmError("only sha256 nameAlg is supported for AK names")
    return name_alg + hashlib.sha256(public_area).digest()


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
            cert, ek, public = _create_ek(ectx)
            flush_handle(ectx, ek)
            return Endorsement(ek_public=public, ek_certificate=_trim_der(cert or b""))

    def ensure_ak(self, handle: int) -> bytes:
        """Return the AK at persistent ``handle``, creating and persisting it if absent."""
        check_persistent_handle(handle)
        with self._open() as ectx:
            if persistent_handle_exists(ectx, handle):
                key = ectx.tr_from_tpmpublic(handle)
                public, _, _ = ectx.read_public(key)
                if not _is_our_ak(public.publicArea):
                    raise TpmError(
                        f"persistent handle 0x{handle:08x} holds a key that is not an"
                        " RSA-2048 restricted RSASSA-SHA256 signing key; refusing to use it"
                    )
                return bytes(public.marshal())
            # The endorsement hierarchy does not obfuscate clock and firmware version
            # in quotes, which the owner hierarchy would.
            transient, public, _, _, _ = ectx.create_primary(
                TPM2B_SENSITIVE_CREATE(), _ak_template(), ESYS_TR.ENDORSEMENT
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
        blob = _unmarshal_exact(TPM2B_ID_OBJECT, credential_blob, "credential_blob")
        secret = _unmarshal_exact(TPM2B_ENCRYPTED_SECRET, encrypted_secret, "encrypted_secret")
        with self._open() as ectx:
            if not persistent_handle_exists(ectx, ak_handle):
                raise TpmError(f"no AK at persistent handle 0x{ak_handle:08x}")
            ak = ectx.tr_from_tpmpublic(ak_handle)
            _, ek, _ = _create_ek(ectx)
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
                before = _read_pcrs_once(ectx, wanted)
                attest, signature = ectx.quote(ak, pcr_select, qualifying_data)
                after = _read_pcrs_once(ectx, wanted)
                if before is None or after is None or before != after:
                    continue
                _, values = after
                attest_bytes = bytes(attest)
                if _quoted_digest(attest_bytes) != _pcr_digest(values):
                    continue
                return Quote(attest=attest_bytes, signature=bytes(signature.marshal()), pcrs=values)
        raise TpmError(f"PCRs kept changing during {_QUOTE_ATTEMPTS} quote attempts")

    def read_pcrs(self, selection: Mapping[str, Sequence[int]]) -> dict[str, dict[int, bytes]]:
        wanted = normalize_selection(selection)
        with self._open() as ectx:
            for _ in range(_QUOTE_ATTEMPTS):
                result = _read_pcrs_once(ectx, wanted)
                if result is not None:
                    return result[1]
        raise TpmError(f"PCRs kept changing during {_QUOTE_ATTEMPTS} read attempts")

    def extend_pcr(self, index: int, data: bytes) -> None:
        """TPM2_PCR_Event: extend every active bank of PCR ``index`` with H(data)."""
        if not 0 <= index <= _MAX_PCR:
            raise TpmError(f"PCR index {index} out of range 0..{_MAX_PCR}")
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


def _create_ek(ectx: Any) -> tuple[bytes | None, Any, bytes]:
    """Recreate the default RSA-2048 EK; returns (certificate, transient handle, public)."""
    try:
        cert, template = create_ek_template("EK-RSA2048", _NvReader(ectx))
    except ValueError as e:
        raise TpmError(f"cannot build the EK template: {e}") from e
    handle, public, _, _, _ = ectx.create_primary(
        TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT
    )
    return cert, handle, bytes(public.marshal())


class _NvReader:
    """NV reader for create_ek_template that checks the index exists first, so that
    absent optional indices (EK template, nonce) do not make the TSS log errors."""

    def __init__(self, ectx: Any) -> None:
        self._ectx = ectx
        self._reader = NVReadEK(ectx)

    def __call__(self, index: int) -> bytes:
        if not _handle_exists(self._ectx, int(index), _NV_RANGE):
            raise NoSuchIndex(index)
        return bytes(self._reader(index))


def _handle_exists(ectx: Any, handle: int, capability_range: int) -> bool:
    _, data = ectx.get_capability(TPM2_CAP.HANDLES, handle, 1)
    handles = list(data.data.handles)
    return (
        bool(handles)
        and int(handles[0]) == handle
        and handle & 0xFF000000 == capability_range & 0xFF000000
    )


def persistent_handle_exists(ectx: Any, handle: int) -> bool:
    return _handle_exists(ectx, handle, _PERSISTENT_RANGE)


def check_persistent_handle(handle: int) -> None:
    if handle & 0xFF000000 != _PERSISTENT_RANGE:
        raise TpmError(f"0x{handle:08x} is not a persistent handle (0x81xxxxxx)")


def flush_handle(ectx: Any, handle: Any) -> None:
    # Best effort: the connection is closed right after, and a failed flush must
    # not hide the error that got us here.
    with suppress(TSS2_Exception):
        ectx.flush_context(handle)


def _ak_template() -> Any:
    return TPM2B_PUBLIC(
        publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.RSA,
            nameAlg=TPM2_ALG.SHA256,
            objectAttributes=_AK_ATTRIBUTES,
            parameters=TPMU_PUBLIC_PARMS(
                rsaDetail=TPMS_RSA_PARMS(
                    symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL),
                    scheme=TPMT_RSA_SCHEME(
                        scheme=TPM2_ALG.RSASSA,
                        details=TPMU_ASYM_SCHEME(rsassa=TPMS_SCHEME_HASH(hashAlg=TPM2_ALG.SHA256)),
                    ),
                    keyBits=2048,
                    exponent=0,
                )
            ),
        )
    )


def _is_our_ak(area: Any) -> bool:
    rsa = area.parameters.rsaDetail
    return bool(
        area.type == TPM2_ALG.RSA
        and area.nameAlg == TPM2_ALG.SHA256
        and int(area.objectAttributes) == int(_AK_ATTRIBUTES)
        and rsa.scheme.scheme == TPM2_ALG.RSASSA
        and rsa.scheme.details.rsassa.hashAlg == TPM2_ALG.SHA256
        and rsa.keyBits == 2048
    )


def _unmarshal_exact(cls: Any, data: bytes, what: str) -> Any:
    try:
        value, used = cls.unmarshal(data)
    except TSS2_Exception as e:
        raise TpmError(f"malformed {what}: {e}") from e
    if used != len(data):
        raise TpmError(f"malformed {what}: {len(data) - used} trailing bytes")
    return value


def normalize_selection(selection: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    wanted: dict[str, list[int]] = {}
    for bank, indices in selection.items():
        if bank not in BANKS:
            raise TpmError(f"unknown PCR bank {bank!r} (known: {', '.join(BANKS)})")
        for index in indices:
            if not 0 <= index <= _MAX_PCR:
                raise TpmError(f"PCR index {index} out of range 0..{_MAX_PCR}")
        if indices:
            wanted[bank] = sorted(set(wanted.get(bank, [])) | set(indices))
    return wanted


def pcr_selection_list(wanted: Mapping[str, Sequence[int]]) -> Any:
    selections = []
    for bank, indices in wanted.items():
        bitmap = bytearray(3)
        for index in indices:
            bitmap[index // 8] |= 1 << (index % 8)
        selections.append(
            TPMS_PCR_SELECTION(hash=BANKS[bank], sizeofSelect=3, pcrSelect=bytes(bitmap))
        )
    return TPML_PCR_SELECTION(selections)


def _read_pcrs_once(
    ectx: Any, wanted: Mapping[str, Sequence[int]]
) -> tuple[int, dict[str, dict[int, bytes]]] | None:
    """(update counter, values), or None if the counter moved between partial reads.

    TPM2_PCR_Read returns at most 8 digests per call, so read until all are in.
    """
    remaining = {bank: set(indices) for bank, indices in wanted.items()}
    values: dict[str, dict[int, bytes]] = {bank: {} for bank in wanted}
    counter: int | None = None
    while any(remaining.values()):
        update_counter, selected, digests = ectx.pcr_read(
            pcr_selection_list({b: sorted(i) for b, i in remaining.items() if i})
        )
        if counter is not None and update_counter != counter:
            return None
        counter = int(update_counter)
        digest_list = [bytes(d) for d in digests.digests]
        position = 0
        for sel in selected.pcrSelections:
            bank = _BANK_NAMES.get(int(sel.hash))
            bitmap = bytes(sel.pcrSelect)[: sel.sizeofSelect]
            for index in range(len(bitmap) * 8):
                if bitmap[index // 8] >> (index % 8) & 1:
                    if bank is None or position >= len(digest_list):
                        raise TpmError("TPM2_PCR_Read returned an inconsistent selection")
                    values[bank][index] = digest_list[position]
                    remaining[bank].discard(index)
                    position += 1
        if position == 0:
            missing = {b: sorted(i) for b, i in remaining.items() if i}
            raise TpmError(f"the TPM does not report PCRs {missing} (bank not active?)")
    return counter or 0, {bank: dict(sorted(v.items())) for bank, v in values.items()}


def _pcr_digest(values: Mapping[str, Mapping[int, bytes]]) -> bytes:
    # The AK signs with SHA-256, so the quote's pcrDigest is SHA-256 over the values
    # concatenated in selection order: banks as selected, indices ascending.
    h = hashlib.sha256()
    for bank_values in values.values():
        for index in sorted(bank_values):
            h.update(bank_values[index])
    return h.digest()


def _quoted_digest(attest: bytes) -> bytes:
    parsed, used = TPMS_ATTEST.unmarshal(attest)
    if used != len(attest) or parsed.type != _TPM_ST_ATTEST_QUOTE:
        raise TpmError("TPM2_Quote returned something other than a quote")
    return bytes(parsed.attested.quote.pcrDigest)


def _trim_der(cert: bytes) -> bytes:
    """Drop NV padding after the certificate's outer DER SEQUENCE, if any."""
    if len(cert) < 4 or cert[0] != 0x30:
        return cert
    first = cert[1]
    if first < 0x80:
        total = 2 + first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or len(cert) < 2 + n:
            return cert
        total = 2 + n + int.from_bytes(cert[2 : 2 + n], "big")
    return cert[:total] if total <= len(cert) else cert
