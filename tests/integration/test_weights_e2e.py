"""Weights end to end: the real agent daemon, a real verifier, real swtpm, real files.

Each host is a private swtpm plus a ``weightgate-agent run`` subprocess configured
with one model; the verifier (grpc.aio in this process, file SQLite, a fixed port
so it can be crashed and started again on the same port and data) encrypts the
checkpoints with ``weightgate models add``. What is checked is what an operator
and a host would see: files in ``target_dir`` compared byte for byte with the
source, ``ListReleases`` states, host events, the agent's JSON log lines.

One deployment is shared by the module (hosts that do not interfere: each has its
own TPM, agent and target_dir). The lease-expiry test has a deployment of its own
because it needs a short lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.collectors.tpm import Tpm
from tests.agent_process import AgentProcess, free_port, stamp
from tests.verifier_harness import VerifierHarness
from verifier.cli import main as weightgate
from verifier.config import VerifierConfig, config_for_demo
from verifier.demo.swtpm import SwtpmProcess
from verifier.server.weights_service import WeightsService
from weightgate.v1 import common_pb2, operator_pb2, weights_pb2

SITE = "e2e-dc"
RISK_TIER = "high"
REFERENCE = {"sha256": list(range(8))}
ATTESTATION_INTERVAL_SECONDS = 0.2
WAIT_SECONDS = 30.0
POLL_SECONDS = 0.05
HISTORY_LIMIT = 1000
MIB = 1024 * 1024
# The download test's checkpoint, and how slowly the verifier serves it (per 1 MiB
# chunk) so that the test can stop the verifier while a .part file is growing.
BIG_FILES = {
    "model-00001-of-00002.safetensors": 48 * MIB + 5,
    "model-00002-of-00002.safetensors": 40 * MIB,
}
SLOW_CHUNK_SECONDS = 0.01

T = TypeVar("T")
Release = operator_pb2.Release
ERASED = operator_pb2.RELEASE_STATE_ERASED
RELEASED = operator_pb2.RELEASE_STATE_RELEASED


def files_under(root: Path) -> dict[str, Path]:
    """Every regular file below ``root`` by its relative path (none if it is gone)."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


def assert_bit_exact(source: Path, target: Path) -> None:
    expected, received = files_under(source), files_under(target)
    assert sorted(received) == sorted(expected), "target_dir holds other files than the source"
    for name, original in expected.items():
        copy = received[name]
        assert copy.stat().st_size == original.stat().st_size, name
        assert copy.read_bytes() == original.read_bytes(), f"{name} differs from the source"


