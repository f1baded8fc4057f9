"""Hand-written big-endian readers for the two TPM structures on the quote hot path.

STYLE.md prefers tpm2-pytss for TPM structures, and everything else in this package
still uses it (TPMT_PUBLIC, once per enrollment; the certify TPMS_ATTEST). The
exception is the per-quote path, TPMS_ATTEST of type quote and TPMT_SIGNATURE:
unmarshalling them with pytss and reading the fields back through its generated
attribute accessors (``types.py __getattribute__``) cost about 60% of
``authenticate_quote`` + ``appraise_pcrs`` -- roughly 300 us of the 500 us a quote
took, against about 40 us for the RSA-2048 verification itself. With these readers
``parse_quote_attest`` + ``parse_signature`` took about 10 us together
(``bench/bench_quote.py``, RSA: 1,300 -> 8,000-10,500 quotes/s on a shared
2-core machine, together with the AK caching in ``keys``); with the TPM2Bs read
inline, the PCR selection handed back as bytes (``parse`` decodes each distinct
one once) and the dataclasses filled slot by slot, about 3.3 us (RSA, 2026-11).

On the quote path, :mod:`.quote_native` frames both structures in one C call first
and hands anything it does not accept in full back to these readers, which are its
reference (``tests/unit/test_quote_native.py``).

tpm2-pytss stays the oracle: ``tests/unit/test_tpm_wire.py`` checks, for every real
vector and for thousands of generated and mutated inputs, that the parsers built on
these readers and the pytss-based reference implementation either return the same
result or both raise ParseError.

The readers are strict. They read exactly the fields of the structure, bound every
length by the TSS's buffer size (so that they accept what the TSS accepts and
nothing more), reject truncation and trailing bytes, and raise only
:class:`~verifier.evidence.errors.ParseError`. Because every field is read in
order from a length that is checked, and every byte must be consumed, a structure
that parses has exactly one encoding: the canonical-encoding check that the pytss
path needs (re-marshal and compare) holds by construction.

They only frame: algorithm identifiers are returned as numbers, and their meaning
(supported hashes, duplicate banks, TPMI_YES_NO) is checked in ``parse``.
"""

from __future__ import annotations

import struct

from verifier.evidence.errors import ParseError

__all__ = [
    "MAX_TPM2B_DATA",
    "MAX_TPM2B_DIGEST",
    "MAX_TPM2B_ECC_PARAMETER",
    "MAX_TPM2B_NAME",
    "MAX_TPM2B_PUBLIC_KEY_RSA",
    "NUM_PCR_BANKS",
    "PCR_SELECT_MAX",
    "SIG_ECDSA",
    "SIG_RSAPSS",
    "SIG_RSASSA",
    "QuoteFields",
    "SignatureFields",
    "read_pcr_selection",
    "read_quote_body",
    "read_signature",
]

# Buffer sizes of the TSS (tss2_tpm2_types.h), which are what tpm2-pytss enforces:
# sizeof(TPMU_NAME) is 68 in C (a 66-byte TPMT_HA padded to the alignment of the
# TPM2_HANDLE member); TPM2B_DATA and TPM2B_DIGEST hold a TPMU_HA (64, SHA-512);
# TPM2_MAX_RSA_KEY_BYTES and TPM2_MAX_ECC_KEY_BYTES are 512 and 128.
MAX_TPM2B_NAME = 68
MAX_TPM2B_DATA = 64
MAX_TPM2B_DIGEST = 64
MAX_TPM2B_PUBLIC_KEY_RSA = 512
MAX_TPM2B_ECC_PARAMETER = 128
# TPM2_NUM_PCR_BANKS and TPM2_PCR_SELECT_MAX ((TPM2_MAX_PCRS + 7) / 8, 32 PCRs).
NUM_PCR_BANKS = 16
PCR_SELECT_MAX = 4

SIG_RSASSA = 0x0014
SIG_RSAPSS = 0x0016
SIG_ECDSA = 0x0018

# TPMS_CLOCK_INFO (clock, resetCount, restartCount, safe), firmwareVersion, then the
# count of TPML_PCR_SELECTION.
_CLOCK_FIRMWARE_COUNT = struct.Struct(">QIIBQI")
_U32 = struct.Struct(">I")

# (qualifiedSigner, extraData, clock, resetCount, restartCount, safe,
#  firmwareVersion, TPML_PCR_SELECTION bytes, pcrDigest)
QuoteFields = tuple[bytes, bytes, int, int, int, int, int, bytes, bytes]
# (sigAlg, hash alg id, [signature] for RSA or [r, s] for ECDSA)
SignatureFields = tuple[int, int, list[bytes]]


def _truncated(what: str) -> ParseError:
    return ParseError(f"{what}: cannot unmarshal (truncated)")


def _tpm2b(raw: bytes, offset: int, limit: int, what: str) -> tuple[bytes, int]:
    """A TPM2B at ``offset``: (its buffer, the offset after it)."""
    if offset + 2 > len(raw):
        raise _truncated(what)
    size = raw[offset] << 8 | raw[offset + 1]
    if size > limit:
        raise ParseError(f"{what}: cannot unmarshal (size {size} exceeds {limit})")
    end = offset + 2 + size
    if end > len(raw):
        raise _truncated(what)
    return raw[offset + 2 : end], end


def _no_trailing(raw: bytes, offset: int, what: str) -> None:
    if offset != len(raw):
        raise ParseError(f"{what}: {len(raw) - offset} trailing bytes")


