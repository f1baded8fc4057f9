"""The C parser of binary IMA lists gives exactly what the Python parser gives.

``parse_binary`` runs twice per input: with the C path (as shipped) and with
``ima_native._module`` patched to None (the pure-Python reference); the outcomes
(entries with offsets, or the ParseError's code and message) must be equal. The C
path may decline a list, never accept one the Python parser rejects.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import pytest

from tests.unit.test_ima_native import _both
from tests.vectors import vectors_dir
from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import ima_native
from verifier.evidence.tpm.ima import ByteOrder, parse_binary
from verifier.evidence.tpm.ima_encode import build_entry, encode_binary

pytestmark = pytest.mark.skipif(not ima_native.active(), reason="the C module is not built")

_MUST_ACCEPT = (  # real binary lists of the kernel's templates: the C path must take them
    "swtpm-ecc-sha256-loc3/ima/binary_runtime_measurements",
    "swtpm-rsa-sha1sha256-loc0/ima/binary_runtime_measurements",
    "swtpm-rsa-sha256sha384-hcrtm-sboff/ima/binary_runtime_measurements",
)  # (tpm2-tss' sml-* fixtures end with bytes no kernel writes: both paths refuse them)


def _accepts(raw: bytes, order: ByteOrder = "little") -> bool:
    found = ima_native.binary_entries(
        raw,
        hash_size=20,
        first_index=0,
        byte_order=order,
        max_entries=1000,
        max_data=1 << 20,
    )
    return found is not None


def _binary_vectors() -> dict[str, bytes]:
    tpm = vectors_dir("tpm")
    items = json.loads((tpm / "manifest.json").read_text())["ima_logs"]
    return {i["file"]: (tpm / i["file"]).read_bytes() for i in items if i["format"] == "binary"}


def test_vectors_same_with_and_without_c() -> None:
    vectors = _binary_vectors()
    assert len(vectors) >= 8
    for name, raw in vectors.items():
        for alg in ("sha1", "sha256"):
            for first_index in (0, 5, 2**63 - 1):
                args = {"template_hash_alg": alg, "first_index": first_index}
                native, python = _both(lambda r=raw, a=args: parse_binary(r, **a))
                assert native == python, (name, alg, first_index)
    for name in _MUST_ACCEPT:
        assert _accepts(vectors[name]), f"the C path declines {name}"


def _sample(order: ByteOrder) -> bytes:
    """Three entries: ima-ng, a signed ima-sig, an ima-buf."""
    entries = [
        build_entry(
            0,
            10,
            bytes(range(20)),
            "ima-ng",
            digest_alg="sha256",
            digest=bytes(32),
            name="/bin/sh",
            byte_order=order,
        ),
        build_entry(
            1,
            10,
            bytes(20),
            "ima-sig",
            digest_alg="sha1",
            digest=b"\x01" * 20,
            name="/a b",
            signature=b"\x03\x02sig",
            byte_order=order,
        ),
        build_entry(
            2,
            9,
            b"\x05" * 20,
            "ima-buf",
            digest_alg="sha512",
            digest=b"\x02" * 64,
            name="kexec-cmdline",
            buffer=b"ro quiet",
            byte_order=order,
        ),
    ]
    return encode_binary(entries, byte_order=order)


@pytest.mark.parametrize("order", ["little", "big"])
def test_every_truncation_and_byte_change_same(order: ByteOrder) -> None:
    raw = _sample(order)
    assert _accepts(raw, order)
    inputs = [raw[:cut] for cut in range(1, len(raw))]
    for at in range(len(raw)):
        for value in {0x00, 0xFF, raw[at] ^ 0x01, raw[at] ^ 0x80}:
            inputs.append(raw[:at] + bytes([value]) + raw[at + 1 :])
    accepted = 0
    for changed in inputs:
        native, python = _both(lambda c=changed: parse_binary(c, byte_order=order))
        assert native == python, changed.hex()
        accepted += _accepts(changed, order)
    assert accepted > 50  # the fast path took many of the changed lists


def _u32(order: ByteOrder) -> Callable[[int], bytes]:
    return struct.Struct("<I" if order == "little" else ">I").pack


# Entries the C path leaves to the Python parser: what each changes in a valid one.
_DECLINED: dict[str, dict[str, Any]] = {
    "empty name": {"name": b""},
    "name without NUL": {"name": b"/bin/sh"},
    "NUL inside the name": {"name": b"/bin\0sh\0"},
    "bytes after the last field": {"tail": b"x"},
    "violation digest of 20 zero bytes": {"digest": bytes(20), "logged": bytes(20)},
    "unknown algorithm": {"alg": b"sha999:\0"},
    "algorithm without colon": {"alg": b"sha256\0\0"},
    "custom template": {"tname": b"ima-xx"},
    "PCR 24": {"pcr": 24},
    "data over the limit": {"max_data": -1},
}


@pytest.mark.parametrize("change", list(_DECLINED))
def test_entries_the_c_path_declines_same(change: str) -> None:
    order: ByteOrder = "little"
    pack = _u32(order)
    field = {
        "name": b"/bin/sh\0",
        "alg": b"sha256:\0",
        "digest": bytes(32),
        "pcr": 10,
        "tname": b"ima-ng",
        "tail": b"",
        "logged": b"\x07" * 20,
        "max_data": 0,
    } | _DECLINED[change]
    name, alg, digest, tname = field["name"], field["alg"], field["digest"], field["tname"]
    d_ng = alg + digest
    data = pack(len(d_ng)) + d_ng + pack(len(name)) + name + field["tail"]
    raw = pack(field["pcr"]) + field["logged"] + pack(len(tname)) + tname + pack(len(data)) + data
    max_data = len(data) + field["max_data"] if field["max_data"] else 1 << 20
    found = ima_native.binary_entries(
        raw, hash_size=20, first_index=0, byte_order=order, max_entries=10, max_data=max_data
    )
    assert found is None, change
    native, python = _both(lambda: parse_binary(raw))
    assert native == python


def test_max_entries_and_index_limits_same() -> None:
    raw = _sample("little")
    assert (
        ima_native.binary_entries(
            raw, hash_size=20, first_index=0, byte_order="little", max_entries=2, max_data=1 << 20
        )
        is None
    )
    for first_index in (-1, 2**63):
        outcome: Any = _both(lambda f=first_index: parse_binary(raw, first_index=f))
        assert outcome[0] == outcome[1]
    with pytest.raises(ParseError):
        parse_binary(raw[:-1])


def test_an_empty_name_field_is_refused() -> None:
    # The kernel writes n-ng as the name and its NUL; an empty field has no NUL.
    pack = _u32("little")
    d_ng = b"sha256:\0" + bytes(32)
    data = pack(len(d_ng)) + d_ng + pack(0)
    raw = pack(10) + b"\7" * 20 + pack(6) + b"ima-ng" + pack(len(data)) + data
    native, python = _both(lambda: parse_binary(raw))
    assert native == python
    assert native[0] == "error" and native[2] == "bad_field", native