def wait_for(
    what: str,
    check: Callable[[], T | None],
    *,
    timeout: float = WAIT_SECONDS,
    hosts: tuple[AgentHost, ...] = (),
    poll: float = POLL_SECONDS,
) -> T:
    """Poll ``check`` until it returns something truthy; fail if an agent dies."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for host in hosts:
            if (code := host.agent.exited()) is not None:
                pytest.fail(
                    f"the agent of {host.host_id} exited ({code}) while"
                    f" waiting for {what}:\n{host.log_tail()}"
                )
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {h.host_id}:\n{h.log_tail()}" for h in hosts)
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tails}")
        time.sleep(poll)


# -- the verifier's weights service, observed ------------------------------------


@dataclass
class FetchSpy:
    """Every FetchCiphertext request the in-process verifiers served, in order."""

    requests: list[tuple[bytes, str, int]] = field(default_factory=list)  # digest, file, offset
    slow_digests: set[bytes] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def served(self, digest: bytes) -> list[tuple[str, int]]:
        with self.lock:
            return [(f, o) for d, f, o in self.requests if d == digest]


@pytest.fixture(scope="module")
def fetch_spy() -> Iterator[FetchSpy]:
    spy = FetchSpy()
    original = WeightsService.FetchCiphertext

    async def fetch(
        self: WeightsService, request: weights_pb2.FetchCiphertextRequest, context: Any
    ) -> AsyncIterator[weights_pb2.CiphertextChunk]:
        digest = bytes(request.manifest_digest)
        with spy.lock:
            spy.requests.append((digest, request.file_id, request.offset))
        async for chunk in original(self, request, context):
            if digest in spy.slow_digests:
                await asyncio.sleep(SLOW_CHUNK_SECONDS)
            yield chunk

    with pytest.MonkeyPatch.context() as patch:
        # Servicers bind their methods when a server starts: patch before any starts.
        patch.setattr(WeightsService, "FetchCiphertext", fetch)
        yield spy


# -- a verifier that can crash and come back -------------------------------------


class Deployment:
    """A verifier on a fixed loopback port with a file database, and the operator's
    view of it (RPCs and the ``weightgate`` command line, in process)."""

    def __init__(
        self, work: Path, ek_ca_certificates: tuple[Path, ...], **overrides: object
    ) -> None:
        self.work = work
        state = work / "verifier"
        state.mkdir()
        settings: dict[str, Any] = {
            "listen": f"127.0.0.1:{free_port()}",
            "attestation_interval_seconds": ATTESTATION_INTERVAL_SECONDS,
            **overrides,
        }
        self.config: VerifierConfig = replace(
            config_for_demo(state, ek_ca_certificates=ek_ca_certificates), **settings
        )
        assert self.config.database_url.startswith("sqlite:///")
        self.toml = work / "verifier.toml"
        self.toml.write_text(
            f'[verifier]\nstate_dir = "{state}"\ninsecure = true\nrequire_ek_certificate = false\n'
        )
        self.signing_key = work / "verifier-signing.pub"
        self.harness: VerifierHarness | None = None

    def start(self) -> None:
        self.harness = VerifierHarness(self.config)
        assert self.harness.address == self.config.listen  # the same port every time

    def crash(self) -> None:
        """Stop at once, as a killed process would: no grace for streams in flight."""
        harness, self.harness = self.harness, None
        if harness is None:
            return
        running = harness._running

        async def down() -> None:
            await running.server.stop(0)

        harness.channel.close()
        asyncio.run_coroutine_threadsafe(down(), harness._loop).result(timeout=30)
        harness.stop()  # the server is stopped already; this closes the store and loop

    @property
    def operator(self) -> Any:
        assert self.harness is not None, "the verifier is not running"
        return self.harness.operator

    def cli(self, *argv: str) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = weightgate([*argv, f"--verifier={self.config.listen}", "--insecure"])
        assert code == 0, (argv, out.getvalue())
        return out.getvalue()

    def publish(self, name: str, source: Path) -> bytes:
        """Encrypt and register a checkpoint; clear the site for it; its digest."""
        self.cli("models", "add", name, "--version", "1", "--path", str(source),
                 "--risk-tier", RISK_TIER, "--config", str(self.toml))  # fmt: skip
        models = self.operator.ListModelVersions(operator_pb2.ListModelVersionsRequest()).models
        digest = next(bytes(m.manifest_digest) for m in models if m.name == name)
        self.cli("sites", "set", SITE, "--cleared", RISK_TIER)
        self.cli("reviews", "propose", digest.hex(), "--site", SITE, "--categories", "cyber")
        if not self.signing_key.exists():
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert weightgate(["verifier", "public-key", "--config", str(self.toml)]) == 0
            self.signing_key.write_text(out.getvalue())
        return digest

    def releases(self, host_id: str) -> list[Release]:
        request = operator_pb2.ListReleasesRequest(host_id=host_id)
        return list(self.operator.ListReleases(request, timeout=10).releases)

    def release(self, release_id: str) -> Release | None:
        return next(
            (r for r in self.operator.ListReleases(
                operator_pb2.ListReleasesRequest(), timeout=10).releases
             if r.release_id == release_id),
            None,
        )  # fmt: skip

    def events(self, host_id: str, kind: str) -> list[operator_pb2.HostEvent]:
        detail = self.operator.GetHost(
            operator_pb2.GetHostRequest(host_id=host_id, history_limit=HISTORY_LIMIT), timeout=10
        )
        return [e for e in detail.events if e.kind == kind]


# -- a host: its TPM and its agent -----------------------------------------------


class AgentHost:
    def __init__(
        self,
        deployment: Deployment,
        tpm_process: SwtpmProcess,
        host_id: str,
        *,
        digest: bytes,
        source: Path,
    ) -> None:
        self.deployment = deployment
        self.tpm_process = tpm_process
        self.host_id = host_id
        self.digest = digest
        self.source = source
        self.work = deployment.work / host_id
        self.work.mkdir()
        self.target = self.work / "weights"
        self.state = self.work / "agent-state"
        self.agent = AgentProcess(self.work / "agent.log")

    def register(self) -> None:
        """Register in a group of its own, reference PCRs from its TPM, assign to the site."""
        operator = self.deployment.operator
        operator.RegisterHost(
            operator_pb2.RegisterHostRequest(host_id=self.host_id, group=self.host_id), timeout=10
        )
        values = Tpm(self.tpm_process.tcti).read_pcrs(REFERENCE)
        operator.ProposeChange(
            operator_pb2.ProposeChangeRequest(
                change=operator_pb2.ProposedChange(
                    reference_values=operator_pb2.SetReferenceValuesRequest(
                        group=self.host_id,
                        pcrs=[
                            common_pb2.PcrBank(hash_algorithm=b, values=v)
                            for b, v in values.items()
                        ],
                    )
                )
            ),
            timeout=10,
        )
        self.deployment.cli("hosts", "assign", self.host_id, "--site", SITE)

    def start_agent(self) -> None:
        config = self.work / "agent.toml"
        config.write_text(
            "[agent]\n"
            f'host_id = "{self.host_id}"\n'
            f'verifier = "{self.deployment.config.listen}"\n'
            f'tcti = "{self.tpm_process.tcti}"\n'
            f'state_dir = "{self.state}"\n'
            "insecure = true\n"
            "reconnect_initial_seconds = 0.1\n"
            "reconnect_max_seconds = 1.0\n"
            f'verifier_signing_key = "{self.deployment.signing_key}"\n'
            "\n[[agent.models]]\n"
            f'manifest_digest = "{self.digest.hex()}"\n'
            f'target_dir = "{self.target}"\n'
        )
        self.agent.start(config)

    def stop_agent(self) -> None:
        self.agent.stop()

    def events(self, name: str, **match: object) -> list[dict[str, Any]]:
        """The agent's JSON log lines of one event (and these field values)."""
        return self.agent.events(name, **match)

    def log_tail(self, lines: int = 25) -> str:
        return self.agent.log_tail(lines)

    def wait(
        self,
        what: str,
        check: Callable[[], T | None],
        *,
        timeout: float = WAIT_SECONDS,
        poll: float = POLL_SECONDS,
    ) -> T:
        return wait_for(what, check, timeout=timeout, hosts=(self,), poll=poll)

    def wait_ready(self) -> Release:
        """Until the agent reports a release ready; the verifier's record of it."""
        ready = self.wait("the weights to be released and decrypted",
                          lambda: self.events("release.ready"))  # fmt: skip
        release = self.deployment.release(ready[-1]["release_id"])
        assert release is not None and release.host_id == self.host_id
        return release

    def wait_state(self, release_id: str, state: int, *, timeout: float = WAIT_SECONDS) -> Release:
        def reached() -> Release | None:
            release = self.deployment.release(release_id)
            return release if release is not None and release.state == state else None

        return self.wait(f"release {release_id} to be {operator_pb2.ReleaseState.Name(state)}",
                         reached, timeout=timeout)  # fmt: skip

    def downloads(self) -> Path:
        return self.state / "downloads"


