"""JSON objects whose members are all different.

``json.loads`` keeps the last of two values for one member; a reader that keeps
the first would see another document. Inputs where that matters (evidence, PCR
values) are parsed with :func:`unique_members` as ``object_pairs_hook``.
"""

from __future__ import annotations

from typing import Any

from verifier.evidence.errors import ParseError

__all__ = ["unique_members"]


def unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The object of ``pairs``; ParseError (a ValueError) naming a repeated member."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ParseError(f"duplicate JSON member {key!r}")
        document[key] = value
    return document
