"""The host binding key's lifecycle: keep one, reuse it while it still fits, certify it.

The key's TPM blobs are stored in ``state_dir/binding_key.json``. They are safe on
disk: the private part is encrypted by the TPM's storage root key and the key can
only decrypt in the boot state it was bound to. A stored key is reused when it
covers exactly the PCRs the verifier asks for and the PCRs still hold the values it
was bound to; otherwise a new one is created (the old one could never decrypt again).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from agent.collectors.binding_key import (
    BindingKey,
    Certification,
    certify_binding_key,
    create_binding_key,
)
from agent.collectors.tpm import Tpm, TpmError, normalize_selection
from agent.statefile import write_atomically

BINDING_KEY_FILE = "binding_key.json"


@dataclass(frozen=True)
class CertifiedBindingKey:
    key: BindingKey
    certification: Certification
    created: bool  # False: the stored key was reused


def save_binding_key(state_dir: Path, key: BindingKey) -> None:
    doc = {
        "private": key.private.hex(),
        "public": key.public.hex(),
        "pcr_selection": {bank: list(indices) for bank, indices in key.pcr_selection.items()},
        "pcr_digest": key.pcr_digest.hex(),
    }
    write_atomically(state_dir, BINDING_KEY_FILE, json.dumps(doc, indent=2).encode())


def load_binding_key(state_dir: Path) -> BindingKey | None:
    """The stored key, or None when there is none or the file is unreadable."""
    try:
        doc = json.loads((state_dir / BINDING_KEY_FILE).read_text())
        selection = {
            str(bank): tuple(int(i) for i in indices)
            for bank, indices in doc["pcr_selection"].items()
        }
        return BindingKey(
            private=bytes.fromhex(doc["private"]),
            public=bytes.fromhex(doc["public"]),
            pcr_selection=MappingProxyType(selection),
            pcr_digest=bytes.fromhex(doc["pcr_digest"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # corrupt: a new key is as good (the verifier certifies it again)


def _same_selection(key: BindingKey, wanted: Mapping[str, Sequence[int]]) -> bool:
    ours = {bank: tuple(indices) for bank, indices in key.pcr_selection.items()}
    return ours == {bank: tuple(indices) for bank, indices in wanted.items()}


def still_bound(tpm: Tpm, key: BindingKey) -> bool:
    """Whether the PCRs still hold the values ``key`` was bound to (so it can decrypt)."""
    values = tpm.read_pcrs(key.pcr_selection)
    digest = hashlib.sha256(
        b"".join(values[bank][i] for bank, indices in key.pcr_selection.items() for i in indices)
    ).digest()
    return digest == key.pcr_digest


def ensure_certified_binding_key(
    tpm: Tpm,
    state_dir: Path,
    *,
    pcr_selection: Mapping[str, Sequence[int]],
    ak_handle: int,
    qualifying_data: bytes,
) -> CertifiedBindingKey:
    """Reuse the stored key if it covers ``pcr_selection`` and is still bound to the
    current PCR values, else create and store a new one; then TPM2_Certify it with
    the AK over ``qualifying_data``. Blocking (TPM work): run it in a thread."""
    wanted = normalize_selection(pcr_selection)
    if not wanted:
        raise TpmError("the verifier asked for a binding key over no PCRs")
    key = load_binding_key(state_dir)
    created = False
    if key is None or not _same_selection(key, wanted) or not still_bound(tpm, key):
        key = create_binding_key(tpm, pcr_selection=wanted)
        save_binding_key(state_dir, key)
        created = True
    certification = certify_binding_key(
        tpm, key, ak_handle=ak_handle, qualifying_data=qualifying_data
    )
    return CertifiedBindingKey(key=key, certification=certification, created=created)
