"""The agent's key-release pieces without a verifier: model configuration, release
records and erasure, lease expiry, and resumable ciphertext downloads from a tiny
Weights server on loopback (a stand-in for the verifier's, kept minimal)."""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.acceptance import release_context
from agent.collectors.tpm import Tpm
from agent.config import AgentConfig, ConfigError, load_config
from agent.logs import LOGGER_NAME, EventLog
from agent.release_manager import ReleaseManager
from agent.releases import ReleaseBook, ReleaseRecord, erase_files
from agent.tpmwork import TpmWorker
from agent.weights import DownloadError, download_dir, fetch_file, fetch_release
from weightgate.checkpoint import Manifest, ManifestFile, encrypt_stream, sign_manifest
from weightgate.checkpoint.format import FILE_ID_SIZE
from weightgate.v1 import weights_pb2, weights_pb2_grpc

SEG = 64

# -- helpers shared with tests/integration/test_agent_release_units.py -----------


@dataclass
class Checkpoint:
    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes
    digest: bytes
    keys: dict[str, bytes]  # file id hex -> data key
    plaintext: dict[str, bytes]  # path -> bytes
    encrypted: Path  # directory of <file id>.wgc
    signing_public_pem: bytes


def make_checkpoint(directory: Path, files: dict[str, bytes] | None = None) -> Checkpoint:
    """Encrypt ``files`` with the shared format and sign the manifest, as the verifier would."""
    files = files or {
        "config.json": b'{"layers": 2}',
        "weights/model-00001.safetensors": secrets.token_bytes(5 * SEG + 7),
        "weights/model-00002.safetensors": secrets.token_bytes(3 * SEG),
    }
    directory.mkdir(parents=True, exist_ok=True)
    entries, keys = [], {}
    for path in sorted(files):
        file_id, key = secrets.token_bytes(FILE_ID_SIZE), secrets.token_bytes(32)
        out = io.BytesIO()
        result = encrypt_stream(io.BytesIO(files[path]), out, key, file_id, segment_size=SEG)
        (directory / f"{file_id.hex()}.wgc").write_bytes(out.getvalue())
        entries.append(
            ManifestFile(
                path=path,
                file_id=file_id,
                plaintext_size=result.plaintext_size,
                ciphertext_size=result.ciphertext_size,
                plaintext_sha256=result.plaintext_sha256,
                ciphertext_sha256=result.ciphertext_sha256,
            )
        )
        keys[file_id.hex()] = key
    manifest = Manifest(
        model_name="frontier-x",
        model_version="2025.06",
        risk_tier="tier-3",
        segment_size=SEG,
        files=tuple(entries),
    )
    signer = Ed25519PrivateKey.generate()
    manifest_bytes = manifest.to_bytes()
    return Checkpoint(
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        signature=sign_manifest(manifest_bytes, signer.sign),
        digest=manifest.digest(),
        keys=keys,
        plaintext=files,
        encrypted=directory,
        signing_public_pem=signer.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


class WeightsDouble(weights_pb2_grpc.WeightsServicer):
    """Serves ``<root>/<file id>.wgc`` in small chunks; can cut one stream short."""

    def __init__(self, root: Path, *, chunk: int = 50) -> None:
        self.root = root
        self.chunk = chunk
        self.requests: list[tuple[str, int]] = []
        self.cut_after: int | None = None  # bytes; then UNAVAILABLE, once
        self.tamper = False

    async def FetchCiphertext(
        self,
        request: weights_pb2.FetchCiphertextRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[weights_pb2.CiphertextChunk]:
        self.requests.append((request.file_id, request.offset))
        data = bytearray((self.root / f"{request.file_id}.wgc").read_bytes())
        if self.tamper:
            data[-1] ^= 1
        offset, sent = request.offset, 0
        while offset < len(data):
            if self.cut_after is not None and sent >= self.cut_after:
                self.cut_after = None
                await context.abort(grpc.StatusCode.UNAVAILABLE, "connection lost (test)")
            piece = bytes(data[offset : offset + self.chunk])
            yield weights_pb2.CiphertextChunk(offset=offset, data=piece)
            offset += len(piece)
            sent += len(piece)


@asynccontextmanager
async def weights_server(servicer: WeightsDouble) -> AsyncIterator[str]:
    server = grpc.aio.server()
    weights_pb2_grpc.add_WeightsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


def channels_to(address: str) -> Any:
    return lambda: grpc.aio.insecure_channel(address)


class Events(logging.Handler):
    """Collects the agent's structured log events."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entries.append(
            {"event": record.getMessage(), **getattr(record, "weightgate_fields", {})}
        )

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["event"] == event]


@pytest.fixture
def events() -> Iterator[Events]:
    logger = logging.getLogger(LOGGER_NAME)
    handler, level = Events(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- configuration ---------------------------------------------------------------

DIGEST_A = "ab" * 32
DIGEST_B = "CD" * 32


def _config(tmp_path: Path, body: str) -> Path:
    key = Ed25519PrivateKey.generate().public_key()
    (tmp_path / "signing.pem").write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    path = tmp_path / "agent.toml"
    path.write_text(
        "[agent]\n"
        'host_id = "node-1"\n'
        'verifier = "127.0.0.1:7443"\n'
        'tcti = "swtpm:host=127.0.0.1,port=2321"\n'
        'state_dir = "state"\n'
        "insecure = true\n" + body
    )
    return path


def test_models_are_parsed(tmp_path: Path) -> None:
    config = load_config(
        _config(
            tmp_path,
            'verifier_signing_key = "signing.pem"\n\n'
            f'[[agent.models]]\nmanifest_digest = "{DIGEST_A}"\ntarget_dir = "models/a"\n\n'
            f'[[agent.models]]\nmanifest_digest = "{DIGEST_B}"\ntarget_dir = "/srv/b"\n',
        )
    )
    assert config.verifier_signing_key == tmp_path.resolve() / "signing.pem"
    assert [(m.manifest_digest.hex(), m.target_dir) for m in config.models] == [
        (DIGEST_A, tmp_path.resolve() / "models/a"),
        (DIGEST_B.lower(), Path("/srv/b")),
    ]


def test_no_models_no_key_needed(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, ""))
    assert config.models == () and config.verifier_signing_key is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            f'[[agent.models]]\nmanifest_digest = "{DIGEST_A}"\ntarget_dir = "a"\n',
            r"agent.toml:1: \[agent\] verifier_signing_key: required when \[\[agent.models\]\]",
        ),
        (
            'verifier_signing_key = "signing.pem"\n'
            f'[[agent.models]]\nmanifest_digest = "{DIGEST_A}"\ntarget_dir = "a"\n'
            '[[agent.models]]\nmanifest_digest = "abc"\ntarget_dir = "b"\n',
            r"agent.toml:12: \[\[agent.models\]\] #2 manifest_digest: expected 64 hex digits",
        ),
        (
            'verifier_signing_key = "signing.pem"\n'
            f'[[agent.models]]\nmanifest_digest = "{DIGEST_A}"\ntarget_dir = "a"\n'
            f'[[agent.models]]\nmanifest_digest = "{DIGEST_A.upper()}"\ntarget_dir = "b"\n',
            r"agent.toml:12: \[\[agent.models\]\] #2 manifest_digest: configured twice",
        ),
        (
            'verifier_signing_key = "signing.pem"\n'
            f'[[agent.models]]\nmanifest_digest = "{DIGEST_A}"\ntarget_dir = "a"\n'
            f'[[agent.models]]\nmanifest_digest = "{DIGEST_B}"\ntarget_dir = "a/sub"\n',
            r"agent.toml:13: \[\[agent.models\]\] #2 target_dir: overlaps another model's",
        ),
        (
            'verifier_signing_key = "signing.pem"\n'
            f'[[agent.models]]\nmanifest_digest = "{DIGEST_A}"\n',
            r"agent.toml:8: \[\[agent.models\]\] #1 target_dir: required key missing",
        ),
        (
            'verifier_signing_key = "signing.pem"\n'
            f'[[agent.models]]\nmanifest_digest = "{DIGEST_A}"\ntarget_dir = "a"\n'
            "binding_key_pcrs = [0]\n",
            r"agent.toml:11: \[\[agent.models\]\] #1 binding_key_pcrs: unknown key",
        ),
        (
            'verifier_signing_key = "agent.toml"\n',
            r"agent.toml:7: \[agent\] verifier_signing_key: .*not a PEM public key",
        ),
    ],
)
def test_model_errors_name_line_and_key(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(_config(tmp_path, body))


# -- downloads -------------------------------------------------------------------


def test_download_resumes_after_interruption(tmp_path: Path, events: Events) -> None:
    ckpt = make_checkpoint(tmp_path / "served")
    servicer = WeightsDouble(ckpt.encrypted)
    big = ckpt.manifest.files[1]
    servicer.cut_after = 150  # the first stream dies after three chunks

    async def run() -> None:
        async with weights_server(servicer) as address:
            await fetch_release(
                channels_to(address),
                manifest=ckpt.manifest,
                manifest_digest=ckpt.digest,
                directory=tmp_path / "dl",
                log=EventLog("node-1"),
                release_id="r1",
            )

    asyncio.run(run())
    for entry in ckpt.manifest.files:
        assert (tmp_path / "dl" / entry.ciphertext_name).read_bytes() == (
            ckpt.encrypted / entry.ciphertext_name
        ).read_bytes()
        assert not (tmp_path / "dl" / f"{entry.ciphertext_name}.part").exists()
    first = ckpt.manifest.files[0]
    assert first.ciphertext_size < 150  # so the cut falls in the second file
    assert (big.file_id.hex(), 150) in servicer.requests  # resumed, not restarted
    assert servicer.requests.count((big.file_id.hex(), 0)) == 1
    assert events.named("release.download_interrupted")


def test_download_resumes_from_a_part_left_on_disk(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "served")
    entry = ckpt.manifest.files[1]
    source = (ckpt.encrypted / entry.ciphertext_name).read_bytes()
    target = tmp_path / "dl"
    target.mkdir()
    (target / f"{entry.ciphertext_name}.part").write_bytes(source[:123])
    servicer = WeightsDouble(ckpt.encrypted)

    async def run() -> Path:
        async with weights_server(servicer) as address, grpc.aio.insecure_channel(address) as ch:
            return await fetch_file(
                weights_pb2_grpc.WeightsStub(ch),
                manifest_digest=ckpt.digest,
                entry=entry,
                directory=target,
            )

    assert asyncio.run(run()).read_bytes() == source
    assert servicer.requests == [(entry.file_id.hex(), 123)]


def test_tampered_ciphertext_is_refused_and_not_kept(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "served")
    entry = ckpt.manifest.files[0]
    servicer = WeightsDouble(ckpt.encrypted)
    servicer.tamper = True

    async def run() -> None:
        async with weights_server(servicer) as address, grpc.aio.insecure_channel(address) as ch:
            await fetch_file(
                weights_pb2_grpc.WeightsStub(ch),
                manifest_digest=ckpt.digest,
                entry=entry,
                directory=tmp_path / "dl",
            )

    with pytest.raises(DownloadError, match="SHA-256 does not match"):
        asyncio.run(run())
    assert list((tmp_path / "dl").iterdir()) == []


# -- records, erasure, leases ------------------------------------------------------


def _record(target: Path, *, expires: datetime, files: tuple[str, ...], **kw: Any) -> ReleaseRecord:
    return ReleaseRecord(
        release_id=kw.pop("release_id", "rel-1"),
        manifest_digest=kw.pop("digest", bytes(range(32))),
        target_dir=target,
        lease_expires_at=expires,
        state="held",
        files=files,
        **kw,
    )


def _materialize(target: Path, files: tuple[str, ...]) -> None:
    for name in files:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(b"plaintext weights")


def test_records_round_trip_atomically_and_privately(tmp_path: Path) -> None:
    book = ReleaseBook(tmp_path)
    record = _record(tmp_path / "m", expires=datetime(2030, 1, 1, tzinfo=UTC), files=("a", "b/c"))
    book.put(record)
    assert (tmp_path / "releases.json").stat().st_mode & 0o777 == 0o600
    assert ReleaseBook.load(tmp_path).get("rel-1") == record
    (tmp_path / "releases.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable release records"):
        ReleaseBook.load(tmp_path)


def test_erase_removes_plaintext_leftovers_and_ciphertext_only(tmp_path: Path) -> None:
    target, files = tmp_path / "model", ("config.json", "w/deep/shard.bin", "w/shard2.bin")
    _materialize(target, files)
    (target / "w" / ".shard2.bin.x1y2.part").write_bytes(b"half")  # a crash mid-decrypt
    (target / "README.operator").write_text("not ours")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "shard.bin").write_text("keep me")
    (target / "evil").symlink_to(outside)
    record = _record(target, expires=datetime.now(UTC), files=(*files, "evil/shard.bin"))
    downloads = download_dir(tmp_path / "state", record.manifest_digest)
    downloads.mkdir(parents=True)
    (downloads / "x.wgc").write_bytes(b"ciphertext")

    assert erase_files(record, tmp_path / "state") == 4
    assert sorted(p.name for p in target.iterdir()) == ["README.operator", "evil"]
    assert (outside / "shard.bin").read_text() == "keep me"
    assert not downloads.exists()
    assert erase_files(record, tmp_path / "state") == 0  # idempotent


def _manager(tmp_path: Path, now: list[datetime], **kw: Any) -> ReleaseManager:
    config = AgentConfig(
        host_id="node-1", verifier="127.0.0.1:1", tcti="none", state_dir=tmp_path / "state"
    )
    return ReleaseManager(
        config,
        tpm=TpmWorker(Tpm("none")),  # lease expiry needs no TPM
        log=EventLog("node-1"),
        channels=channels_to("127.0.0.1:1"),
        signing_key=None,
        now=lambda: now[0],
        lease_poll_seconds=0.01,
        **kw,
    )


def test_expired_and_unfinished_releases_are_erased_at_start(
    tmp_path: Path, events: Events
) -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    book = ReleaseBook(tmp_path / "state")
    cases = {
        "expired": dict(expires=now[0] - timedelta(seconds=1), ready=True),
        "unfinished": dict(expires=now[0] + timedelta(hours=1), ready=False),
        "live": dict(expires=now[0] + timedelta(hours=1), ready=True),
    }
    for name, kw in cases.items():
        _materialize(tmp_path / name, ("shard.bin",))
        book.put(
            _record(
                tmp_path / name,
                files=("shard.bin",),
                release_id=name,
                expires=kw["expires"],  # type: ignore[arg-type]
                ready=kw["ready"],
            )
        )

    async def run() -> None:
        manager = _manager(tmp_path, now)
        await manager.start()
        await manager.close()

    asyncio.run(run())
    assert not (tmp_path / "expired" / "shard.bin").exists()
    assert not (tmp_path / "unfinished" / "shard.bin").exists()
    assert (tmp_path / "live" / "shard.bin").exists()
    saved = ReleaseBook.load(tmp_path / "state")
    assert {r.release_id: r.state for r in saved.records()} == {
        "expired": "erased",
        "unfinished": "erased",
        "live": "held",
    }
    assert {e["reason"] for e in events.named("release.erased")} == {
        "lease_expired",
        "unfinished_at_start",
    }


def test_lease_timer_erases_without_a_verifier(tmp_path: Path) -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    _materialize(tmp_path / "m", ("shard.bin",))
    ReleaseBook(tmp_path / "state").put(
        _record(
            tmp_path / "m", files=("shard.bin",), expires=now[0] + timedelta(seconds=60), ready=True
        )
    )

    async def run() -> None:
        manager = _manager(tmp_path, now)
        await manager.start()
        await asyncio.sleep(0.05)
        assert (tmp_path / "m" / "shard.bin").exists()
        now[0] += timedelta(seconds=61)
        for _ in range(200):
            if not (tmp_path / "m" / "shard.bin").exists():
                break
            await asyncio.sleep(0.01)
        await manager.close()

    asyncio.run(run())
    assert not (tmp_path / "m" / "shard.bin").exists()
    assert ReleaseBook.load(tmp_path / "state").get("rel-1").state == "erased"  # type: ignore[union-attr]


def test_release_context_is_the_documented_one() -> None:
    assert (
        release_context("node-1", "rel-9", b"\x01" * 32)
        == b"weightgate/v1/release\x00node-1\x00rel-9\x00" + b"\x01" * 32
    )
