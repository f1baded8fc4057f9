"""The agent's IMA list reader: where entry N starts, and when it sends the whole list."""

from __future__ import annotations

import hashlib
from pathlib import Path

from agent.collectors.ima_log import entry_offset, read_ima_log
from verifier.evidence.tpm.ima import ImaEntry
from verifier.evidence.tpm.ima_encode import build_entry, encode_binary


def _entries(count: int, template: str = "ima-ng") -> list[ImaEntry]:
    alg = "sha1" if template == "ima" else "sha256"
    return [
        build_entry(
            i,
            10,
            bytes(20),
            template,
            digest_alg=alg,
            digest=hashlib.new(alg, b"%d" % i).digest(),
            name=f"/usr/bin/tool-{i}",
        )
        for i in range(count)
    ]


def test_offsets_are_entry_boundaries() -> None:
    entries = _entries(5)
    raw = encode_binary(entries)
    for n in range(6):
        assert entry_offset(raw, n) == len(encode_binary(entries[:n]))
    assert entry_offset(raw, 6) is None, "past the end: the list is shorter than asked"


def test_what_cannot_be_framed_is_sent_whole(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy"
    legacy.write_bytes(encode_binary(_entries(3, "ima")))
    sent = read_ima_log(legacy, 2)
    assert (sent.first_entry, sent.entries) == (0, legacy.read_bytes())
    rebooted = tmp_path / "short"
    rebooted.write_bytes(encode_binary(_entries(2)))
    sent = read_ima_log(rebooted, 5)
    assert (sent.first_entry, sent.entries) == (0, rebooted.read_bytes())


def test_a_chunk_from_entry_n(tmp_path: Path) -> None:
    path = tmp_path / "list"
    entries = _entries(4)
    path.write_bytes(encode_binary(entries))
    sent = read_ima_log(path, 3)
    assert sent.first_entry == 3
    assert sent.entries == encode_binary(entries)[len(encode_binary(entries[:3])) :]


def test_a_missing_list_says_why(tmp_path: Path) -> None:
    sent = read_ima_log(tmp_path / "absent", 0)
    assert sent.unavailable.startswith("no IMA list at") and not sent.entries
