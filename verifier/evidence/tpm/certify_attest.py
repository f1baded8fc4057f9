"""Parse a TPM2_Certify result: the TPMS_ATTEST the AK signs when it certifies
another key (here the host binding key)."""

from __future__ import annotations

from dataclasses import dataclass

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.parse import ClockInfo, read_clock_info, read_field, unmarshal_attest

__all__ = ["TPM_ST_ATTEST_CERTIFY", "CertifyInfo", "parse_certify_attest"]

TPM_ST_ATTEST_CERTIFY = 0x8017


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
