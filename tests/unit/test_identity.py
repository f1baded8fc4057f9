"""Identity parsing from client certificates (PEM), one mutation at a time."""

from __future__ import annotations

import pytest

from tests.tls_material import CertificateAuthority
from verifier.authz import AuthorizationError, authorize, authorize_host
from verifier.identity import Identity, IdentityError, Role, identity_from_pem, identity_of


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("identity-ca"))


def _pem(ca: CertificateAuthority, name: str, **kwargs: object) -> bytes:
    return ca.issue_client(name, **kwargs).certificate.read_bytes()  # type: ignore[arg-type]


def test_operator_roles_are_read_from_san_uris(ca: CertificateAuthority) -> None:
    identity = identity_from_pem(_pem(ca, "alice", roles=("viewer", "security-admin")))
    assert identity == Identity(
        name="alice", roles=frozenset({Role.VIEWER, Role.SECURITY_ADMIN}), host_id=None
    )
    assert str(identity) == "'alice' (security-admin,viewer)"


def test_agent_host_is_read_from_its_san_uri(ca: CertificateAuthority) -> None:
    identity = identity_from_pem(_pem(ca, "n1", roles=("agent",), host_id="node-1"))
    assert identity == Identity(name="n1", roles=frozenset({Role.AGENT}), host_id="node-1")
    assert identity.acts_as_host("node-1")
    assert not identity.acts_as_host("node-2")


def test_no_san_means_no_roles(ca: CertificateAuthority) -> None:
    assert identity_from_pem(_pem(ca, "plain")).roles == frozenset()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"roles": ("root",)}, "unknown role 'root'"),
        ({"roles": ("agent",)}, "agent role with a host"),
        ({"roles": ("viewer",), "host_id": "node-1"}, "host URI goes with the agent role"),
        ({"roles": ("agent", "operator"), "host_id": "node-1"}, "cannot be combined"),
    ],
)
def test_inconsistent_certificates_are_refused(
    ca: CertificateAuthority, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(IdentityError, match=message):
        identity_from_pem(_pem(ca, "odd", **kwargs))


def test_garbage_is_not_an_identity() -> None:
    with pytest.raises(IdentityError, match="cannot parse"):
        identity_from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


class _Context:
    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self._auth = auth

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def test_identity_of_a_call(ca: CertificateAuthority) -> None:
    pem = _pem(ca, "bob", roles=("operator",))
    assert identity_of(_Context({"x509_pem_cert": [pem]}), insecure=False).name == "bob"
    with pytest.raises(IdentityError, match="no client certificate"):
        identity_of(_Context({}), insecure=False)
    insecure = identity_of(_Context({}), insecure=True)
    assert insecure.roles == frozenset(Role)
    assert insecure.acts_as_host("anything")


def test_authorize_is_deny_by_default() -> None:
    everyone = Identity.insecure()
    with pytest.raises(AuthorizationError, match=r"^authz\.denied: 'insecure'"):
        authorize(everyone, "/weightgate.v1.Operator/NotARealMethod")
    authorize(everyone, "/weightgate.v1.Operator/ListHosts")
    agent = Identity(name="a", roles=frozenset({Role.AGENT}), host_id="h")
    with pytest.raises(AuthorizationError, match=r"^authz\.host_mismatch:"):
        authorize_host(agent, "/weightgate.v1.Enrollment/BeginEnrollment", "other")
