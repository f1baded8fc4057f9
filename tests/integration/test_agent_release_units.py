"""The agent's key-release flow on a real swtpm, driven message by message without a
verifier: binding-key reuse, a release wrapped with the verifier's own wrapping code,
download from a loopback Weights double, decryption, renewal, revocation with an
erase receipt that verifies under the AK, and a boot-state change."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.protobuf.timestamp_pb2 import Timestamp
from tpm2_pytss import TPM2B_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE

from agent.acceptance import release_context
from agent.binding import BINDING_KEY_FILE, ensure_certified_binding_key
from agent.collectors.tpm import Tpm
from agent.config import AgentConfig, ModelConfig, load_verifier_signing_key
from agent.logs import EventLog
from agent.release_manager import ReleaseManager
from agent.releases import ReleaseBook
from agent.tpmwork import TpmWorker
from tests.unit.test_agent_releases import (
    Checkpoint,
    Events,
    WeightsDouble,
    channels_to,
    events,  # noqa: F401  (fixture)
    make_checkpoint,
    weights_server,
)
from verifier.evidence.tpm.certify import authenticate_binding_key, binding_key_policy_digest
from verifier.evidence.tpm.parse import parse_tpm2b_public
from verifier.keyrelease import wrap_for_binding_key
from weightgate.v1 import attestation_pb2, common_pb2

pytestmark = pytest.mark.swtpm

AK_HANDLE = 0x81010002
HOST = "release-node"
BOOT_PCRS: Mapping[str, Sequence[int]] = {"sha256": list(range(8))}


class Recorder:
    def __init__(self) -> None:
        self.sent: list[attestation_pb2.AgentMessage] = []

    async def send(self, message: attestation_pb2.AgentMessage) -> None:
        self.sent.append(message)

    def bodies(self, kind: str) -> list[Any]:
        return [getattr(m, kind) for m in self.sent if m.WhichOneof("body") == kind]


def _tpm(factory: Callable[..., Any]) -> tuple[Tpm, bytes]:
    tpm = Tpm(factory(with_ek_certificate=False).tcti)
    return tpm, tpm.ensure_ak(AK_HANDLE)


def _extra_data(attest: bytes) -> bytes:
    parsed, used = TPMS_ATTEST.unmarshal(attest)
    assert used == len(attest)
    return bytes(parsed.extraData)


def _verify_ak_signature(ak_public: bytes, attest: bytes, signature: bytes) -> None:
    public, _ = TPM2B_PUBLIC.unmarshal(ak_public)
    modulus = int.from_bytes(bytes(public.publicArea.unique.rsa), "big")
    key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    sig, _ = TPMT_SIGNATURE.unmarshal(signature)
    key.verify(bytes(sig.signature.rsassa.sig), attest, padding.PKCS1v15(), hashes.SHA256())


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def _until(check: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_binding_key_is_reused_until_the_pcrs_change(swtpm_factory: Any, tmp_path: Path) -> None:
    tpm, _ = _tpm(swtpm_factory)

    def certify(selection: Mapping[str, Sequence[int]]) -> Any:
        nonce = secrets.token_bytes(32)
        result = ensure_certified_binding_key(
            tpm, tmp_path, pcr_selection=selection, ak_handle=AK_HANDLE, qualifying_data=nonce
        )
        assert _extra_data(result.certification.attest) == nonce
        return result

    first = certify(BOOT_PCRS)
    assert first.created
    assert (tmp_path / BINDING_KEY_FILE).stat().st_mode & 0o777 == 0o600
    again = certify(BOOT_PCRS)
    assert not again.created and again.key == first.key

    tpm.extend_pcr(7, b"unapproved bootloader")
    rebound = certify(BOOT_PCRS)
    assert rebound.created and rebound.key.public != first.key.public
    assert not certify(BOOT_PCRS).created

    other = certify({"sha256": [0, 7]})  # the group's reference changed
    assert other.created and dict(other.key.pcr_selection) == {"sha256": (0, 7)}


class Rig:
    """One host's agent-side release machinery, plus what the verifier would do."""

    def __init__(self, tpm: Tpm, ak_public: bytes, root: Path, ckpt: Checkpoint) -> None:
        self.tpm, self.ak_public, self.ckpt = tpm, ak_public, ckpt
        self.state = root / "state"
        self.target = root / "models" / "frontier-x"
        (root / "signing.pem").write_bytes(ckpt.signing_public_pem)
        self.config = AgentConfig(
            host_id=HOST,
            verifier="127.0.0.1:1",
            tcti=tpm.tcti,
            state_dir=self.state,
            ak_handle=AK_HANDLE,
            insecure=True,
            verifier_signing_key=root / "signing.pem",
            models=(ModelConfig(manifest_digest=ckpt.digest, target_dir=self.target),),
        )
        self.sender = Recorder()
        self.authenticated: Any = None

    def manager(self, address: str, **kw: Any) -> ReleaseManager:
        assert self.config.verifier_signing_key is not None
        return ReleaseManager(
            self.config,
            tpm=TpmWorker(self.tpm),
            log=EventLog(HOST),
            channels=channels_to(address),
            signing_key=load_verifier_signing_key(self.config.verifier_signing_key),
            **kw,
        )

    def certify(self) -> None:
        """The challenge's BindingKeyRequest, answered, and checked as the verifier does."""
        nonce = secrets.token_bytes(32)
        certified = ensure_certified_binding_key(
            self.tpm,
            self.state,
            pcr_selection=BOOT_PCRS,
            ak_handle=AK_HANDLE,
            qualifying_data=nonce,
        )
        self.authenticated = authenticate_binding_key(
            attest=certified.certification.attest,
            signature=certified.certification.signature,
            ak=parse_tpm2b_public(self.ak_public),
            binding_public=certified.key.public,
            expected_qualifying_data=nonce,
            expected_policy_digest=binding_key_policy_digest(
                selection=BOOT_PCRS, pcr_values=self.tpm.read_pcrs(BOOT_PCRS)
            ),
        )

    def key_release(self, request_id: str, release_id: str) -> attestation_pb2.KeyRelease:
        wrapped = wrap_for_binding_key(
            self.authenticated,
            self.ckpt.keys,
            context=release_context(HOST, release_id, self.ckpt.digest),
        )
        return attestation_pb2.KeyRelease(
            request_id=request_id,
            release_id=release_id,
            manifest=self.ckpt.manifest_bytes,
            manifest_signature=self.ckpt.signature,
            encrypted_transport_key=wrapped.encrypted_transport_key,
            wrapped_data_keys=wrapped.wrapped_data_keys,
            lease_expires_at=_stamp(datetime.now(UTC) + timedelta(hours=1)),
        )


