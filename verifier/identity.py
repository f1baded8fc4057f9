"""Who is calling: an :class:`Identity` read from the verified client certificate.

Roles and an agent's host travel in the certificate as SAN URIs,
``urn:weightgate:role:<role>`` and ``urn:weightgate:host:<host_id>``. The
verifier trusts exactly one CA for client certificates (``[verifier.tls]
client_ca``, ours), and gRPC has verified the chain to it before a handler
runs, so these URIs are authoritative: whoever controls that CA controls who
may do what. What that CA has revoked since is checked against its CRL
(verifier.revocation), when one is configured.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

ROLE_URN = "urn:weightgate:role:"
HOST_URN = "urn:weightgate:host:"
INSECURE_NAME = "insecure"


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    SECURITY_ADMIN = "security-admin"
    AUDITOR = "auditor"
    AGENT = "agent"


PERSONNEL_ROLES = frozenset(Role) - {Role.AGENT}


class IdentityError(ValueError):
    """The client certificate does not describe a usable identity."""


@dataclass(frozen=True, slots=True)
class Identity:
    """A caller: its name (certificate CN), its roles and, for an agent, its host.

    ``any_host`` is set only for the plaintext demo identity, which may act as
    any host; a certificate never grants it.
    """

    name: str
    roles: frozenset[Role]
    host_id: str | None
    any_host: bool = False

    @classmethod
    def insecure(cls) -> Identity:
        """The identity of every caller of a plaintext (insecure = true) verifier: all roles."""
        return cls(name=INSECURE_NAME, roles=frozenset(Role), host_id=None, any_host=True)

    def acts_as_host(self, host_id: str) -> bool:
        return self.any_host or (self.host_id is not None and self.host_id == host_id)

    def __str__(self) -> str:
        roles = ",".join(sorted(self.roles)) or "no roles"
        host = f" host={self.host_id}" if self.host_id is not None else ""
        return f"{self.name!r} ({roles}{host})"


def role_uri(role: Role) -> str:
    return ROLE_URN + role.value


def host_uri(host_id: str) -> str:
    return HOST_URN + host_id


def identity_from_certificate(cert: x509.Certificate) -> Identity:
    """The identity a (chain-verified) client certificate names.

    Checks, in order: one common name; every ``urn:weightgate:`` URI is a known
    role or a host; at most one host; a host only with the agent role and the
    agent role only with a host; never the agent role together with a
    personnel role (agents and people are kept apart).
    """
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise IdentityError("the certificate must carry exactly one common name")
    name = names[0].value
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    roles: set[Role] = set()
    hosts: list[str] = []
    for uri in uris:
        if uri.startswith(ROLE_URN):
            value = uri.removeprefix(ROLE_URN)
            try:
                roles.add(Role(value))
            except ValueError:
                raise IdentityError(f"unknown role {value!r} in {uri!r}") from None
        elif uri.startswith(HOST_URN):
            hosts.append(uri.removeprefix(HOST_URN))
        elif uri.startswith("urn:weightgate:"):
            raise IdentityError(f"unknown weightgate URI {uri!r}")
    if len(hosts) > 1:
        raise IdentityError("the certificate names more than one host")
    host_id = hosts[0] if hosts else None
    if not host_id and hosts:
        raise IdentityError("empty host id")
    if (host_id is not None) != (Role.AGENT in roles):
        raise IdentityError("a host URI goes with the agent role, and the agent role with a host")
    if Role.AGENT in roles and roles & PERSONNEL_ROLES:
        raise IdentityError("the agent role cannot be combined with personnel roles")
    return Identity(name=name, roles=frozenset(roles), host_id=host_id)


def _certificate_from_pem(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise IdentityError(f"cannot parse the client certificate: {exc}") from None


def identity_from_pem(pem: bytes) -> Identity:
    return identity_from_certificate(_certificate_from_pem(pem))


class _HasAuthContext(Protocol):
    def auth_context(self) -> Mapping[str, Iterable[bytes]]: ...


class RevocationCheck(Protocol):
    """Raises verifier.revocation.RevocationError unless ``cert`` (naming ``identity``)
    is known not to be revoked (verifier.revocation.ClientRevocationList)."""

    def check(self, cert: x509.Certificate, identity: Identity) -> None: ...


def identity_of(
    context: _HasAuthContext, *, insecure: bool, revocation: RevocationCheck | None = None
) -> Identity:
    """The caller of an RPC: from the peer certificate gRPC verified under mutual TLS
    (``x509_pem_cert`` in the auth context), or the all-roles insecure identity on a
    plaintext verifier. A TLS peer without a certificate is refused, and so is one
    whose certificate ``revocation`` refuses (its error propagates)."""
    if insecure:
        return Identity.insecure()
    pems = list(context.auth_context().get("x509_pem_cert", ()))
    if len(pems) != 1:
        raise IdentityError("no client certificate")
    cert = _certificate_from_pem(pems[0])
    identity = identity_from_certificate(cert)
    if revocation is not None:
        revocation.check(cert, identity)
    return identity
