"""Per-group documents that approved proposals replace whole: one row per host group.

Kinds and payloads (verifier.store.proposal_kinds checks and applies them)::

    boot_reference    {"group": g, "reference": {a weightgate.boot-reference document}}
    ima_policy        {"group": g, "policy": {an IMA runtime policy document}}
    gpu_policy        {"group": g, "policy": {an NVIDIA GPU policy document}}
    snp_policy        {"group": g, "policy": {an AMD SEV-SNP policy document}}
    tdx_policy        {"group": g, "policy": {an Intel TDX policy document}}

Each replaces the group's document, so its state (what a proposal was made
over, for the stale check) is the row in force, or None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy.orm import Session

from verifier.store._core import dialect_of
from verifier.store.models_trust import (
    BootReferenceRow,
    GpuPolicyRow,
    ImaPolicyRow,
    SnpPolicyRow,
    TdxPolicyRow,
)

BOOT_REFERENCE = "boot_reference"
IMA_POLICY = "ima_policy"
GPU_POLICY = "gpu_policy"
SNP_POLICY = "snp_policy"
TDX_POLICY = "tdx_policy"

_DocumentTable = (
    type[BootReferenceRow]
    | type[ImaPolicyRow]
    | type[GpuPolicyRow]
    | type[SnpPolicyRow]
    | type[TdxPolicyRow]
)


@dataclass(frozen=True, slots=True)
class DocumentKind:
    table: _DocumentTable
    key: str  # the payload key holding the document
    name: str  # what the outcome line calls it


DOCUMENT_KINDS: Mapping[str, DocumentKind] = MappingProxyType(
    {
        BOOT_REFERENCE: DocumentKind(BootReferenceRow, "reference", "measured-boot reference"),
        IMA_POLICY: DocumentKind(ImaPolicyRow, "policy", "IMA runtime policy"),
        GPU_POLICY: DocumentKind(GpuPolicyRow, "policy", "NVIDIA GPU policy"),
        SNP_POLICY: DocumentKind(SnpPolicyRow, "policy", "AMD SEV-SNP policy"),
        TDX_POLICY: DocumentKind(TdxPolicyRow, "policy", "Intel TDX policy"),
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
