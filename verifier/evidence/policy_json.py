"""What every JSON policy format (GPU, SEV-SNP, TDX) checks before its own keys.

Each format keeps its own error type, key set, size bound and version number; the
loader here bounds the size, parses (a nesting bomb is "not JSON", not a crash),
requires an object, refuses unknown keys (a typo must not silently drop a rule) and
checks the version, with the same messages for every format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["optional_bool", "policy_document"]


def policy_document(
    data: bytes | str,
    keys: frozenset[str],
    version: int,
    max_bytes: int,
    error: type[ValueError],
) -> dict[str, Any]:
    """The policy's top-level object: at most ``max_bytes``, its keys among ``keys``,
    its ``"version"`` equal to ``version``; ``error(message)`` is raised otherwise."""
    if len(data) > max_bytes:
        raise error("policy file is too large")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise error("policy is not JSON") from exc
    if not isinstance(doc, dict):
        raise error("policy must be a JSON object")
    unknown = doc.keys() - keys
    if unknown:
        raise error(f"unknown policy keys: {sorted(unknown)}")
    if doc.get("version") != version:
        raise error(f"policy version must be {version}")
    return doc


def optional_bool(doc: Mapping[str, object], key: str, error: type[ValueError]) -> bool:
    """``doc[key]``, false when absent; anything but true or false is refused."""
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise error(f"{key} must be true or false")
    return value
