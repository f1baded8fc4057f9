"""Signed audit checkpoints: the statement encoding pinned byte for byte, one-mutation
refusals, and checking a log against checkpoints (rewritten history, truncation)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from verifier.audit.chain import GENESIS, AuditChainBroken, AuditRecord, record_hash, verify_chain
from verifier.audit.checkpoint import (
    DOMAIN,
    STATEMENT_SIZE,
    CheckpointInvalid,
    CheckpointStatement,
    CheckpointStatementError,
    SignedCheckpoint,
    check_records_against,
    encode_statement,
    key_id,
    parse_statement,
    sign_checkpoint,
    verify_checkpoint,
)
from weightgate.checkpoint.signature import SIGNING_CONTEXT

AT = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(200, 232)))
HEAD = bytes(range(32))
# RFC 8410: the DER SubjectPublicKeyInfo of an Ed25519 key is this prefix and the raw key.
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def _sign(tree_size: int = 5, head: bytes = HEAD, key: Ed25519PrivateKey = KEY) -> SignedCheckpoint:
    return sign_checkpoint(
        tree_size=tree_size,
        head_hash=head,
        signed_at=AT,
        sign=key.sign,
        public_key=key.public_key(),
    )


def test_statement_encoding_is_pinned() -> None:
    """Version 1, byte for byte: changing it would orphan every checkpoint auditors kept."""
    raw = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    expected_key_id = hashlib.sha256(ED25519_SPKI_PREFIX + raw).digest()
    assert key_id(KEY.public_key()) == expected_key_id
    assert expected_key_id.hex() == (
        "d5e53ae62b16811a63999a57af6ff84c4dbc35c11479c83c3e869ddeee60cc76"
    )
    checkpoint = _sign()
    assert checkpoint.statement == (
        b"weightgate.audit.checkpoint.v1\x00"
        + bytes.fromhex("0000000000000005")  # tree size, u64
        + HEAD
        + bytes.fromhex("00062f46a99d1240")  # 1740830400123456 us: 2025-03-01T12:00:00.123456Z
        + expected_key_id
    )
    assert len(checkpoint.statement) == STATEMENT_SIZE == 111
    # Ed25519 is deterministic: the signature over the pinned bytes is pinned too.
    assert checkpoint.signature.hex() == (
        "f1d5a37dd9b14619b6a628be9d608175ad6d2267fd711fa7a5b1dfa786445bae"
        "7aadad0cd18ebb5e6ae9a78ab4b3f5214087fb24527c2dff172138abea25620a"
    )
    statement = verify_checkpoint(checkpoint, KEY.public_key()).statement
    assert statement == CheckpointStatement(5, HEAD, AT, expected_key_id)


def test_the_domain_keeps_manifest_signatures_apart() -> None:
    """The same key signs manifests: neither signed message can start like the other."""
    assert not SIGNING_CONTEXT.startswith(DOMAIN)
    assert not DOMAIN.startswith(SIGNING_CONTEXT)
    first_difference = next(
        i for i, (a, b) in enumerate(zip(DOMAIN, SIGNING_CONTEXT, strict=False)) if a != b
    )
    assert first_difference == 11
    # A manifest signature is not a checkpoint signature, even over the same bytes.
    statement = _sign().statement
    manifest_signature = KEY.sign(SIGNING_CONTEXT + statement)
    with pytest.raises(CheckpointInvalid, match="does not verify"):
        verify_checkpoint(SignedCheckpoint(statement, manifest_signature), KEY.public_key())


def test_another_key_is_refused() -> None:
    with pytest.raises(CheckpointInvalid, match="does not verify under the pinned key"):
        verify_checkpoint(_sign(key=OTHER_KEY), KEY.public_key())
    # Signed by the pinned key, but naming another one: not what the key vouched for.
    foreign = encode_statement(CheckpointStatement(5, HEAD, AT, key_id(OTHER_KEY.public_key())))
    with pytest.raises(CheckpointInvalid, match="names another signing key"):
        verify_checkpoint(SignedCheckpoint(foreign, KEY.sign(foreign)), KEY.public_key())


@pytest.mark.parametrize("offset", [0, 30, 31, 38, 39, 70, 71, 78, 79, 110])
def test_any_altered_statement_byte_is_refused(offset: int) -> None:
    """Domain, tree size, head hash, time, key id: one flipped bit each."""
    checkpoint = _sign()
    altered = bytearray(checkpoint.statement)
    altered[offset] ^= 0x01
    with pytest.raises(CheckpointInvalid, match="does not verify"):
        verify_checkpoint(SignedCheckpoint(bytes(altered), checkpoint.signature), KEY.public_key())


def test_altered_or_resized_parts_are_refused() -> None:
    checkpoint = _sign()
    signature = bytearray(checkpoint.signature)
    signature[0] ^= 0x80
    for bad, reason in [
        (replace(checkpoint, signature=bytes(signature)), "does not verify"),
        (replace(checkpoint, signature=checkpoint.signature[:-1]), "signature is 63 bytes"),
        (replace(checkpoint, statement=checkpoint.statement + b"\x00"), "statement is 112 bytes"),
        (replace(checkpoint, statement=b""), "statement is 0 bytes"),
    ]:
        with pytest.raises(CheckpointInvalid, match=reason):
            verify_checkpoint(bad, KEY.public_key())


def test_parse_is_strict() -> None:
    good = _sign().statement
    kid = key_id(KEY.public_key())
    refused = {
        "statement is 110 bytes": good[:-1],
        "not a weightgate audit checkpoint": b"X" + good[1:],
        "tree size": DOMAIN + (2**63).to_bytes(8, "big") + good[39:],
        "genesis hash": DOMAIN + bytes(8) + HEAD + good[71:],
        "out of range": DOMAIN + good[31:71] + (2**63 - 1).to_bytes(8, "big") + kid,
    }
    for reason, data in refused.items():
        with pytest.raises(CheckpointStatementError, match=reason):
            parse_statement(data)
    empty_log = encode_statement(CheckpointStatement(0, GENESIS, AT, kid))
    assert parse_statement(empty_log).tree_size == 0
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_statement(CheckpointStatement(1, HEAD, datetime(2025, 1, 1), kid))


@given(
    tree_size=st.integers(1, 2**63 - 1),
    head=st.binary(min_size=32, max_size=32),
    at=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    kid=st.binary(min_size=32, max_size=32),
)
def test_encode_parse_round_trip(tree_size: int, head: bytes, at: datetime, kid: bytes) -> None:
    statement = CheckpointStatement(tree_size, head, at, kid)
    assert parse_statement(encode_statement(statement)) == statement


# -- checking a log against checkpoints ----------------------------------------------------


def _chain(actors: list[str]) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    previous = GENESIS
    for seq, actor in enumerate(actors, start=1):
        fields = {
            "seq": seq,
            "at": AT + timedelta(seconds=seq),
            "actor": actor,
            "action": "RegisterHost",
            "target": {"host_id": f"h{seq}"},
            "outcome": "ok",
            "details": {},
            "prev_hash": previous,
        }
        previous = record_hash(**fields)  # type: ignore[arg-type]
        records.append(AuditRecord(**fields, hash=previous))  # type: ignore[arg-type]
    return records


def _statement(records: list[AuditRecord], size: int) -> CheckpointStatement:
    signed = _sign(size, records[size - 1].hash)
    return verify_checkpoint(signed, KEY.public_key()).statement


def test_rewritten_history_passes_the_chain_but_not_an_earlier_checkpoint() -> None:
    actors = [f"operator-{n}" for n in range(1, 11)]
    original = _chain(actors)
    at_3, at_6 = _statement(original, 3), _statement(original, 6)
    check_records_against(original, [at_3, at_6])
    # Record 5 edited, then every hash after it (and the head) recomputed.
    rewritten = _chain([*actors[:4], "mallory", *actors[5:]])
    assert verify_chain(rewritten, head=(10, rewritten[-1].hash)) == 10
    with pytest.raises(AuditChainBroken) as broken:
        check_records_against(rewritten, [at_6, at_3])
    assert broken.value.seq == 6
    assert "a record from 4 to 6 was changed after it was signed" in broken.value.reason
    # A checkpoint below the edit still holds; one at the edit itself catches it exactly.
    check_records_against(rewritten, [at_3])
    with pytest.raises(AuditChainBroken) as exact:
        check_records_against(rewritten, [_statement(original, 5)])
    assert exact.value.seq == 5


def test_truncation_below_a_checkpoint_is_caught() -> None:
    records = _chain([f"a{n}" for n in range(8)])
    at_8 = _statement(records, 8)
    truncated = records[:5]
    # Head moved back with the cut: the chain alone cannot tell.
    assert verify_chain(truncated, head=(5, truncated[-1].hash)) == 5
    with pytest.raises(AuditChainBroken, match=r"record 6: missing.*covers 8 records"):
        check_records_against(truncated, [at_8])
    with pytest.raises(AuditChainBroken, match="record 1: missing"):
        check_records_against([], [at_8])


def test_the_empty_log_checkpoint_always_holds() -> None:
    empty = parse_statement(_sign(0, GENESIS).statement)
    check_records_against([], [empty])
    check_records_against(_chain(["a", "b"]), [empty])