def read_quote_body(raw: bytes) -> QuoteFields:
    """The fields of a TPMS_ATTEST quote after its 6-byte magic and type header.

    The caller has bounded ``raw`` and checked the header (magic, type). The PCR
    selection comes back as the exact bytes of its TPML_PCR_SELECTION (count
    included), framed and bounded here; :func:`read_pcr_selection` splits it. Quotes
    from one host repeat one selection, so the caller can decode it once per value.
    """
    what = "TPMS_ATTEST"
    # The TPM2Bs are inlined (this is the per-quote path); each size is bounded
    # before its end is computed, and every end is checked against len(raw).
    end = len(raw)
    if end < 8:
        raise _truncated(what)
    size = raw[6] << 8 | raw[7]
    if size > MAX_TPM2B_NAME:
        raise ParseError(f"{what}: cannot unmarshal (size {size} exceeds {MAX_TPM2B_NAME})")
    offset = 8 + size
    if offset + 2 > end:
        raise _truncated(what)
    signer = raw[8:offset]
    size = raw[offset] << 8 | raw[offset + 1]
    if size > MAX_TPM2B_DATA:
        raise ParseError(f"{what}: cannot unmarshal (size {size} exceeds {MAX_TPM2B_DATA})")
    start = offset + 2
    offset = start + size
    if offset > end:
        raise _truncated(what)
    extra = raw[start:offset]
    if offset + _CLOCK_FIRMWARE_COUNT.size > end:
        raise _truncated(what)
    clock, reset, restart, safe, firmware, count = _CLOCK_FIRMWARE_COUNT.unpack_from(raw, offset)
    offset += _CLOCK_FIRMWARE_COUNT.size
    if count > NUM_PCR_BANKS:
        raise ParseError(f"{what}: cannot unmarshal ({count} PCR selections > {NUM_PCR_BANKS})")
    start = offset - 4
    for _ in range(count):
        if offset + 3 > end:
            raise _truncated(what)
        size = raw[offset + 2]
        if size > PCR_SELECT_MAX:
            raise ParseError(f"{what}: cannot unmarshal (sizeofSelect {size} > {PCR_SELECT_MAX})")
        offset += 3 + size
        if offset > end:
            raise _truncated(what)
    selection = raw[start:offset]
    if offset + 2 > end:
        raise _truncated(what)
    size = raw[offset] << 8 | raw[offset + 1]
    if size > MAX_TPM2B_DIGEST:
        raise ParseError(f"{what}: cannot unmarshal (size {size} exceeds {MAX_TPM2B_DIGEST})")
    start = offset + 2
    offset = start + size
    if offset > end:
        raise _truncated(what)
    _no_trailing(raw, offset, what)
    return signer, extra, clock, reset, restart, safe, firmware, selection, raw[start:offset]


def read_pcr_selection(selection: bytes) -> list[tuple[int, bytes]]:
    """(hash alg id, pcrSelect bitmap) per entry of a TPML_PCR_SELECTION framed by
    :func:`read_quote_body` (which bounded the count and every sizeofSelect)."""
    (count,) = _U32.unpack_from(selection, 0)
    offset = 4
    entries: list[tuple[int, bytes]] = []
    for _ in range(count):
        size = selection[offset + 2]
        entries.append(
            (
                selection[offset] << 8 | selection[offset + 1],
                selection[offset + 3 : offset + 3 + size],
            )
        )
        offset += 3 + size
    if offset != len(selection):
        raise ParseError(f"TPML_PCR_SELECTION: {len(selection) - offset} trailing bytes")
    return entries


def read_signature(raw: bytes) -> SignatureFields:
    """A TPMT_SIGNATURE of scheme RSASSA, RSAPSS or ECDSA (any other: ParseError)."""
    what = "TPMT_SIGNATURE"
    if len(raw) < 2:
        raise _truncated(what)
    alg = raw[0] << 8 | raw[1]
    if alg not in (SIG_RSASSA, SIG_RSAPSS, SIG_ECDSA):
        raise ParseError(f"{what}: unsupported signature scheme 0x{alg:04x}")
    if len(raw) < 4:
        raise _truncated(what)
    hash_alg = raw[2] << 8 | raw[3]
    if alg != SIG_ECDSA:
        value, offset = _tpm2b(raw, 4, MAX_TPM2B_PUBLIC_KEY_RSA, what)
        parts = [value]
    else:
        # The two TPM2Bs inline, as in read_quote_body (the per-quote path): each size
        # is bounded before its end is computed, and every end is checked against
        # len(raw).
        end = len(raw)
        if end < 6:
            raise _truncated(what)
        size = raw[4] << 8 | raw[5]
        if size > MAX_TPM2B_ECC_PARAMETER:
            raise ParseError(
                f"{what}: cannot unmarshal (size {size} exceeds {MAX_TPM2B_ECC_PARAMETER})"
            )
        offset = 6 + size
        if offset + 2 > end:
            # r is truncated, or complete with s's size truncated: _tpm2b would say
            # "truncated" for either.
            raise _truncated(what)
        r = raw[6:offset]
        size = raw[offset] << 8 | raw[offset + 1]
        if size > MAX_TPM2B_ECC_PARAMETER:
            raise ParseError(
                f"{what}: cannot unmarshal (size {size} exceeds {MAX_TPM2B_ECC_PARAMETER})"
            )
        start = offset + 2
        offset = start + size
        if offset > end:
            raise _truncated(what)
        parts = [r, raw[start:offset]]
    _no_trailing(raw, offset, what)
    return alg, hash_alg, parts