def make_checkpoint(directory: Path) -> Path:
    directory.mkdir()
    (directory / "config.json").write_text('{"layers": 2, "hidden": 64}')
    (directory / "shards").mkdir()
    (directory / "shards" / "model-00001.safetensors").write_bytes(os.urandom(2 * MIB + 17))
    (directory / "shards" / "model-00002.safetensors").write_bytes(os.urandom(MIB))
    return directory


# -- the module's deployment -----------------------------------------------------


@dataclass
class World:
    deployment: Deployment
    tpms: dict[str, SwtpmProcess]
    small: Path
    small_digest: bytes
    big: Path
    big_digest: bytes
    hosts: list[AgentHost] = field(default_factory=list)

    def host(self, host_id: str, *, big: bool = False) -> AgentHost:
        """Register a host on its own TPM and start its agent."""
        host = AgentHost(
            self.deployment,
            self.tpms[host_id],
            host_id,
            digest=self.big_digest if big else self.small_digest,
            source=self.big if big else self.small,
        )
        self.hosts.append(host)
        host.register()
        host.start_agent()
        return host


@pytest.fixture(scope="module")
def world(
    swtpm_factory_module: Any, tmp_path_factory: pytest.TempPathFactory, fetch_spy: FetchSpy
) -> Iterator[World]:
    work = tmp_path_factory.mktemp("weights-e2e")
    # One TPM per host: the reboot test power-cycles its own.
    tpms = {name: swtpm_factory_module() for name in ("trusted-node", "reboot-node", "big-node")}
    cas = tuple(ca for tpm in tpms.values() for ca in tpm.ek_ca_certificates)
    deployment = Deployment(work, cas)
    small = make_checkpoint(work / "small-model")
    big = work / "big-model"
    big.mkdir()
    for name, size in BIG_FILES.items():
        (big / name).write_bytes(os.urandom(size))
    deployment.start()
    world = World(deployment, tpms, small, b"", big, b"")
    try:
        world.small_digest = deployment.publish("small", small)
        world.big_digest = deployment.publish("big", big)
        yield world
    finally:
        for host in world.hosts:
            host.stop_agent()
        deployment.crash()


