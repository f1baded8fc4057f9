"""Operator RPCs for the weight gate: models, releases, quarantine.

Sites, clearances, assignments and reviews change only by proposal
(operator_proposal_rpcs).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import grpc

from verifier.audit.recorder import AuditRecorder, audited
from verifier.authz import Authorizer
from verifier.keystore import KeyStore, KeyStoreError
from verifier.models.encrypt import data_key_context
from verifier.server.attestation_service import OpenStreams
from verifier.server.convert import (
    host_summary,
    model_message,
    release_message,
)
from verifier.server.host_watch import HostWatchHub
from verifier.server.weights_service import checkpoint_dir
from verifier.store import (
    HostNotFound,
    ModelVersionExists,
    Store,
)
from weightgate.checkpoint.format import CheckpointFormatError
from weightgate.checkpoint.signature import verify_manifest
from weightgate.v1 import operator_pb2

Context = grpc.aio.ServicerContext[object, object]
TEXT_LIMIT = 4096


class GateRpcs:
    """Mixed into OperatorService; the attributes below are set by its __init__."""

    _store: Store
    _now: Callable[[], datetime]
    _keystore: KeyStore
    _blob_dir: Path
    _open_streams: OpenStreams
    _audit: AuditRecorder
    _authz: Authorizer
    _host_watch: HostWatchHub

    @audited(digests=("manifest",))
    async def AddModelVersion(
        self, request: operator_pb2.AddModelVersionRequest, context: Context
    ) -> operator_pb2.ModelVersion:
        """Register an encrypted checkpoint: the manifest must carry our own signature,
        every file must have a wrapped key and its ciphertext in the blob dir."""
        try:
            manifest = verify_manifest(
                request.manifest, request.manifest_signature, self._keystore.signing_public_key()
            )
        except CheckpointFormatError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"manifest: {exc}")
        file_ids = {f.file_id.hex() for f in manifest.files}
        if set(request.wrapped_data_keys) != file_ids:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "wrapped_data_keys must hold exactly one key per manifest file",
            )
        for file_id, wrapped in request.wrapped_data_keys.items():
            # A key that does not unwrap now would only fail later, at release time.
            try:
                self._keystore.unwrap_data_key(
                    wrapped, context=data_key_context(manifest.digest(), bytes.fromhex(file_id))
                )
            except (KeyStoreError, ValueError):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"wrapped key for file {file_id} does not unwrap with this key store",
                )
        directory = checkpoint_dir(self._blob_dir, manifest.digest())
        for entry in manifest.files:
            blob = directory / entry.ciphertext_name
            size = blob.stat().st_size if blob.is_file() else None
            if size != entry.ciphertext_size:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"ciphertext of {entry.path!r} missing or wrong size in {directory}",
                )
        try:
            record = await asyncio.to_thread(
                self._store.add_model_version,
                manifest=bytes(request.manifest),
                manifest_signature=bytes(request.manifest_signature),
                manifest_digest=manifest.digest(),
                name=manifest.model_name,
                version=manifest.model_version,
                risk_tier=manifest.risk_tier,
                file_count=len(manifest.files),
                plaintext_bytes=sum(f.plaintext_size for f in manifest.files),
                wrapped_data_keys=dict(request.wrapped_data_keys),
                now=self._now(),
            )
        except ModelVersionExists:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "model version already registered")
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return model_message(record)

    @audited()
    async def ListModelVersions(
        self, request: operator_pb2.ListModelVersionsRequest, context: Context
    ) -> operator_pb2.ListModelVersionsResponse:
        models = await asyncio.to_thread(self._store.list_model_versions)
        return operator_pb2.ListModelVersionsResponse(models=[model_message(m) for m in models])

    @audited("manifest_digest")
    async def GetModelVersion(
        self, request: operator_pb2.GetModelVersionRequest, context: Context
    ) -> operator_pb2.ModelVersion:
        model = await asyncio.to_thread(
            self._store.get_model_version, bytes(request.manifest_digest)
        )
        if model is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such model version")
        return model_message(model)

    @audited("host_id", "manifest_digest")
    async def ListReleases(
        self, request: operator_pb2.ListReleasesRequest, context: Context
    ) -> operator_pb2.ListReleasesResponse:
        releases = await asyncio.to_thread(
            self._store.list_releases,
            host_id=request.host_id or None,
            manifest_digest=bytes(request.manifest_digest) or None,
        )
        return operator_pb2.ListReleasesResponse(releases=[release_message(r) for r in releases])

    @audited("host_id", details=("reason",))
    async def QuarantineHost(
        self, request: operator_pb2.QuarantineHostRequest, context: Context
    ) -> operator_pb2.HostSummary:
        if not request.reason or len(request.reason) > TEXT_LIMIT:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "reason: required")
        quarantine = functools.partial(
            self._store.quarantine_host_transition,
            request.host_id,
            reason=request.reason,
            now=self._now(),
        )
        try:
            quarantined = await self._host_watch.apply(
                request.host_id, quarantine, cause="quarantine"
            )
        except HostNotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no host {request.host_id!r}")
        # The host's open stream revokes its releases at once instead of next round.
        self._open_streams.wake(request.host_id)
        return host_summary(quarantined.host)