def test_release_decrypt_renew_revoke(
    swtpm_factory: Any,
    tmp_path: Path,
    events: Events,  # noqa: F811
) -> None:
    tpm, ak_public = _tpm(swtpm_factory)
    rig = Rig(tpm, ak_public, tmp_path, make_checkpoint(tmp_path / "served"))
    rig.certify()
    servicer = WeightsDouble(rig.ckpt.encrypted)
    servicer.cut_after = 200  # one interruption mid-download
    affirming = common_pb2.TIER_AFFIRMING

    async def run() -> None:
        async with weights_server(servicer) as address:
            manager = rig.manager(address)
            await manager.start()
            await manager.on_verdict(common_pb2.TIER_CONTRAINDICATED, rig.sender)
            assert rig.sender.sent == []
            await manager.on_verdict(affirming, rig.sender)
            (request,) = rig.sender.bodies("release_request")
            assert request.manifest_digest == rig.ckpt.digest
            await manager.on_verdict(affirming, rig.sender)  # in flight: not asked again
            assert len(rig.sender.bodies("release_request")) == 1

            manager.on_key_release(rig.key_release(request.request_id, "rel-1"))
            await _until(lambda: events.named("release.ready"), "the release to be ready")
            for path, data in rig.ckpt.plaintext.items():
                assert (rig.target / path).read_bytes() == data
            record = ReleaseBook.load(rig.state).get("rel-1")
            assert record is not None and record.state == "held" and record.ready
            await manager.on_verdict(affirming, rig.sender)  # held: not asked again
            assert len(rig.sender.bodies("release_request")) == 1

            later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
            manager.on_renewal(
                attestation_pb2.LeaseRenewal(release_id="rel-1", lease_expires_at=_stamp(later))
            )
            await _until(
                lambda: ReleaseBook.load(rig.state).get("rel-1").lease_expires_at == later,  # type: ignore[union-attr]
                "the renewed lease to be saved",
            )

            qualifying = secrets.token_bytes(32)
            manager.on_revocation(
                attestation_pb2.Revocation(
                    release_id="rel-1",
                    reason=common_pb2.Reason(code="tpm.pcr.mismatch", detail="PCR4"),
                    qualifying_data=qualifying,
                ),
                rig.sender,
            )
            await _until(lambda: rig.sender.bodies("erase_receipt"), "the erase receipt")
            (receipt,) = rig.sender.bodies("erase_receipt")
            assert receipt.release_id == "rel-1"
            assert _extra_data(receipt.attest) == qualifying
            _verify_ak_signature(ak_public, receipt.attest, receipt.signature)
            assert not any(p.is_file() for p in rig.target.rglob("*"))
            assert not (rig.state / "downloads" / rig.ckpt.digest.hex()).exists()
            assert ReleaseBook.load(rig.state).get("rel-1").state == "erased"  # type: ignore[union-attr]

            # Erasure is idempotent: an unknown or erased release still gets a receipt.
            for release_id in ("rel-1", "never-seen"):
                manager.on_revocation(
                    attestation_pb2.Revocation(release_id=release_id, qualifying_data=b"q" * 32),
                    rig.sender,
                )
            await _until(lambda: len(rig.sender.bodies("erase_receipt")) == 3, "two more receipts")
            await manager.close()

    asyncio.run(run())
    assert any(r[1] > 0 for r in servicer.requests)  # the download resumed
    logged = repr(events.entries)
    for key in rig.ckpt.keys.values():
        assert key.hex() not in logged


