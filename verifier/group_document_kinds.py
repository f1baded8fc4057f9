"""One description per per-group document kind: a host group's measured-boot reference
and its IMA runtime, NVIDIA GPU, AMD SEV-SNP and Intel TDX policies.

Each is a JSON document that approved proposals replace whole, one per host group.
The proposal's kind is also the ``ProposedChange`` oneof field carrying it, the
payload key holding the document is ``key``, and ``label`` names it wherever a
person reads about it (proposal targets, outcome lines, NOT_FOUND, ``reference
show-*``). The change validation (verifier.server.proposal_changes), the store
(verifier.store.document_kinds), the read RPCs (verifier.server.operator_policy_rpcs)
and the CLI (verifier.policy_cli) are driven from :data:`GROUP_DOCUMENT_KINDS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass
from types import MappingProxyType
from typing import Any

from verifier.evidence.nvidia import gpu_policy
from verifier.evidence.snp import policy as snp_policy
from verifier.evidence.tdx import policy as tdx_policy
from verifier.evidence.tpm.boot_reference_format import BootReferenceError, load_boot_reference
from verifier.evidence.tpm.ima_policy import RuntimePolicyError, load_runtime_policy
from weightgate.v1 import operator_pb2

BOOT_REFERENCE = "boot_reference"
IMA_POLICY = "ima_policy"
GPU_POLICY = "gpu_policy"
SNP_POLICY = "snp_policy"
TDX_POLICY = "tdx_policy"

REFERENCE_LIMIT = 1024 * 1024
POLICY_LIMIT = 64 * 1024 * 1024  # a runtime policy lists every file a host may run


class DocumentError(ValueError):
    """The document is not one its kind's loader accepts; the message says why."""


@dataclass(frozen=True, slots=True)
class GroupDocumentKind:
    kind: str  # the proposal kind, the store's, and the ProposedChange oneof field
    label: str  # "NVIDIA GPU policy"
    _: KW_ONLY
    limit: int  # the most bytes a proposed document may have
    check: Callable[[bytes], dict[str, Any]]  # the document, once accepted (DocumentError)
    command: str  # the CLI's `reference show-<command>` (and `propose-<command>`)
    read_rpc: str | None  # the Operator RPC returning it as a GroupPolicy, if any
    key: str = "policy"  # the payload key holding the document
    json_field: str = "policy_json"  # the change message's field holding its bytes

    def target(self, group: str) -> str:
        """What a proposal of this kind changes, and what the outcome line names."""
        return f"{self.label} of group {group}"

    def not_found(self, group: str) -> str:
        return f"no {self.label} for group {group!r}"


def _loaded(load: Callable[[bytes], object], error: type[Exception]) -> Callable[[bytes], Any]:
    """A check by ``load``, which refuses what appraisal could not enforce as written
    (unknown keys, a policy that allows nothing, ...), so what is stored is exactly
    what appraisal will enforce."""

    def check(data: bytes) -> Any:
        try:
            load(data)
        except error as exc:
            raise DocumentError(str(exc)) from None
        return json.loads(data)

    return check


def _boot_reference(data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DocumentError(f"not JSON: {exc}") from None
    except RecursionError:
        # A nesting bomb: no reference nests deeper than a few levels.
        raise DocumentError("not JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise DocumentError("expected a JSON object")
    try:
        load_boot_reference(document)
    except BootReferenceError as exc:
        raise DocumentError(str(exc)) from None
    return document


_KINDS = (
    GroupDocumentKind(
        BOOT_REFERENCE, "measured-boot reference", key="reference", json_field="reference_json",
        limit=REFERENCE_LIMIT, check=_boot_reference, command="boot", read_rpc=None,
    ),
    GroupDocumentKind(
        IMA_POLICY, "IMA runtime policy", limit=POLICY_LIMIT,
        check=_loaded(load_runtime_policy, RuntimePolicyError),
        command="ima", read_rpc="GetImaPolicy",
    ),
    GroupDocumentKind(
        GPU_POLICY, "NVIDIA GPU policy", limit=gpu_policy.MAX_POLICY_BYTES,
        check=_loaded(gpu_policy.load_policy, gpu_policy.PolicyError),
        command="gpu", read_rpc="GetGpuPolicy",
    ),
    GroupDocumentKind(
        SNP_POLICY, "AMD SEV-SNP policy", limit=snp_policy.MAX_POLICY_BYTES,
        check=_loaded(snp_policy.load_policy, snp_policy.PolicyError),
        command="snp", read_rpc="GetSnpPolicy",
    ),
    GroupDocumentKind(
        TDX_POLICY, "Intel TDX policy", limit=tdx_policy.MAX_POLICY_BYTES,
        check=_loaded(tdx_policy.load_policy, tdx_policy.PolicyError),
        command="tdx", read_rpc="GetTdxPolicy",
    ),
)  # fmt: skip
GROUP_DOCUMENT_KINDS: Mapping[str, GroupDocumentKind] = MappingProxyType(
    {spec.kind: spec for spec in _KINDS}
)


def document_change(kind: str, group: str, data: bytes) -> operator_pb2.ProposedChange:
    """The ProposedChange setting ``group``'s document of ``kind`` to ``data``."""
    spec = GROUP_DOCUMENT_KINDS[kind]
    change = operator_pb2.ProposedChange()
    message = getattr(change, spec.kind)
    message.SetInParent()
    message.group = group
    setattr(message, spec.json_field, data)
    return change


def document_fields(change: operator_pb2.ProposedChange, kind: str) -> tuple[str, bytes]:
    """The group and document bytes of a ProposedChange of ``kind``."""
    message = getattr(change, kind)
    return str(message.group), bytes(getattr(message, GROUP_DOCUMENT_KINDS[kind].json_field))
