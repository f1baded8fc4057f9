"""Signed checkpoints of the audit chain: "the log had N records, ending in hash H, at T".

A hash chain alone only shows that the stored records agree with each other:
whoever can write the database can edit a record and recompute every later
hash and the head, and the edited log verifies again. A checkpoint is signed
by the verifier's key, which the database does not hold; an auditor who keeps
one (or pins the key and reads them back) catches any rewrite of the records
it covers: the record at seq N no longer carries H.

Statement (version 1), 111 bytes, integers big-endian::

    b"weightgate.audit.checkpoint.v1\\x00"   31 bytes, the domain
    tree_size    u64    records covered: seq 1..tree_size (0: the empty log)
    head_hash    32     hash of record tree_size (GENESIS when tree_size is 0)
    signed_at    i64    microseconds since 1970-01-01T00:00:00Z
    key_id       32     SHA-256 of the signing key's DER SubjectPublicKeyInfo

The signature is Ed25519 over exactly these bytes, by the key that also signs
model manifests (verifier.keystore). Domain separation keeps the two uses
apart: a manifest signature covers ``b"weightgate.checkpoint.manifest.v1\\x00"
|| manifest`` (weightgate.checkpoint.signature.SIGNING_CONTEXT), which differs
from this domain at byte 11 ("c" against "a"), so neither signed message can
ever be read as the other, whatever follows the prefix.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from verifier.audit.chain import GENESIS, HASH_SIZE, AuditChainBroken, AuditRecord, micros

DOMAIN: Final = b"weightgate.audit.checkpoint.v1\x00"
_FIELDS: Final = struct.Struct(f">Q{HASH_SIZE}sq{HASH_SIZE}s")
STATEMENT_SIZE: Final = len(DOMAIN) + _FIELDS.size
SIGNATURE_SIZE: Final = 64  # Ed25519
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_SEQ: Final = 2**63 - 1  # both databases keep seq in a signed BIGINT


class CheckpointStatementError(ValueError):
    """Bytes that are not a version-1 checkpoint statement."""


class CheckpointInvalid(Exception):  # noqa: N818 - named for what it reports
    """A checkpoint whose signature does not verify under the pinned key."""


@dataclass(frozen=True, slots=True)
class CheckpointStatement:
    """The signed claim, as parsed from the statement bytes."""

    tree_size: int
    head_hash: bytes
    signed_at: datetime
    key_id: bytes


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A statement and its signature, as stored and sent; nothing in it is trusted yet."""

    statement: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class VerifiedCheckpoint:
    """A statement whose signature verified under a pinned key (from verify_checkpoint)."""

    statement: CheckpointStatement


