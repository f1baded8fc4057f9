"""Signed audit checkpoints in the CLI: `weightgate audit checkpoint`, and their part of
`weightgate audit verify`.

An auditor keeps checkpoint files, taken from time to time, outside the
verifier. Checked with the verifier's public key pinned (``weightgate verifier
public-key``), a kept checkpoint catches what the hash chain alone cannot: a
log whose records were edited and whose chain was then recomputed.

Checkpoint file (JSON), the format named by its "format" member::

    {"format": "weightgate.audit.checkpoint.v1", "tree_size": 12,
     "head_hash": HEX, "signed_at": "2025-03-01T12:00:00.000000Z", "key_id": HEX,
     "statement": HEX, "signature": HEX}

Only statement and signature are trusted (after the signature verifies); the
other members are for people to read and must agree with the statement.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from verifier.audit.chain import AuditChainBroken, AuditRecord
from verifier.audit.checkpoint import (
    CheckpointInvalid,
    CheckpointStatement,
    CheckpointStatementError,
    SignedCheckpoint,
    check_records_against,
    key_id,
    parse_statement,
    verify_checkpoint,
)
from verifier.operator_cli import CliError
from weightgate.v1 import operator_pb2, operator_pb2_grpc

RPC_TIMEOUT_SECONDS = 15.0
FILE_FORMAT = "weightgate.audit.checkpoint.v1"
MAX_FILE_BYTES = 64 * 1024  # a checkpoint file is well under 1 KiB
LISTED = 1000  # the verifier's cap on one listing: the newest checkpoints
VERIFIER_LABEL = "listed by the verifier"


class AuditVerifyError(Exception):
    """The log does not match its chain or a checkpoint; the message names where."""


@dataclass(frozen=True, slots=True)
class Sourced:
    """A checkpoint and where it came from, for messages."""

    label: str
    checkpoint: SignedCheckpoint


def _time(statement: CheckpointStatement) -> str:
    return statement.signed_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def checkpoint_document(checkpoint: SignedCheckpoint) -> dict[str, Any]:
    statement = parse_statement(checkpoint.statement)
    return {
        "format": FILE_FORMAT,
        "tree_size": statement.tree_size,
        "head_hash": statement.head_hash.hex(),
        "signed_at": _time(statement),
        "key_id": statement.key_id.hex(),
        "statement": checkpoint.statement.hex(),
        "signature": checkpoint.signature.hex(),
    }


def load_checkpoint_file(path: Path) -> SignedCheckpoint:
    """A kept checkpoint; CliError unless it is one whose readable members match its statement."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        if len(data) > MAX_FILE_BYTES:
            raise ValueError("too large for a checkpoint file")
        document = json.loads(data)
        if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
            raise ValueError(f'not a checkpoint file (no "format": "{FILE_FORMAT}")')
        checkpoint = SignedCheckpoint(
            bytes.fromhex(document["statement"]), bytes.fromhex(document["signature"])
        )
        if checkpoint_document(checkpoint) != document:
            raise ValueError("its readable members disagree with its signed statement")
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{path}: {exc}") from None
    except RecursionError:
        raise CliError(f"{path}: not a checkpoint file (JSON nested too deeply)") from None
    return checkpoint


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The pinned verifier key: the PEM that `weightgate verifier public-key` prints."""
    try:
        key = load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise CliError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CliError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key


def audit_checkpoint(stub: operator_pb2_grpc.OperatorStub, *, out: Path | None) -> str:
    """Ask the verifier to sign its head now; the checkpoint as JSON, or written to ``out``."""
    if out is not None and out.exists():  # before asking: a refused write signs nothing
        raise CliError(f"{out} exists; not overwriting a kept checkpoint")
    message = stub.SignAuditCheckpoint(
        operator_pb2.SignAuditCheckpointRequest(), timeout=RPC_TIMEOUT_SECONDS
    )
    checkpoint = SignedCheckpoint(bytes(message.statement), bytes(message.signature))
    try:
        document = checkpoint_document(checkpoint)
    except CheckpointStatementError as exc:
        raise AuditVerifyError(f"the verifier returned a malformed checkpoint: {exc}") from None
    text = json.dumps(document, indent=2) + "\n"
    if out is None:
        return text.rstrip("\n")
    try:
        with out.open("x") as file:  # never overwrite a checkpoint someone kept
            file.write(text)
    except FileExistsError:
        raise CliError(f"{out} exists; not overwriting a kept checkpoint") from None
    except OSError as exc:
        raise CliError(f"{out}: cannot write: {exc.strerror}") from None
    return (
        f"wrote {out}: audit checkpoint of {document['tree_size']} records, "
        f"head {document['head_hash']}, signed {document['signed_at']}"
    )


def listed_checkpoints(stub: operator_pb2_grpc.OperatorStub) -> list[Sourced]:
    response = stub.ListAuditCheckpoints(
        operator_pb2.ListAuditCheckpointsRequest(limit=LISTED), timeout=RPC_TIMEOUT_SECONDS
    )
    return [
        Sourced(VERIFIER_LABEL, SignedCheckpoint(bytes(m.statement), bytes(m.signature)))
        for m in response.checkpoints
    ]


def check_checkpoints(
    records: Sequence[AuditRecord],
    sources: Sequence[Sourced],
    *,
    public_key: Ed25519PublicKey | None,
) -> str:
    """Check every checkpoint against the whole chain (already verified); a summary line.

    With ``public_key``, each signature is verified first; without, the
    statements are only parsed, and the summary says so.
    """
    statements: list[tuple[str, CheckpointStatement]] = []
    for source in sources:
        try:
            if public_key is None:
                statement = parse_statement(source.checkpoint.statement)
            else:
                statement = verify_checkpoint(source.checkpoint, public_key).statement
        except (CheckpointInvalid, CheckpointStatementError) as exc:
            raise AuditVerifyError(f"checkpoint {source.label}: {exc}") from None
        statements.append((source.label, statement))
    try:
        check_records_against(records, [s for _, s in statements])
    except AuditChainBroken as exc:
        raise AuditVerifyError(f"{exc} (checkpoint {_failing(records, statements)})") from None
    files = sum(1 for s in sources if s.label != VERIFIER_LABEL)
    summary = (
        f"checkpoints: {len(sources)} consistent with the log "
        f"({len(sources) - files} listed by the verifier, {files} from files)"
    )
    if public_key is None:
        return (
            f"{summary}\nWARNING: checkpoint signatures were NOT checked against a pinned key "
            "(no --public-key): they show only that the log agrees with what the verifier "
            "itself stored"
        )
    return f"{summary}, signatures verified with the pinned key {key_id(public_key).hex()}"


def _failing(
    records: Sequence[AuditRecord], statements: list[tuple[str, CheckpointStatement]]
) -> str:
    """Which checkpoint check_records_against refused: the smallest tree size that fails."""
    hashes = {r.seq: r.hash for r in records}
    for label, statement in sorted(statements, key=lambda s: s[1].tree_size):
        size = statement.tree_size
        if size and hashes.get(size) != statement.head_hash:
            return f"{label}, signed at {_time(statement)}, tree size {size}"
    return "unknown"
