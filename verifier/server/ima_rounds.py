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
from dataclasses import dataclass
from datetime import datetime

from verifier.evidence.tpm.ima_policy import (
    RuntimePolicy,
    RuntimePolicyError,
    load_runtime_policy,
)
from verifier.evidence.tpm.ima_round import IMA_PCR, ImaKept
from verifier.store import HostRecord, Store

_ROUND_PCRS = range(IMA_PCR + 1)


@dataclass(frozen=True, slots=True)
class ImaPlan:
    """One round's IMA inputs: the policy (None if the stored one is unusable, ``error``
    says why), the progress kept from earlier rounds, and where the chunk starts."""

    policy: RuntimePolicy | None
    error: str
    kept: ImaKept | None
    from_entry: int


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

    def plan(self, host: HostRecord) -> ImaPlan | None:
        """What this round asks and checks, read once; None when the group has no policy.

        An unusable stored policy still asks for the list (from entry 0): the round
        then fails with the policy's reason instead of silently skipping IMA."""
        try:
            policy = self.policy(host.group)
        except RuntimePolicyError as exc:
            return ImaPlan(None, str(exc), None, 0)
        if policy is None:
            return None
        kept = self._kept(host.host_id)
        same_boot = (
            kept is not None
            and host.last_clock is not None
            and kept.reset_count == host.last_clock.reset_count
        )
        if not same_boot:
            # Asked for the whole list: a chunk from anywhere else is out of order,
            # not the one round after a reboot that the verifier could not foresee.
            return ImaPlan(policy, "", None, 0)
        return ImaPlan(policy, "", kept, kept.entry_count if kept else 0)

    def _kept(self, host_id: str) -> ImaKept | None:
        progress = self._store.ima_progress(host_id)
        if progress is None:
            return None
        pcrs = {bank: bytes.fromhex(value) for bank, value in progress.pcrs.items()}
        return ImaKept(progress.reset_count, progress.entry_count, pcrs)

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