def key_id(public_key: Ed25519PublicKey) -> bytes:
    """SHA-256 of the key's DER SubjectPublicKeyInfo: names the key in a statement."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def encode_statement(statement: CheckpointStatement) -> bytes:
    """The version-1 statement bytes described in the module docstring."""
    _check_fields(statement, CheckpointStatementError)
    return DOMAIN + _FIELDS.pack(
        statement.tree_size, statement.head_hash, micros(statement.signed_at), statement.key_id
    )


def _check_fields(statement: CheckpointStatement, error: type[Exception]) -> None:
    if not 0 <= statement.tree_size <= _MAX_SEQ:
        raise error(f"tree size {statement.tree_size} is out of range")
    if len(statement.head_hash) != HASH_SIZE or len(statement.key_id) != HASH_SIZE:
        raise error("head hash and key id must be 32 bytes each")
    # The empty log has exactly one head; any other hash there is a forgery or a bug.
    if statement.tree_size == 0 and statement.head_hash != GENESIS:
        raise error("a checkpoint of the empty log must carry the genesis hash")


def sign_checkpoint(
    *,
    tree_size: int,
    head_hash: bytes,
    signed_at: datetime,
    sign: Callable[[bytes], bytes],
    public_key: Ed25519PublicKey,
) -> SignedCheckpoint:
    """Sign (``sign`` is e.g. ``KeyStore.sign``) a statement of the given chain head.

    ``tree_size`` and ``head_hash`` must come from one read of the chain head,
    so that they describe the same record.
    """
    statement = encode_statement(
        CheckpointStatement(tree_size, head_hash, signed_at, key_id(public_key))
    )
    signature = sign(statement)
    if len(signature) != SIGNATURE_SIZE:
        raise ValueError(f"signer returned {len(signature)} bytes, not an Ed25519 signature")
    return SignedCheckpoint(statement, signature)


def parse_statement(data: bytes) -> CheckpointStatement:
    """Strictly parse statement bytes: exact size, domain, field ranges.

    This does not authenticate anything: use :func:`verify_checkpoint` unless
    the caller says plainly that signatures were not checked.
    """
    if len(data) != STATEMENT_SIZE:
        raise CheckpointStatementError(f"statement is {len(data)} bytes, not {STATEMENT_SIZE}")
    if not data.startswith(DOMAIN):
        raise CheckpointStatementError("not a weightgate audit checkpoint statement (v1)")
    tree_size, head_hash, signed_micros, kid = _FIELDS.unpack(data[len(DOMAIN) :])
    try:
        signed_at = _EPOCH + timedelta(microseconds=signed_micros)
    except OverflowError:
        raise CheckpointStatementError("signing time is out of range") from None
    statement = CheckpointStatement(tree_size, head_hash, signed_at, kid)
    _check_fields(statement, CheckpointStatementError)
    return statement


def verify_checkpoint(
    checkpoint: SignedCheckpoint, public_key: Ed25519PublicKey
) -> VerifiedCheckpoint:
    """Authenticate, then parse. Checks, in order:
      1. the statement is STATEMENT_SIZE bytes (before verifying untrusted input);
      2. the signature is 64 bytes;
      3. Ed25519 over the exact statement bytes verifies under ``public_key``
         (the auditor's pinned key, never one that came with the checkpoint);
      4. the strict parse (:func:`parse_statement`);
      5. the statement names ``public_key`` as its signer (key id).
    Raises CheckpointInvalid for 1-3 and 5, CheckpointStatementError for 4.
    """
    statement, signature = bytes(checkpoint.statement), bytes(checkpoint.signature)
    if len(statement) != STATEMENT_SIZE:
        raise CheckpointInvalid(f"statement is {len(statement)} bytes, not {STATEMENT_SIZE}")
    if len(signature) != SIGNATURE_SIZE:
        raise CheckpointInvalid(f"signature is {len(signature)} bytes, not {SIGNATURE_SIZE}")
    try:
        public_key.verify(signature, statement)
    except InvalidSignature:
        raise CheckpointInvalid("signature does not verify under the pinned key") from None
    parsed = parse_statement(statement)
    if parsed.key_id != key_id(public_key):
        raise CheckpointInvalid("the statement names another signing key")
    return VerifiedCheckpoint(parsed)


def check_records_against(
    records: Sequence[AuditRecord], statements: Iterable[CheckpointStatement]
) -> None:
    """Check the whole chain (seq 1 onwards, oldest first) against checkpoints.

    Run :func:`verify_chain` on ``records`` first: this only compares. For
    each checkpoint, smallest tree size first, the record at seq == tree_size
    must exist and carry the checkpoint's head hash (tree size 0, the empty
    log, always holds). Raises :class:`AuditChainBroken` for the first
    checkpoint that fails: a missing record names the first missing seq; a
    different hash names the checkpoint's tree size, the first position known
    to disagree (the edit itself lies after the last checkpoint that held,
    which the reason names: a rewritten chain carries no trace of where).
    """
    by_seq = {record.seq: record for record in records}
    last = max(by_seq, default=0)
    held = 0
    for statement in sorted(statements, key=lambda s: s.tree_size):
        size = statement.tree_size
        if size == 0:
            continue
        signed = statement.signed_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        record = by_seq.get(size)
        if record is None:
            first_missing = last + 1 if size > last else size
            raise AuditChainBroken(
                first_missing,
                f"missing: the checkpoint signed at {signed} covers {size} records, "
                f"the log ends at {last} (truncated)",
            )
        if record.hash != statement.head_hash:
            raise AuditChainBroken(
                size,
                f"hash differs from the checkpoint signed at {signed}: a record from "
                f"{held + 1} to {size} was changed after it was signed",
            )
        held = max(held, size)
