"""Per-group documents that approved proposals replace whole: one row per host group.

Kinds and payloads (verifier.store.proposal_kinds checks and applies them)::

    boot_reference    {"group": g, "reference": {a weightgate.boot-reference document}}
    ima_policy        {"group": g, "policy": {an IMA runtime policy document}}
    gpu_policy        {"group": g, "policy": {an NVIDIA GPU policy document}}
    snp_policy        {"group": g, "policy": {an AMD SEV-SNP policy document}}
    tdx_policy        {"group": g, "policy": {an Intel TDX policy document}}

Each replaces the group's document, so its state (what a proposal was made
over, for the stale check) is the row in force, or None. The kinds, payload keys
and names are verifier.group_document_kinds'; here each gets its table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy.orm import Session

from verifier.group_document_kinds import (
    BOOT_REFERENCE,
    GPU_POLICY,
    GROUP_DOCUMENT_KINDS,
    IMA_POLICY,
    SNP_POLICY,
    TDX_POLICY,
)
from verifier.store._core import dialect_of
from verifier.store.models_trust import (
    BootReferenceRow,
    GpuPolicyRow,
    GroupDocumentRow,
    ImaPolicyRow,
    SnpPolicyRow,
    TdxPolicyRow,
)

__all__ = [
    "BOOT_REFERENCE",
    "DOCUMENT_KINDS",
    "GPU_POLICY",
    "IMA_POLICY",
    "SNP_POLICY",
    "TDX_POLICY",
    "DocumentKind",
    "document_state",
    "replace_document",
]


@dataclass(frozen=True, slots=True)
class DocumentKind:
    table: type[GroupDocumentRow]
    key: str  # the payload key holding the document
    name: str  # what the outcome line calls it


_TABLES: Mapping[str, type[GroupDocumentRow]] = {
    BOOT_REFERENCE: BootReferenceRow,
    IMA_POLICY: ImaPolicyRow,
    GPU_POLICY: GpuPolicyRow,
    SNP_POLICY: SnpPolicyRow,
    TDX_POLICY: TdxPolicyRow,
}
DOCUMENT_KINDS: Mapping[str, DocumentKind] = MappingProxyType(
    {
        kind: DocumentKind(_TABLES[kind], spec.key, spec.label)
        for kind, spec in GROUP_DOCUMENT_KINDS.items()
    }
)


def document_state(s: Session, kind: str, group: str) -> dict[str, Any] | None:
    """The group's document in force as a proposal's base state (None: none yet)."""
    spec = DOCUMENT_KINDS[kind]
    row = s.get(spec.table, group)
    if not isinstance(row, spec.table):
        return None
    return {"group": row.group, spec.key: row.document}


def replace_document(
    s: Session,
    kind: str,
    group: str,
    document: Mapping[str, Any],
    *,
    proposal_id: str,
    now: datetime,
) -> str:
    """Put ``document`` in force for ``group`` (checked by the caller); the outcome line."""
    spec = DOCUMENT_KINDS[kind]
    values = {"document": dict(document), "updated_at": now, "proposal_id": proposal_id}
    upsert = dialect_of(s).insert(spec.table).values(group=group, **values)
    s.execute(
        upsert.on_conflict_do_update(
            index_elements=[spec.table.group],
            set_={name: upsert.excluded[name] for name in values},
        )
    )
    return f"{spec.name} of group {group} replaced"
