"""Who may call what: one table from every RPC to the roles allowed, deny by default.

A method missing from :data:`ALLOWED_ROLES` is refused to everyone (a test walks
the proto descriptors so that a new RPC cannot ship unmapped). Agents and
people are kept apart: agent methods admit only the agent role and operator
methods never admit it, and an agent may act only for the host its
certificate names.

The check runs inside each handler, not in a server interceptor: an
interceptor sees the method name but not the TLS peer's certificate.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn, Protocol

import grpc

from verifier.identity import Identity, IdentityError, RevocationCheck, Role, identity_of
from verifier.revocation import RevocationError
from weightgate.v1 import attestation_pb2, enrollment_pb2, operator_pb2, weights_pb2

log = logging.getLogger(__name__)

ServicerContext = grpc.aio.ServicerContext[Any, Any]


def _service(module: Any, name: str) -> str:
    full_name: str = module.DESCRIPTOR.services_by_name[name].full_name
    return full_name


OPERATOR = _service(operator_pb2, "Operator")
ENROLLMENT = _service(enrollment_pb2, "Enrollment")
ATTESTATION = _service(attestation_pb2, "Attestation")
WEIGHTS = _service(weights_pb2, "Weights")


def method_name(service: str, method: str) -> str:
    """The gRPC full method name, e.g. "/weightgate.v1.Operator/ListHosts"."""
    return f"/{service}/{method}"


_READERS = frozenset({Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.SECURITY_ADMIN, Role.AUDITOR})
# Who may start a change. What changes trust is only ever proposed; it takes
# effect once approvers (below) other than the proposer reach the quorum.
_CHANGERS = frozenset({Role.OPERATOR, Role.SECURITY_ADMIN})
_APPROVERS = frozenset({Role.APPROVER, Role.SECURITY_ADMIN})
_AUDIT_READERS = frozenset({Role.AUDITOR, Role.SECURITY_ADMIN})
_AGENTS = frozenset({Role.AGENT})

ALLOWED_ROLES: Mapping[str, frozenset[Role]] = MappingProxyType(
    {
        # Read-only operator RPCs.
        method_name(OPERATOR, "ListHosts"): _READERS,
        method_name(OPERATOR, "GetHost"): _READERS,
        method_name(OPERATOR, "WatchHosts"): _READERS,
        method_name(OPERATOR, "GetReferenceValues"): _READERS,
        method_name(OPERATOR, "GetBootReference"): _READERS,
        method_name(OPERATOR, "GetImaPolicy"): _READERS,
        method_name(OPERATOR, "GetGpuPolicy"): _READERS,
        method_name(OPERATOR, "GetSnpPolicy"): _READERS,
        method_name(OPERATOR, "GetTdxPolicy"): _READERS,
        method_name(OPERATOR, "ListModelVersions"): _READERS,
        method_name(OPERATOR, "GetModelVersion"): _READERS,
        method_name(OPERATOR, "ListReleases"): _READERS,
        method_name(OPERATOR, "ListSites"): _READERS,
        method_name(OPERATOR, "ListReviews"): _READERS,
        method_name(OPERATOR, "ListTrustAnchors"): _READERS,
        method_name(OPERATOR, "ListProposals"): _READERS,
        method_name(OPERATOR, "GetProposal"): _READERS,
        # The audit log names who did what: auditors and security admins only.
        method_name(OPERATOR, "ListAuditRecords"): _AUDIT_READERS,
        method_name(OPERATOR, "ListAuditCheckpoints"): _AUDIT_READERS,
        method_name(OPERATOR, "SignAuditCheckpoint"): _AUDIT_READERS,
        # Changes that do not widen trust take effect at once: registering a host
        # (it is trusted only after enrollment and attestation), adding a model
        # version (released only under an approved review), quarantine (it only
        # withdraws trust, and must be quick).
        method_name(OPERATOR, "RegisterHost"): _CHANGERS,
        method_name(OPERATOR, "AddModelVersion"): _CHANGERS,
        method_name(OPERATOR, "QuarantineHost"): _CHANGERS,
        # The two-person rule. Separation of duties (an approver is never the
        # proposer) is enforced per proposal by the store; a proposer may also
        # withdraw (reject) their own proposal, which the handler checks.
        method_name(OPERATOR, "ProposeChange"): _CHANGERS,
        method_name(OPERATOR, "ApproveProposal"): _APPROVERS,
        method_name(OPERATOR, "RejectProposal"): _APPROVERS | _CHANGERS,
        # Agent methods: the agent role only, and only for the agent's own host
        # (checked against the request by the handler, see authorize_host).
        method_name(ENROLLMENT, "BeginEnrollment"): _AGENTS,
        method_name(ENROLLMENT, "CompleteEnrollment"): _AGENTS,
        method_name(ATTESTATION, "Attest"): _AGENTS,
        # Ciphertext is useless without keys released to the host's TPM, so any
        # agent may fetch any model version's ciphertext; people may not.
        method_name(WEIGHTS, "FetchCiphertext"): _AGENTS,
    }
)


class AuthorizationError(Exception):
    """A refused call; the message starts with a stable code (``authz.denied``...)."""


def authorize(identity: Identity, method: str) -> None:
    """Raise unless one of the identity's roles is allowed to call ``method``."""
    allowed = ALLOWED_ROLES.get(method, frozenset())
    if not identity.roles & allowed:
        raise AuthorizationError(f"authz.denied: {identity} may not call {method}")


