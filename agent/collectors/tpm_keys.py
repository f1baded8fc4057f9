"""The agent's TPM keys: the default RSA-2048 EK and its certificate, and the AK.

The EK is recreated from the TCG default template (and its certificate read from
NV) whenever it is needed; the AK is an RSA-2048 restricted RSASSA-SHA256 signing
key under the endorsement hierarchy, and :func:`is_our_ak` refuses any other key
found at the AK's persistent handle. :func:`ak_name` computes a key's TPM name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from tpm2_pytss import (
    ESYS_TR,
    TPM2_ALG,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMA_OBJECT,
    TPMS_RSA_PARMS,
    TPMS_SCHEME_HASH,
    TPMT_PUBLIC,
    TPMT_RSA_SCHEME,
    TPMT_SYM_DEF_OBJECT,
    TPMU_ASYM_SCHEME,
    TPMU_PUBLIC_PARMS,
)
from tpm2_pytss.utils import NoSuchIndex, NVReadEK, create_ek_template

from agent.collectors.tpm_handles import NV_RANGE, TpmError, handle_exists

__all__ = [
    "EK_RSA2048_CERT_INDEX",
    "Endorsement",
    "ak_name",
    "ak_template",
    "create_ek",
    "is_our_ak",
    "trim_der",
]

EK_RSA2048_CERT_INDEX = 0x01C00002  # TCG EK Credential Profile: RSA 2048 EK certificate

_AK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
)


@dataclass(frozen=True)
class Endorsement:
    ek_public: bytes  # marshalled TPM2B_PUBLIC exactly as the TPM returned it
    ek_certificate: bytes  # DER from NV 0x01c00002; b"" when the TPM has none


def ak_name(ak_public: bytes) -> bytes:
    """TPM name of a key from its marshalled TPM2B_PUBLIC: nameAlg (BE16) || H(TPMT_PUBLIC)."""
    if len(ak_public) < 6 or int.from_bytes(ak_public[:2], "big") != len(ak_public) - 2:
        raise TpmError("malformed TPM2B_PUBLIC")
    public_area = ak_public[2:]
    name_alg = public_area[2:4]
    if int.from_bytes(name_alg, "big") != TPM2_ALG.SHA256:
        raise TpmError("only sha256 nameAlg is supported for AK names")
    return name_alg + hashlib.sha256(public_area).digest()


def create_ek(ectx: Any) -> tuple[bytes | None, Any, bytes]:
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
        if not handle_exists(self._ectx, int(index), NV_RANGE):
            raise NoSuchIndex(index)
        return bytes(self._reader(index))


def ak_template() -> Any:
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


def is_our_ak(area: Any) -> bool:
    rsa = area.parameters.rsaDetail
    return bool(
        area.type == TPM2_ALG.RSA
        and area.nameAlg == TPM2_ALG.SHA256
        and int(area.objectAttributes) == int(_AK_ATTRIBUTES)
        and rsa.scheme.scheme == TPM2_ALG.RSASSA
        and rsa.scheme.details.rsassa.hashAlg == TPM2_ALG.SHA256
        and rsa.keyBits == 2048
    )


def trim_der(cert: bytes) -> bytes:
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
