"""A group's boot reference and GPU/SNP/TDX policies, read each round, parsed on change.

Both are JSON documents set by approved proposals. Each round reads the group's
record (cheap: one row) so that an approved change applies from the next round,
but the document is validated and parsed again only when the record changed
(another group, or a newer ``updated_at``): the per-round cost of a large boot
reference or policy is then one lookup. A stored document that no longer loads
is reported every round as that group's failure, never skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from verifier.evidence.nvidia.gpu_policy import GpuPolicy, PolicyError, load_policy
from verifier.evidence.snp.policy import PolicyError as SnpPolicyError
from verifier.evidence.snp.policy import SnpPolicy
from verifier.evidence.snp.policy import load_policy as load_snp_policy
from verifier.evidence.tdx.policy import PolicyError as TdxPolicyError
from verifier.evidence.tdx.policy import TdxPolicy
from verifier.evidence.tdx.policy import load_policy as load_tdx_policy
from verifier.evidence.tpm.boot_reference import (
    BootReference,
    load_boot_reference,
)
from verifier.store import Store

__all__ = [
    "BootReferences",
    "GpuPlan",
    "GpuPolicies",
    "SnpPlan",
    "SnpPolicies",
    "TdxPlan",
    "TdxPolicies",
]

T = TypeVar("T")


class _GroupRecord(Protocol):
    @property
    def document(self) -> Mapping[str, Any]: ...

    @property
    def updated_at(self) -> datetime: ...


class _ParsedPerGroup(Generic[T]):
    """The last parsed document, kept while the group's record is unchanged."""

    def __init__(
        self,
        fetch: Callable[[str], _GroupRecord | None],
        parse: Callable[[Mapping[str, Any]], T],
    ) -> None:
        self._fetch, self._parse = fetch, parse
        self._cached: tuple[str, datetime, T] | None = None

    def get(self, group: str) -> T | None:
        """The group's parsed document, None if it has none; the parser's error if unusable."""
        record = self._fetch(group)
        if record is None:
            return None
        if self._cached is not None and self._cached[:2] == (group, record.updated_at):
            return self._cached[2]
        parsed = self._parse(record.document)
        self._cached = (group, record.updated_at, parsed)
        return parsed


class BootReferences:
    """The group's measured-boot reference; BootReferenceError if the stored one is unusable."""

    def __init__(self, store: Store) -> None:
        self._documents = _ParsedPerGroup(store.get_boot_reference, load_boot_reference)

    def get(self, group: str) -> BootReference | None:
        return self._documents.get(group)


@dataclass(frozen=True, slots=True)
class GpuPlan:
    """One round's GPU policy, or (policy None) why the stored one cannot be used."""

    policy: GpuPolicy | None
    error: str


class GpuPolicies:
    def __init__(self, store: Store) -> None:
        self._documents = _ParsedPerGroup(
            store.get_gpu_policy, lambda document: load_policy(json.dumps(document))
        )

    def plan(self, group: str) -> GpuPlan | None:
        """None when the group has no GPU policy (GPU evidence is then not asked for)."""
        try:
            policy = self._documents.get(group)
        except PolicyError as exc:
            return GpuPlan(None, str(exc))
        return None if policy is None else GpuPlan(policy, "")


@dataclass(frozen=True, slots=True)
class SnpPlan:
    """One round's SEV-SNP policy, or (policy None) why the stored one cannot be used."""

    policy: SnpPolicy | None
    error: str


class SnpPolicies:
    def __init__(self, store: Store) -> None:
        self._documents = _ParsedPerGroup(
            store.get_snp_policy, lambda document: load_snp_policy(json.dumps(document))
        )

    def plan(self, group: str) -> SnpPlan | None:
        """None when the group has no SNP policy (no SNP report is then asked for)."""
        try:
            policy = self._documents.get(group)
        except SnpPolicyError as exc:
            return SnpPlan(None, str(exc))
        return None if policy is None else SnpPlan(policy, "")


@dataclass(frozen=True, slots=True)
class TdxPlan:
    """One round's TDX policy, or (policy None) why the stored one cannot be used."""

    policy: TdxPolicy | None
    error: str


class TdxPolicies:
    def __init__(self, store: Store) -> None:
        self._documents = _ParsedPerGroup(
            store.get_tdx_policy, lambda document: load_tdx_policy(json.dumps(document))
        )

    def plan(self, group: str) -> TdxPlan | None:
        """None when the group has no TDX policy (no TDX quote is then asked for)."""
        try:
            policy = self._documents.get(group)
        except TdxPolicyError as exc:
            return TdxPlan(None, str(exc))
        return None if policy is None else TdxPlan(policy, "")
