"""The encrypted checkpoint format shared by the verifier (writes) and agents (read).

``format``: the ``.wgc`` segment format; ``manifest``: the canonical, signed description
of a model version; ``signature``: Ed25519 over the manifest bytes; ``decrypt``: writing
verified plaintext to disk.
"""

from weightgate.checkpoint.decrypt import decrypt_checkpoint, decrypt_file
from weightgate.checkpoint.format import (
    DEFAULT_SEGMENT_SIZE,
    CheckpointFormatError,
    DecryptedFile,
    EncryptedFile,
    ManifestSignatureError,
    decrypt_stream,
    encrypt_stream,
)
from weightgate.checkpoint.manifest import Manifest, ManifestFile, manifest_digest
from weightgate.checkpoint.signature import sign_manifest, verify_manifest

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "CheckpointFormatError",
    "DecryptedFile",
    "EncryptedFile",
    "Manifest",
    "ManifestFile",
    "ManifestSignatureError",
    "decrypt_checkpoint",
    "decrypt_file",
    "decrypt_stream",
    "encrypt_stream",
    "manifest_digest",
    "sign_manifest",
    "verify_manifest",
]
