# Types of the C module native_quote/quote.c; callers use quote_native.py.
from collections.abc import Callable

from verifier.evidence.tpm.parse_attest import ClockInfo, PcrSelection, QuoteInfo
from verifier.evidence.tpm.parse_signatures import TpmSignature

MAX_ATTEST_SIZE: int
MAX_SIGNATURE_SIZE: int
MAX_TPM2B_NAME: int
MAX_TPM2B_DATA: int
MAX_TPM2B_DIGEST: int
MAX_TPM2B_PUBLIC_KEY_RSA: int
MAX_TPM2B_ECC_PARAMETER: int
NUM_PCR_BANKS: int
PCR_SELECT_MAX: int
HASH_ALGS: tuple[int, ...]

def configure(
    quote_info: type[QuoteInfo],
    clock_info: type[ClockInfo],
    signature: type[TpmSignature],
    pcr_selection: Callable[[bytes], tuple[PcrSelection, ...]],
    parse_error: type[Exception],
    /,
) -> None: ...
def quote(attest: bytes, signature: bytes, /) -> tuple[QuoteInfo, TpmSignature] | None: ...
