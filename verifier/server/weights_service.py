"""Weights servicer: streams ciphertext of registered checkpoints from the blob dir.

Ciphertext is useless without keys, so serving it needs no gate beyond an agent
certificate (verifier.authz) and knowing the model version; offsets make an
interrupted download resumable.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from verifier.authz import WEIGHTS, Authorizer, method_name
from verifier.store import Store
from weightgate.checkpoint.manifest import Manifest
from weightgate.v1 import weights_pb2, weights_pb2_grpc

CHUNK_BYTES = 1024 * 1024
FILE_ID = re.compile(r"[0-9a-f]{32}")
FETCH = method_name(WEIGHTS, "FetchCiphertext")

Context = grpc.aio.ServicerContext[object, object]


def checkpoint_dir(blob_dir: Path, manifest_digest: bytes) -> Path:
    return blob_dir / manifest_digest.hex()


class WeightsService(weights_pb2_grpc.WeightsServicer):
    def __init__(self, store: Store, blob_dir: Path, *, authz: Authorizer) -> None:
        self._store = store
        self._blob_dir = blob_dir
        self._authz = authz

    async def FetchCiphertext(
        self, request: weights_pb2.FetchCiphertextRequest, context: Context
    ) -> AsyncIterator[weights_pb2.CiphertextChunk]:
        await self._authz.require(context, FETCH)
        digest = bytes(request.manifest_digest)
        if len(digest) != 32 or not FILE_ID.fullmatch(request.file_id):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "need a 32-byte digest and a hex file id"
            )
        model = await asyncio.to_thread(self._store.get_model_version, digest)
        if model is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such model version")
        manifest = Manifest.from_bytes(model.manifest)
        entry = next((f for f in manifest.files if f.file_id.hex() == request.file_id), None)
        if entry is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such file in this model version")
        if request.offset > entry.ciphertext_size:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, "offset beyond the end of the file")
        path = checkpoint_dir(self._blob_dir, digest) / entry.ciphertext_name
        offset = request.offset
        with path.open("rb") as blob:
            blob.seek(offset)
            while offset < entry.ciphertext_size:
                data = await asyncio.to_thread(
                    blob.read, min(CHUNK_BYTES, entry.ciphertext_size - offset)
                )
                if not data:
                    await context.abort(grpc.StatusCode.DATA_LOSS, "ciphertext file is short")
                yield weights_pb2.CiphertextChunk(offset=offset, data=data)
                offset += len(data)
