"""Opening a KeyRelease: everything that must hold before a released key is used.

Nothing here writes to disk; the data keys come back as ``bytearray`` for the
caller to wipe once the weights are decrypted (see ``agent.keyunwrap`` on what
Python can and cannot guarantee about erasing them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.binding import load_binding_key
from agent.collectors.binding_key import unwrap_transport_key
from agent.keyunwrap import KeyUnwrapError, unwrap_data_keys, wipe
from agent.tpmwork import TpmWorker
from weightgate.checkpoint import CheckpointFormatError, Manifest, manifest_digest, verify_manifest
from weightgate.v1 import attestation_pb2

_CONTEXT_LABEL = b"weightgate/v1/release"


def release_context(host_id: str, release_id: str, digest: bytes) -> bytes:
    """The AAD context of ``wrapped_data_keys`` (attestation.proto, KeyRelease):
    ``"weightgate/v1/release" 0x00 host_id 0x00 release_id 0x00 manifest_digest``."""
    return b"\x00".join((_CONTEXT_LABEL, host_id.encode(), release_id.encode(), digest))


class ReleaseRejectedError(Exception):
    """A KeyRelease we will not use; ``code`` names why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass
class OpenedRelease:
    manifest: Manifest
    keys: dict[bytes, bytearray]  # file id -> data key, one per manifest file


async def open_release(
    release: attestation_pb2.KeyRelease,
    *,
    expected_digest: bytes,
    host_id: str,
    state_dir: Path,
    tpm: TpmWorker,
    signing_key: Ed25519PublicKey,
) -> OpenedRelease:
    """Checks, in order:
      1. the manifest's signature under the pinned verifier key, then its canonical
         parse (``verify_manifest``);
      2. SHA-256 of the manifest bytes equals the digest this agent asked for;
      3. the TPM decrypts the transport key with the stored binding key (TpmError,
         BOOT_STATE_CHANGED among them, propagates);
      4. the data keys authenticate under the transport key and this host's,
         release's and manifest's context;
      5. there is a key for every file of the manifest.
    Raises ReleaseRejectedError (with a code) for 1, 2, 4, 5 and a missing binding key.
    """
    try:
        manifest = verify_manifest(
            bytes(release.manifest), bytes(release.manifest_signature), signing_key
        )
    except CheckpointFormatError as e:
        raise ReleaseRejectedError(e.code, str(e)) from e
    if manifest_digest(bytes(release.manifest)) != expected_digest:
        raise ReleaseRejectedError(
            "release.manifest_mismatch", "the released manifest is not the one requested"
        )
    key = load_binding_key(state_dir)
    if key is None:
        raise ReleaseRejectedError("release.no_binding_key", "no binding key on this host")
    transport = bytearray(
        await tpm.call(unwrap_transport_key, tpm.tpm, key, bytes(release.encrypted_transport_key))
    )
    context = release_context(host_id, release.release_id, expected_digest)
    try:
        named = unwrap_data_keys(transport, bytes(release.wrapped_data_keys), context)
    except KeyUnwrapError as e:
        raise ReleaseRejectedError("release.keys_invalid", str(e)) from e
    finally:
        wipe(transport)
    keys: dict[bytes, bytearray] = {}
    try:
        for entry in manifest.files:
            data_key = named.get(entry.file_id.hex())
            if data_key is None:
                raise ReleaseRejectedError("release.key_missing", f"no data key for {entry.path}")
            keys[entry.file_id] = bytearray(data_key)
    except ReleaseRejectedError:
        for k in keys.values():
            wipe(k)
        raise
    finally:
        named.clear()
    return OpenedRelease(manifest=manifest, keys=keys)
