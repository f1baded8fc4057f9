"""One host's attestation rounds: what each challenge asks for and how its answer is judged.

Per round, :meth:`RoundAppraiser.plan` reads the group's material once (PCR reference
values, IMA policy and progress, GPU, SEV-SNP and TDX policies),
:meth:`RoundAppraiser.challenge` mints the challenge that asks for exactly the
evidence that material needs, and
:meth:`RoundAppraiser.appraise` redeems the challenge and judges the evidence
(:func:`verifier.attestation.evaluate`), adding the binding-key certification when
one rides along. The stream plumbing lives in :mod:`.host_stream`.

Held per stream: the host's authenticated binding key, the parsed boot reference,
IMA, GPU, SNP and TDX policies (re-parsed only when an approved proposal changed them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from verifier.attestation import (
    BoundFindings,
    Outcome,
    QuoteBoundCheck,
    challenge_selection,
    evaluate,
)
from verifier.challenges import (
    ChallengeError,
    ChallengeRegistry,
    IssuedChallenge,
    binding_key_qualifying_data,
)
from verifier.config import VerifierConfig
from verifier.evidence.nvidia.host_round import GpuVerifier
from verifier.evidence.snp.host_round import SnpVerifier
from verifier.evidence.tdx.host_round import TdxVerifier
from verifier.evidence.tpm.boot_appraisal import reference_pcrs
from verifier.evidence.tpm.boot_reference import BootReference, BootReferenceError
from verifier.evidence.tpm.certify import (
    AuthenticatedBindingKey,
    authenticate_binding_key,
    binding_key_policy_digest,
)
from verifier.evidence.tpm.parse import parse_tpm2b_public
from verifier.server.group_documents import (
    BootReferences,
    GpuPlan,
    GpuPolicies,
    SnpPlan,
    SnpPolicies,
    TdxPlan,
    TdxPolicies,
)
from verifier.server.ima_rounds import ImaPlan, ImaRounds, with_ima_pcrs
from verifier.store import HostRecord, ReferenceSet, Store
from verifier.verdict import Reason, Verdict, VerificationError
from weightgate.v1 import attestation_pb2, common_pb2

__all__ = ["RoundAppraiser", "RoundPlan"]


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """What one round needs, read once before the challenge is issued."""

    reference: ReferenceSet | None
    ima: ImaPlan | None
    gpu: GpuPlan | None  # None: the group has no GPU policy
    snp: SnpPlan | None  # None: the group has no SEV-SNP policy
    tdx: TdxPlan | None  # None: the group has no TDX policy
    boot_reference: BootReference | None  # None: none, or unusable (boot_reference_error)
    boot_reference_error: str = ""


P = TypeVar("P")
E = TypeVar("E")
P_co = TypeVar("P_co", covariant=True)
P_contra = TypeVar("P_contra", contravariant=True)
E_contra = TypeVar("E_contra", contravariant=True)


class _Plan(Protocol[P_co]):
    """A group's policy for one kind of quote-bound evidence, or why it is unusable."""

    @property
    def policy(self) -> P_co | None: ...

    @property
    def error(self) -> str: ...


class _Verifier(Protocol[E_contra, P_contra]):
    def verify(
        self,
        evidence: E_contra | None,
        *,
        challenge_nonce: bytes,
        tpm_attest: bytes,
        policy: P_contra,
        at: datetime,
    ) -> BoundFindings: ...


def _failed(code: str, detail: str) -> Outcome:
    return Outcome(Verdict.contraindicated((Reason(code, detail),), ()), None, None)