@pytest.fixture(scope="module")
def trusted(world: World) -> AgentHost:
    return world.host("trusted-node")


# -- the tests ---------------------------------------------------------------------


def test_trusted_host_receives_the_checkpoint_bit_exact_and_leases_are_renewed(
    world: World, trusted: AgentHost
) -> None:
    release = trusted.wait_ready()
    assert release.state == RELEASED
    assert release.manifest_digest == world.small_digest
    assert_bit_exact(world.small, trusted.target)
    # The ciphertext was downloaded, verified and renamed: no partial file is left.
    downloaded = files_under(trusted.downloads())
    assert downloaded and not [n for n in downloaded if n.endswith(".part")], downloaded
    accepted = trusted.events("release.accepted", release_id=release.release_id)
    assert len(accepted) == 1 and accepted[0]["files"] == 3

    # Every affirming verdict renews the lease, on the verifier and on the host.
    def renewed() -> Release | None:
        current = world.deployment.release(release.release_id)
        if current is None or not current.HasField("renewed_at"):
            return None
        return (
            current if stamp(current.lease_expires_at) > stamp(release.lease_expires_at) else None
        )

    current = trusted.wait("a lease renewal", renewed)
    assert current.state == RELEASED
    assert stamp(current.renewed_at) >= stamp(current.released_at)
    renewals = partial(trusted.events, "release.lease_renewed", release_id=release.release_id)
    trusted.wait("the agent to record renewals", lambda: len(renewals()) >= 2)
    # One release, no re-requests while it is held.
    assert [r.release_id for r in world.deployment.releases(trusted.host_id)] == [
        release.release_id
    ]
    assert len(trusted.events("release.requested")) == 1


