"""Parse TPM 2.0 quote evidence (untrusted bytes) into frozen dataclasses: one import.

This module gathers the TPM structure parsers, each in the module for its job:

* :mod:`.parse_common`: size bounds, algorithm tables, exact and canonical pytss
  unmarshalling, every failure as :class:`~verifier.evidence.errors.ParseError`;
* :mod:`.parse_attest`: TPMS_ATTEST (magic and type, clock) and the quote;
* :mod:`.parse_signatures`: TPMT_SIGNATURE;
* :mod:`.parse_public`: TPM2B_PUBLIC / TPMT_PUBLIC keys.

TPMT_PUBLIC (and, in ``certify``, TPMS_ATTEST of other types) is unmarshalled with
tpm2-pytss (the TSS reference marshalling code); these modules add what the TSS
does not: the TPM_GENERATED magic and attestation type checks, a size bound on
every input, rejection of trailing bytes, rejection of non-canonical encodings (the
value must re-marshal to exactly the bytes received, so that what we read is
exactly what was signed or hashed), and a translation of every failure into
ParseError. The two per-quote structures, TPMS_ATTEST of type quote and
TPMT_SIGNATURE, are framed instead by the strict hand-written readers of
:mod:`.wire`, about 30 times faster than going through pytss; pytss remains their
test oracle.

The names below are the parsers' own objects, re-exported: importing them from
here costs nothing per call. Nothing here is authenticated: the results are claims,
to be checked by ``authenticate``.
"""

from __future__ import annotations

from verifier.evidence.tpm.parse_attest import (
    SELECTION_CACHE_SIZE,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    ClockInfo,
    PcrSelection,
    QuoteInfo,
    attest_header,
    parse_quote_attest,
    read_clock_info,
    unmarshal_attest,
)
from verifier.evidence.tpm.parse_common import (
    HASH_IDS,
    HASH_SIZES,
    MAX_ATTEST_SIZE,
    MAX_PUBLIC_SIZE,
    MAX_SIGNATURE_SIZE,
    as_bytes,
    read_field,
    unmarshal_exact,
)
from verifier.evidence.tpm.parse_public import TpmPublic, parse_tpm2b_public, parse_tpmt_public
from verifier.evidence.tpm.parse_signatures import TpmSignature, parse_signature

__all__ = [
    "HASH_IDS",
    "HASH_SIZES",
    "MAX_ATTEST_SIZE",
    "MAX_PUBLIC_SIZE",
    "MAX_SIGNATURE_SIZE",
    "SELECTION_CACHE_SIZE",
    "TPM_GENERATED_VALUE",
    "TPM_ST_ATTEST_QUOTE",
    "ClockInfo",
    "PcrSelection",
    "QuoteInfo",
    "TpmPublic",
    "TpmSignature",
    "as_bytes",
    "attest_header",
    "parse_quote_attest",
    "parse_signature",
    "parse_tpm2b_public",
    "parse_tpmt_public",
    "read_clock_info",
    "read_field",
    "unmarshal_attest",
    "unmarshal_exact",
]
