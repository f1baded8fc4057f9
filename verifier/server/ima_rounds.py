"""IMA on the attestation stream: the group's runtime policy and each host's progress.

A group with an IMA runtime policy (set by approved proposal) gets, every round:
PCRs 0-10 of each quoted bank in the challenge (PCR10 for the list, 0-9 for its
boot_aggregate), an ImaRequest from the entry the verifier has appraised up to in
this boot, and the check of verifier.evidence.tpm.ima_round. Progress lives in
the store, so a verifier restart does not force full lists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from verifier.evidence.tpm.ima_policy import RuntimePolicy, load_runtime_policy
from verifier.evidence.tpm.ima_round import IMA_PCR, ImaKept
from verifier.store import HostRecord, Store

_ROUND_PCRS = range(IMA_PCR + 1)


class ImaRounds:
    """Per stream: the parsed policy (re-parsed only when it changes) and progress."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cached: tuple[str, datetime, RuntimePolicy] | None = None

    def policy(self, group: str) -> RuntimePolicy | None:
        """The group's policy; RuntimePolicyError if the stored document is unusable."""
        record = self._store.get_ima_policy(group)
        if record is None:
            return None
        if self._cached is not None and self._cached[:2] == (group, record.updated_at):
            return self._cached[2]
        policy = load_runtime_policy(json.dumps(record.document))
        self._cached = (group, record.updated_at, policy)
        return policy

    def kept(self, host: HostRecord) -> ImaKept | None:
        progress = self._store.ima_progress(host.host_id)
        if progress is None:
            return None
        pcrs = {bank: bytes.fromhex(value) for bank, value in progress.pcrs.items()}
        return ImaKept(progress.reset_count, progress.entry_count, pcrs)

    def from_entry(self, host: HostRecord) -> int:
        """Where the agent's chunk should start: 0 unless progress is of this boot."""
        kept = self.kept(host)
        if kept is None or host.last_clock is None:
            return 0
        return kept.entry_count if kept.reset_count == host.last_clock.reset_count else 0

    def save(self, host_id: str, kept: ImaKept, *, now: datetime) -> None:
        self._store.save_ima_progress(
            host_id,
            reset_count=kept.reset_count,
            entry_count=kept.entry_count,
            pcrs=kept.pcrs,
            now=now,
        )


def with_ima_pcrs(selection: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The challenge selection plus PCRs 0-10 in every bank."""
    return {bank: tuple(sorted(set(pcrs) | set(_ROUND_PCRS))) for bank, pcrs in selection.items()}