def test_boot_state_change_blocks_until_recertified(
    swtpm_factory: Any,
    tmp_path: Path,
    events: Events,  # noqa: F811
) -> None:
    tpm, ak_public = _tpm(swtpm_factory)
    rig = Rig(tpm, ak_public, tmp_path, make_checkpoint(tmp_path / "served"))
    rig.certify()
    affirming = common_pb2.TIER_AFFIRMING

    async def run() -> None:
        manager = rig.manager("127.0.0.1:1", retry_seconds=0.0)
        await manager.start()
        await manager.on_verdict(affirming, rig.sender)
        (request,) = rig.sender.bodies("release_request")
        tpm.extend_pcr(4, b"unapproved kernel")
        manager.on_key_release(rig.key_release(request.request_id, "rel-boot"))
        await _until(lambda: events.named("release.boot_state_changed"), "the TPM to refuse")
        await manager.on_verdict(affirming, rig.sender)
        assert len(rig.sender.bodies("release_request")) == 1  # blocked
        assert not rig.target.exists()
        manager.binding_key_certified()
        await manager.on_verdict(affirming, rig.sender)
        assert len(rig.sender.bodies("release_request")) == 2
        await manager.close()

    asyncio.run(run())


def test_denial_is_logged_and_retried_later(
    swtpm_factory: Any,
    tmp_path: Path,
    events: Events,  # noqa: F811
) -> None:
    tpm, ak_public = _tpm(swtpm_factory)
    rig = Rig(tpm, ak_public, tmp_path, make_checkpoint(tmp_path / "served"))

    async def run() -> None:
        manager = rig.manager("127.0.0.1:1", retry_seconds=0.3)
        await manager.start()
        await manager.on_verdict(common_pb2.TIER_AFFIRMING, rig.sender)
        (request,) = rig.sender.bodies("release_request")
        manager.on_denied(
            attestation_pb2.ReleaseDenied(
                request_id=request.request_id,
                manifest_digest=rig.ckpt.digest,
                reasons=[
                    common_pb2.Reason(code="release.site_not_approved", detail="site A"),
                    common_pb2.Reason(code="release.review_missing", detail="no review"),
                ],
            )
        )
        (denied,) = events.named("release.denied")
        assert [r["code"] for r in denied["reasons"]] == [
            "release.site_not_approved",
            "release.review_missing",
        ]
        await manager.on_verdict(common_pb2.TIER_AFFIRMING, rig.sender)
        assert len(rig.sender.bodies("release_request")) == 1  # too soon
        await asyncio.sleep(0.35)
        await manager.on_verdict(common_pb2.TIER_AFFIRMING, rig.sender)
        assert len(rig.sender.bodies("release_request")) == 2
        await manager.close()

    asyncio.run(run())