class RoundAppraiser:
    def __init__(
        self,
        *,
        store: Store,
        challenges: ChallengeRegistry,
        config: VerifierConfig,
        now: Callable[[], datetime],
        gpu_verifier: GpuVerifier | None,
        snp_verifier: SnpVerifier | None,
        tdx_verifier: TdxVerifier | None,
    ) -> None:
        self._store = store
        self._challenges = challenges
        self._config = config
        self._now = now
        self._gpu_verifier = gpu_verifier
        self._snp_verifier = snp_verifier
        self._tdx_verifier = tdx_verifier
        self._ima = ImaRounds(store)
        self._boot_references = BootReferences(store)
        self._gpu_policies = GpuPolicies(store)
        self._snp_policies = SnpPolicies(store)
        self._tdx_policies = TdxPolicies(store)
        self.binding_key: AuthenticatedBindingKey | None = None

    def plan(self, host: HostRecord) -> RoundPlan:
        # Read once: the challenge asks for the PCRs it needs, appraise() holds to it.
        try:
            boot_reference, boot_error = self._boot_references.get(host.group), ""
        except BootReferenceError as exc:
            boot_reference, boot_error = None, str(exc)
        return RoundPlan(
            reference=self._store.get_reference(host.group),
            ima=self._ima.plan(host),
            gpu=self._gpu_policies.plan(host.group),
            snp=self._snp_policies.plan(host.group),
            tdx=self._tdx_policies.plan(host.group),
            boot_reference=boot_reference,
            boot_reference_error=boot_error,
        )

    def challenge(
        self, host: HostRecord, plan: RoundPlan
    ) -> tuple[IssuedChallenge, attestation_pb2.Challenge]:
        """A fresh challenge for ``host`` and the message that asks for its evidence."""
        selection = challenge_selection(self._config.pcr_selection, plan.reference)
        boot_reference = plan.boot_reference  # unusable: appraise() names it
        if boot_reference is not None:
            # Every PCR the reference's facts are read from, logged or not.
            for bank, pcrs in reference_pcrs(boot_reference).items():
                selection[bank] = tuple(sorted({*selection.get(bank, ()), *pcrs}))
        issued = self._challenges.issue(
            host.host_id,
            selection if plan.ima is None else with_ima_pcrs(selection),
            ttl_seconds=self._config.challenge_timeout_seconds,
        )
        message = attestation_pb2.Challenge(
            challenge_id=issued.challenge_id,
            nonce=issued.nonce,
            tpm=attestation_pb2.TpmQuoteRequest(
                qualifying_data=issued.tpm_qualifying_data,
                pcr_selection=[
                    common_pb2.PcrSelection(hash_algorithm=bank, pcrs=list(pcrs))
                    for bank, pcrs in issued.pcr_selection.items()
                ],
            ),
            expires_in_seconds=int(self._config.challenge_timeout_seconds),
            # Every round: a log that was verified once says nothing about a later
            # quote, and the `measured_boot_log` control reads the latest verdict.
            want_boot_log=True,
        )
        reference = plan.reference
        if reference is not None and self._binding_key_needed(reference):
            message.binding_key.CopyFrom(
                attestation_pb2.BindingKeyRequest(
                    qualifying_data=binding_key_qualifying_data(issued.nonce),
                    pcr_selection=[
                        common_pb2.PcrSelection(hash_algorithm=bank, pcrs=sorted(values))
                        for bank, values in sorted(reference.pcrs.items())
                    ],
                )
            )
        if plan.ima is not None:
            message.ima.SetInParent()  # present even when asking from entry 0
            message.ima.from_entry = plan.ima.from_entry
        # Asked even when a policy is unusable: the round then fails naming it.
        if plan.gpu is not None:
            message.gpu.SetInParent()
        if plan.snp is not None:
            message.snp.SetInParent()
        if plan.tdx is not None:
            message.tdx.SetInParent()
        return issued, message

    def _binding_key_needed(self, reference: ReferenceSet) -> bool:
        if self.binding_key is None:
            return True
        return self.binding_key.public.auth_policy != _expected_policy(reference)

    def appraise(
        self,
        host: HostRecord,
        challenge: IssuedChallenge,
        evidence: attestation_pb2.Evidence,
        plan: RoundPlan,
    ) -> Outcome:
        """Redeem the challenge the evidence names, then judge the evidence."""
        challenges = self._challenges
        try:
            redeemed = challenges.redeem(host.host_id, evidence.challenge_id)
        except ChallengeError as exc:
            challenges.discard(challenge.challenge_id)
            return Outcome(Verdict.contraindicated((exc.reason,), ()), None, None)
        if plan.boot_reference_error:
            return _failed(
                "tpm.boot.reference_invalid",
                f"stored document unusable: {plan.boot_reference_error}",
            )
        ima = plan.ima
        if ima is not None and ima.policy is None:
            return _failed("tpm.ima.reference_invalid", f"stored document unusable: {ima.error}")
        bound: list[QuoteBoundCheck] = []
        for check in (
            self._bound_check(
                plan.gpu,
                self._gpu_verifier,
                evidence.gpu if evidence.HasField("gpu") else None,
                redeemed,
                kind="nvidia",
                what="GPU",
            ),
            self._bound_check(
                plan.snp,
                self._snp_verifier,
                evidence.snp if evidence.HasField("snp") else None,
                redeemed,
                kind="snp",
                what="SEV-SNP",
            ),
            self._bound_check(
                plan.tdx,
                self._tdx_verifier,
                evidence.tdx if evidence.HasField("tdx") else None,
                redeemed,
                kind="tdx",
                what="TDX",
            ),
        ):
            if isinstance(check, Outcome):
                return check
            if check is not None:
                bound.append(check)
        outcome = evaluate(
            host=host,
            challenge=redeemed,
            evidence=evidence,
            reference=plan.reference,
            consumed_qualifying_data=challenges.consumed_qualifying_data(host.host_id),
            allow_sha1_signatures=self._config.allow_sha1_signatures,
            boot_reference=plan.boot_reference,
            ima_policy=None if ima is None else ima.policy,
            ima_kept=None if ima is None else ima.kept,
            bound_checks=bound,
        )
        if outcome.ima_kept is not None:
            self._ima.save(host.host_id, outcome.ima_kept, now=self._now())
        reference = plan.reference
        if not evidence.HasField("binding_key") or reference is None or host.ak_public is None:
            return outcome
        return self._with_binding_key(host, redeemed, evidence.binding_key, reference, outcome)

    def _bound_check(
        self,
        plan: _Plan[P] | None,
        verifier: _Verifier[E, P] | None,
        sent: E | None,
        challenge: IssuedChallenge,
        *,
        kind: str,
        what: str,
    ) -> QuoteBoundCheck | Outcome | None:
        """The check ``evaluate`` runs once the quote authenticated; None when the group
        has no such policy; the failed outcome when its policy cannot be met (unusable
        stored document, or no trust material in this verifier's config)."""
        if plan is None:
            return None
        if plan.policy is None:
            return _failed(f"{kind}.policy_invalid", f"stored {what} policy unusable: {plan.error}")
        if verifier is None:
            return _failed(
                f"{kind}.verifier_unconfigured",
                f"the group has a {what} policy but this verifier's config has no trust "
                f"material for it",
            )
        verify = functools.partial(
            verifier.verify,
            sent,
            challenge_nonce=challenge.nonce,
            policy=plan.policy,
            at=self._now(),
        )
        return lambda tpm_attest: verify(tpm_attest=tpm_attest)

    def _with_binding_key(
        self,
        host: HostRecord,
        challenge: IssuedChallenge,
        certification: attestation_pb2.BindingKeyCertification,
        reference: ReferenceSet,
        outcome: Outcome,
    ) -> Outcome:
        """A binding key rides along with the quote; a forged one taints the verdict."""
        assert host.ak_public is not None
        policy = _expected_policy(reference)
        try:
            key = authenticate_binding_key(
                attest=certification.attest,
                signature=certification.signature,
                ak=parse_tpm2b_public(host.ak_public),
                binding_public=certification.public,
                expected_qualifying_data=binding_key_qualifying_data(challenge.nonce),
                expected_policy_digest=policy,
            )
        except VerificationError as exc:
            reasons = (*outcome.verdict.reasons, exc.reason)
            checks = outcome.verdict.checks_run | exc.checks_run
            return Outcome(Verdict.contraindicated(reasons, checks), outcome.clock,
                           outcome.boot_event)  # fmt: skip
        self.binding_key = key
        self._store.set_binding_key(
            host.host_id,
            public=bytes(certification.public),
            policy_digest=policy,
            pcr_selection={bank: sorted(values) for bank, values in reference.pcrs.items()},
            now=self._now(),
        )
        checks = outcome.verdict.checks_run | key.checks_run
        verdict = outcome.verdict
        if verdict.affirms:
            verdict = Verdict.affirming(checks)
        return Outcome(verdict, outcome.clock, outcome.boot_event)


def _expected_policy(reference: ReferenceSet) -> bytes:
    return binding_key_policy_digest(
        selection={bank: sorted(values) for bank, values in reference.pcrs.items()},
        pcr_values=reference.pcrs,
    )
