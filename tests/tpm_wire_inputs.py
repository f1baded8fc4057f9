"""TPMS_ATTEST quotes and TPMT_SIGNATUREs for the parser comparisons: the real vectors,
deterministic mutations, and hypothesis strategies that generate every field at and
around its bound (tests/unit/test_tpm_wire.py, tests/unit/test_quote_native.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

from tests import vectors


def tpm_vectors(kind: str) -> list[bytes]:
    """Every distinct ``*.attest`` (kind "attest") or ``*.sig`` file of the TPM vectors."""
    vectors.vectors_dir("tpm")  # skips when the vectors are absent
    pattern = "*.attest" if kind == "attest" else "*.sig"
    return sorted(
        {path.read_bytes() for path in (vectors.testvectors_root() / "tpm").rglob(pattern)}
    )


def quote_vectors() -> list[bytes]:
    """The attest vectors that are quotes (TPM_ST_ATTEST_QUOTE)."""
    return [v for v in tpm_vectors("attest") if v[4:6] == b"\x80\x18"]


def mutations(raw: bytes) -> Iterator[bytes]:
    """Every truncation, five overwrites of every byte, and three tails."""
    for n in range(len(raw)):
        yield raw[:n]
    for offset in range(len(raw)):
        for value in (raw[offset] ^ 0x01, raw[offset] ^ 0x80, 0x00, 0xFF, raw[offset] + 1 & 0xFF):
            yield raw[:offset] + bytes([value]) + raw[offset + 1 :]
    for tail in (b"\x00", b"\xff" * 3, raw):
        yield raw + tail


# The TSS buffer sizes, written out rather than taken from ``wire`` so that a wrong
# bound there is generated at, around and past, and caught.
_NAME, _DATA, _DIGEST, _RSA, _ECC = 68, 64, 64, 512, 128


def rarely(draw: st.DrawFn, usual: object, unusual: list[object]) -> Any:
    """``usual`` most of the time, else one of ``unusual``: generated inputs must be
    mostly valid, or a reader that is wrong about one field would only ever be
    compared on inputs that both parsers refuse for another reason."""
    return draw(st.sampled_from([usual] * 12 + unusual))


def tpm2b_field(draw: st.DrawFn, limit: int) -> bytes:
    size = draw(
        st.sampled_from([0, 1, limit - 1, limit, limit - 2, limit + 1]) | st.integers(0, limit)
    )
    body = draw(st.binary(min_size=size, max_size=size))
    # Sometimes the size field lies about what follows.
    declared = rarely(draw, size, [size + 1, max(0, size - 1), 0xFFFF])
    return int(declared).to_bytes(2, "big") + body


_VALID_HASHES = [0x0004, 0x000B, 0x000C, 0x000D]
_OTHER_HASHES = [0x0012, 0x0000, 0x0010, 0xFFFF]


@st.composite
def quotes(draw: st.DrawFn) -> bytes:
    magic = rarely(draw, 0xFF544347, [0xFF544346])
    st_type = rarely(draw, 0x8018, [0x8017, 0x0000])
    head = magic.to_bytes(4, "big") + st_type.to_bytes(2, "big")
    head += tpm2b_field(draw, _NAME) + tpm2b_field(draw, _DATA)
    head += draw(st.binary(min_size=16, max_size=16))  # clock, resetCount, restartCount
    head += bytes([rarely(draw, draw(st.sampled_from([0, 1])), [2, 0xFF])])  # safe
    head += draw(st.binary(min_size=8, max_size=8))  # firmwareVersion
    banks = draw(st.permutations(_VALID_HASHES))
    # TPM2_NUM_PCR_BANKS is 16: past 4 banks, some repeat (refused after framing).
    count = rarely(draw, draw(st.integers(0, 4)), [15, 16, 17, draw(st.integers(5, 20))])
    declared = rarely(draw, count, [count + 1, max(0, count - 1), 0xFFFFFFFF])
    body = int(declared).to_bytes(4, "big")
    for i in range(count):
        alg = banks[i] if i < len(banks) else draw(st.sampled_from(_VALID_HASHES))
        body += rarely(draw, alg, _OTHER_HASHES).to_bytes(2, "big")
        size = rarely(draw, draw(st.integers(0, 4)), [5, 6, 255])  # PCR_SELECT_MAX is 4
        body += bytes([size]) + draw(st.binary(min_size=size, max_size=size))
    body += tpm2b_field(draw, _DIGEST)
    body += rarely(draw, b"", [b"\x00", b"\x00\x00"])
    return head + body


@st.composite
def signatures(draw: st.DrawFn) -> bytes:
    alg = rarely(draw, draw(st.sampled_from([0x0014, 0x0016, 0x0018])), [0x0005, 0x0010, 0x001B])
    hash_alg = rarely(draw, draw(st.sampled_from(_VALID_HASHES)), _OTHER_HASHES)
    out = alg.to_bytes(2, "big") + hash_alg.to_bytes(2, "big")
    if alg in (0x0014, 0x0016):
        out += tpm2b_field(draw, _RSA)
    else:
        out += tpm2b_field(draw, _ECC)
        out += tpm2b_field(draw, _ECC)
    out += rarely(draw, b"", [b"\x00", b"\x00\x00"])
    return out[: rarely(draw, len(out), [len(out) - 1, 3, 1])]
