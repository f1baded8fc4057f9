"""The REPORT_DATA a confidential VM's CPU report carries: shared by agent and verifier.

The agent asks the firmware for a report over this value, the verifier recomputes it;
both import it from here (they meet only in ``weightgate``). It binds:

- the verifier's challenge nonce (freshness: minted by the verifier, single use);
- the exact TPMS_ATTEST bytes of the same round's TPM quote (binding: the CPU report
  and the TPM evidence answer one challenge on one host; a report produced for
  another host's quote or another round carries a different value).

A domain prefix per evidence kind separates it from every other derivation of the
nonce (the TPM quote's and binding key's qualifyingData, the GPU nonces), and each
input is length-prefixed so no two input pairs share an encoding. SHA-512 fills the
64-byte REPORT_DATA of SEV-SNP (and of TDX, whose REPORTDATA is also 64 bytes).
"""

from __future__ import annotations

import hashlib
import struct

__all__ = ["REPORT_DATA_SIZE", "snp_report_data", "tdx_report_data"]

REPORT_DATA_SIZE = 64
_SNP_DOMAIN = b"weightgate/v1/sev-snp-report-data\x00"
_TDX_DOMAIN = b"weightgate/v1/tdx-report-data\x00"
_U32 = struct.Struct(">I")


def _bound(domain: bytes, challenge_nonce: bytes, tpm_attest: bytes) -> bytes:
    if not challenge_nonce:
        raise ValueError("report data: empty challenge nonce")
    if not tpm_attest:
        raise ValueError("report data: empty TPM attest")
    digest = hashlib.sha512(domain)
    for part in (challenge_nonce, tpm_attest):
        digest.update(_U32.pack(len(part)))
        digest.update(part)
    return digest.digest()


def snp_report_data(challenge_nonce: bytes, tpm_attest: bytes) -> bytes:
    """SHA-512(domain || len(nonce) || nonce || len(attest) || attest): 64 bytes.

    ``tpm_attest``: this round's quote exactly as the TPM signed it (``TpmQuote.attest``).
    ValueError for an empty input: the binding never silently covers less.
    """
    return _bound(_SNP_DOMAIN, challenge_nonce, tpm_attest)


def tdx_report_data(challenge_nonce: bytes, tpm_attest: bytes) -> bytes:
    """The TDX quote's REPORTDATA: as :func:`snp_report_data`, under its own domain."""
    return _bound(_TDX_DOMAIN, challenge_nonce, tpm_attest)
