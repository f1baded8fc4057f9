# Types of the C module native_quote/quote.c; callers use quote_native.py.
MAX_ATTEST_SIZE: int
MAX_SIGNATURE_SIZE: int

def quote(
    attest: bytes, signature: bytes, /
) -> tuple[tuple[bytes, bytes, int, int, int, int, int, bytes, bytes], int, int, bytes] | None: ...