def authorize_host(identity: Identity, method: str, host_id: str) -> None:
    """Raise unless the identity may act as ``host_id`` (its certificate names that host)."""
    if not identity.acts_as_host(host_id):
        raise AuthorizationError(
            f"authz.host_mismatch: {identity} may not call {method} for host {host_id!r}"
        )


class RefusalAudit(Protocol):
    """Where refusals of agent-side RPCs are recorded (the audit log)."""

    async def append(
        self,
        context: ServicerContext,
        *,
        action: str,
        target: Mapping[str, str],
        outcome: str,
        details: Mapping[str, str],
    ) -> Any: ...


class Authorizer:
    """Reads the caller's identity and enforces the table; shared by all servicers.

    Operator refusals are audited by the ``@audited`` wrapper the handler runs in;
    refusals of agent-side RPCs (enrollment, attestation, weights) are audited here.
    With ``revocations`` (the client CRL), :meth:`require` also refuses revoked
    certificates, and every call while the CRL is unusable (verifier.revocation).
    """

    def __init__(
        self,
        *,
        insecure: bool,
        audit: RefusalAudit | None = None,
        revocations: RevocationCheck | None = None,
    ) -> None:
        self._insecure = insecure
        self._audit = audit
        self._revocations = revocations

    def identity(self, context: ServicerContext) -> Identity:
        """Who is calling, for a handler that :meth:`require` has already admitted."""
        return identity_of(context, insecure=self._insecure)

    async def require(self, context: ServicerContext, method: str) -> Identity:
        """The caller's identity if it may call ``method``; else abort PERMISSION_DENIED."""
        try:
            identity = identity_of(context, insecure=self._insecure, revocation=self._revocations)
        except IdentityError as exc:
            await self._deny(context, f"authz.bad_identity: {exc}", method)
        except RevocationError as exc:
            await self._deny(context, str(exc), method)
        try:
            authorize(identity, method)
        except AuthorizationError as exc:
            await self._deny(context, str(exc), method)
        return identity

    async def still_admitted(self, context: ServicerContext, method: str) -> str | None:
        """For a long-lived stream that :meth:`require` admitted: None while the caller's
        certificate is still good, else the (audited) reason to end the stream now."""
        if self._revocations is None:
            return None
        try:
            identity_of(context, insecure=self._insecure, revocation=self._revocations)
        except (IdentityError, RevocationError) as exc:
            reason = str(exc)
            # The stream's opening was audited already; its ending needs its own record.
            await self._record_refusal(context, reason, method, audit=True)
            return reason
        return None

    async def require_host(
        self, context: ServicerContext, identity: Identity, method: str, host_id: str
    ) -> None:
        """Abort PERMISSION_DENIED unless ``identity`` is the agent of ``host_id``."""
        try:
            authorize_host(identity, method, host_id)
        except AuthorizationError as exc:
            await self._deny(context, str(exc), method)

    async def _deny(self, context: ServicerContext, reason: str, method: str) -> NoReturn:
        await self._record_refusal(
            context, reason, method, audit=not method.startswith(f"/{OPERATOR}/")
        )
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)

    async def _record_refusal(
        self, context: ServicerContext, reason: str, method: str, *, audit: bool
    ) -> None:
        log.warning("refused %s from peer=%s: %s", method, context.peer(), reason)
        if self._audit is not None and audit:
            try:
                await self._audit.append(
                    context,
                    action=method.rsplit("/", 1)[-1],
                    target={"method": method},
                    outcome=grpc.StatusCode.PERMISSION_DENIED.name,
                    details={"reason": reason},
                )
            except Exception:  # refusing must not depend on the audit log being writable
                log.exception("could not audit the refusal of %s", method)
