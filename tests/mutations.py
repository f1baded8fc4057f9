"""Mutations of real inputs for the parsers' fuzz smoke tests (hypothesis, no atheris)."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st


def apply_edits(seed: bytes, edits: Sequence[tuple[int, int, bytes]]) -> bytes:
    """Apply (kind, offset, chunk) edits in order: 0 overwrite, 1 insert, 2 delete."""
    data = bytearray(seed)
    for kind, offset, chunk in edits:
        if kind == 0:
            data[offset : offset + len(chunk)] = chunk
        elif kind == 1:
            data[offset:offset] = chunk
        else:
            del data[offset : offset + len(chunk) + 1]
    return bytes(data)


def edited_seed(
    data: st.DataObject,
    seeds: Sequence[bytes],
    *,
    first_offset: int = 1,
    chunks: st.SearchStrategy[bytes] | None = None,
) -> bytes:
    """A seed drawn from ``seeds`` with up to four edits at offsets >= ``first_offset``
    (1 keeps a leading parser-selector byte intact)."""
    seed = data.draw(st.sampled_from(list(seeds)))
    edits = data.draw(
        st.lists(
            st.tuples(
                st.integers(0, 2),
                st.integers(first_offset, max(first_offset, len(seed) - 1)),
                chunks if chunks is not None else st.binary(max_size=8),
            ),
            max_size=4,
        )
    )
    return apply_edits(seed, edits)
