"""PCRs through ESAPI: bank names, selections, consistent reads, the quoted digest.

:func:`read_pcrs_once` reads a selection in as many TPM2_PCR_Read calls as it takes
(at most 8 digests each) and gives up (None) if the PCR update counter moved in
between, so that the values it returns are one state of the TPM; the quote compares
:func:`pcr_digest` of them with the digest the quote signed (:func:`quoted_digest`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from tpm2_pytss import TPM2_ALG, TPML_PCR_SELECTION, TPMS_ATTEST, TPMS_PCR_SELECTION

from agent.collectors.tpm_handles import TpmError

__all__ = [
    "BANKS",
    "MAX_PCR",
    "normalize_selection",
    "pcr_digest",
    "pcr_selection_list",
    "quoted_digest",
    "read_pcrs_once",
]

MAX_PCR = 23  # PC Client platforms implement PCRs 0..23
_TPM_ST_ATTEST_QUOTE = 0x8018

BANKS: Mapping[str, int] = {
    "sha1": TPM2_ALG.SHA1,
    "sha256": TPM2_ALG.SHA256,
    "sha384": TPM2_ALG.SHA384,
    "sha512": TPM2_ALG.SHA512,
    "sm3_256": TPM2_ALG.SM3_256,
}
_BANK_NAMES = {int(alg): name for name, alg in BANKS.items()}


def normalize_selection(selection: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    wanted: dict[str, list[int]] = {}
    for bank, indices in selection.items():
        if bank not in BANKS:
            raise TpmError(f"unknown PCR bank {bank!r} (known: {', '.join(BANKS)})")
        for index in indices:
            if not 0 <= index <= MAX_PCR:
                raise TpmError(f"PCR index {index} out of range 0..{MAX_PCR}")
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


def read_pcrs_once(
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


def pcr_digest(values: Mapping[str, Mapping[int, bytes]]) -> bytes:
    # The AK signs with SHA-256, so the quote's pcrDigest is SHA-256 over the values
    # concatenated in selection order: banks as selected, indices ascending.
    h = hashlib.sha256()
    for bank_values in values.values():
        for index in sorted(bank_values):
            h.update(bank_values[index])
    return h.digest()


def quoted_digest(attest: bytes) -> bytes:
    parsed, used = TPMS_ATTEST.unmarshal(attest)
    if used != len(attest) or parsed.type != _TPM_ST_ATTEST_QUOTE:
        raise TpmError("TPM2_Quote returned something other than a quote")
    return bytes(parsed.attested.quote.pcrDigest)