def test_quarantine_revokes_and_erases_and_denies_new_releases(
    world: World, trusted: AgentHost
) -> None:
    release = trusted.wait_ready()
    assert_bit_exact(world.small, trusted.target)
    deployment = world.deployment

    out = deployment.cli("hosts", "quarantine", trusted.host_id, "--reason", "e2e: stolen rack")
    assert "quarantined" in out
    erased = trusted.wait_state(release.release_id, ERASED)
    assert erased.revocation_reason == "release.revoked.quarantined"
    assert stamp(erased.released_at) <= stamp(erased.revoked_at) <= stamp(erased.erased_at)
    # ERASED is only recorded once the AK-signed receipt verified.
    assert trusted.events("release.erase_receipt_sent", release_id=release.release_id)
    assert [e.kind for e in deployment.events(trusted.host_id, "weights_erased")] == [
        "weights_erased"
    ]
    revoked = deployment.events(trusted.host_id, "key_revoked")
    assert len(revoked) == 1 and "release.revoked.quarantined" in revoked[0].detail
    erasure = trusted.events("release.erased", release_id=release.release_id)
    assert len(erasure) == 1
    assert erasure[0]["reason"] == "release.revoked.quarantined"
    assert erasure[0]["files_removed"] == 3
    assert files_under(trusted.target) == {}, "plaintext left after erasure"
    assert not trusted.downloads().joinpath(world.small_digest.hex()).exists()

    # Still attested, still asking: every request is refused while quarantined.
    store = deployment.harness.store if deployment.harness else None
    assert store is not None

    def denied() -> list[Any]:
        return [
            d
            for d in store.release_denials(trusted.host_id)
            if "release.host_quarantined" in [r.code for r in d.reasons]
        ]

    denial = trusted.wait("a denied release request", denied)[0]
    assert denial.manifest_digest == world.small_digest
    assert trusted.events("release.denied")
    assert deployment.events(trusted.host_id, "release_denied")
    releases = deployment.releases(trusted.host_id)
    assert [(r.release_id, r.state) for r in releases] == [(release.release_id, ERASED)]
    assert files_under(trusted.target) == {}


def test_lease_expiry_erases_on_the_host_alone_and_closes_after_the_receipt(
    swtpm_factory: Any, tmp_path: Path
) -> None:
    tpm = swtpm_factory()
    deployment = Deployment(tmp_path, tpm.ek_ca_certificates, lease_seconds=3.0)
    deployment.start()
    host: AgentHost | None = None
    try:
        source = make_checkpoint(tmp_path / "model")
        digest = deployment.publish("leased", source)
        host = AgentHost(deployment, tpm, "lease-node", digest=digest, source=source)
        host.register()
        host.start_agent()
        release = host.wait_ready()
        assert_bit_exact(source, host.target)

        # The verifier goes away: no renewal can arrive, the lease runs out on the host.
        deployment.crash()
        expired = host.wait("the agent to expire the lease by itself", lambda: host.events(
            "release.erased", release_id=release.release_id, reason="lease_expired"))  # fmt: skip
        assert expired[0]["files_removed"] == 3
        assert host.events("release.lease_expired", release_id=release.release_id)
        assert files_under(host.target) == {}, "plaintext left after the lease expired"
        assert not host.downloads().joinpath(digest.hex()).exists()
        # The host's own record of it.
        book = json.loads((host.state / "releases.json").read_text())["releases"]
        assert [(r["release_id"], r["state"]) for r in book] == [(release.release_id, "erased")]

        # Back on the same port and database: the verifier expires the release and asks
        # for the receipt; the agent (already erased) proves it with an AK-signed quote.
        deployment.start()
        closed = host.wait_state(release.release_id, ERASED)
        assert closed.revocation_reason == "lease_expired"
        assert stamp(closed.lease_expires_at) <= stamp(closed.revoked_at)
        assert stamp(closed.revoked_at) <= stamp(closed.erased_at)
        assert host.events("release.erase_receipt_sent", release_id=release.release_id)
        assert host.events("release.already_erased", release_id=release.release_id)
        kinds = [
            e.kind
            for e in sorted(
                deployment.events(host.host_id, "lease_expired")
                + deployment.events(host.host_id, "weights_erased"),
                key=lambda e: stamp(e.at),
            )
            if release.release_id in e.detail
        ]
        assert kinds == ["lease_expired", "weights_erased"]
    finally:
        if host is not None:
            host.stop_agent()
        deployment.crash()


def test_verifier_restart_mid_download_resumes_the_part_file(
    world: World, fetch_spy: FetchSpy
) -> None:
    deployment = world.deployment
    fetch_spy.slow_digests.add(world.big_digest)
    host = world.host("big-node", big=True)
    parts = host.downloads() / world.big_digest.hex()

    def growing_part() -> list[Path] | None:
        try:
            found = [p for p in parts.glob("*.part") if p.stat().st_size > 0]
        except FileNotFoundError:
            return None
        return found or None

    host.wait("a .part download file", growing_part, poll=0.005)
    release_id = host.events("release.accepted")[0]["release_id"]
    deployment.crash()
    interrupted = host.wait("the agent to notice the interrupted download",
                            lambda: host.events("release.download_interrupted"))  # fmt: skip
    assert interrupted[0]["release_id"] == release_id
    # Nothing writes to the part files while the verifier is down.
    partial = {p.name.removesuffix(".part"): p.stat().st_size for p in parts.glob("*.part")}
    assert partial, "no partial download left to resume"
    total = sum(BIG_FILES.values())
    assert sum(partial.values()) < total
    served_before = len(fetch_spy.served(world.big_digest))

    deployment.start()
    release = host.wait_ready()
    assert release.release_id == release_id
    assert_bit_exact(world.big, host.target)
    # The release record survived the restart; the agent finished that release rather
    # than asking for another one.
    assert [(r.release_id, r.state) for r in deployment.releases(host.host_id)] == [
        (release_id, RELEASED)
    ]
    assert len(host.events("release.accepted")) == 1
    # Resumed: the first request after the restart for each partial file started
    # exactly where its .part file ended, not at 0.
    after = fetch_spy.served(world.big_digest)[served_before:]
    for ciphertext_name, size in partial.items():
        file_id = ciphertext_name.removesuffix(".wgc")
        offsets = [offset for served_file, offset in after if served_file == file_id]
        assert offsets and offsets[0] == size > 0, (ciphertext_name, size, after)
    downloaded = host.events("release.downloaded", release_id=release_id)
    assert len(downloaded) == 1 and downloaded[0]["files"] == len(BIG_FILES)
    host.stop_agent()


def test_tpm_reboot_revokes_live_releases_and_the_agent_erases(world: World) -> None:
    host = world.host("reboot-node")
    release = host.wait_ready()
    assert_bit_exact(world.small, host.target)
    assert not world.deployment.events(host.host_id, "reboot")

    host.tpm_process.restart()  # a TPM Reset: resetCount goes up, same boot measurements

    erased = host.wait_state(release.release_id, ERASED)
    assert erased.revocation_reason == "release.revoked.reboot"
    assert world.deployment.events(host.host_id, "reboot")
    erasure = host.events("release.erased", release_id=release.release_id)
    assert len(erasure) == 1
    assert erasure[0]["reason"] == "release.revoked.reboot"
    assert erasure[0]["files_removed"] == 3
    assert host.events("release.erase_receipt_sent", release_id=release.release_id)
    # The host is still trusted after the reboot, so it may receive the model again,
    # but only under a new release.
    again = host.wait(
        "a new release after the reboot",
        lambda: [e for e in host.events("release.ready") if e["release_id"] != release.release_id],
    )
    assert_bit_exact(world.small, host.target)
    assert world.deployment.release(again[0]["release_id"]).state == RELEASED
    host.stop_agent()
