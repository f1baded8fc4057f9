"""atheris harness: the C IMA path (``verifier/evidence/tpm/native/``) against the pure-Python path.

Run: ``python tests/fuzz/fuzz_ima_native.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one from the IMA lists in the
shared vectors' ``tpm/manifest.json`` (and the keylime ima-sig/ima-buf extras). The
first input byte picks the template-hash algorithm (bit 0: sha1 or sha256), the
byte order (bit 1) and the format (bit 2: binary, its byte order detected; else
ASCII); the rest is the list. The binary lists of the vectors are seeds too. The
properties:

* parse_ascii / parse_binary give the same entries and offsets, or the same ParseError (code and
  message), with the C path as with ``ima_native._module`` set to None;
* when it parsed: replay_ima (four banks), replay_until_quote (a prefix's value and a
  wrong one as the quote) and appraise_ima_full give the same result or the same
  ImaReplayError on both paths;
* only ParseError and ImaReplayError escape parsing and replay; anything else
  (ValueError from C, a crash) is a finding.

``fuzz_one`` is importable (tests/unit/test_fuzz_smoke_ima_native.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from verifier.evidence.tpm import ima_native
from verifier.evidence.tpm.ima import parse_binary
from verifier.evidence.tpm.ima_ascii import parse_ascii
from verifier.evidence.tpm.ima_policy import RuntimePolicy, appraise_ima_full, load_runtime_policy
from verifier.evidence.tpm.ima_replay import replay_ima, replay_until_quote

_BANKS = ("sha1", "sha256", "sha384", "sha512")
_NATIVE = ima_native._module


@functools.cache
def _policy() -> RuntimePolicy:
    doc = {
        "version": 1,
        "digests": {"boot_aggregate": ["00" * 20], "/usr/bin/sh": ["sha256:" + "00" * 32]},
        "excludes": ["/tmp/.*"],
        "keyrings": {".ima": ["sha256:" + "11" * 32]},
        "buffers": {"kexec-cmdline": ["sha256:" + "22" * 32]},
        "violations": "tolerate",
    }
    return load_runtime_policy(json.dumps(doc))


def _both(run: Callable[[], Any]) -> tuple[Any, ...]:
    """``run``'s outcome on the C path, asserted equal to the Python path's."""
    from tests.fuzz.fuzz_ima import outcome as _outcome  # noqa: PLC0415 - path set by main()

    native = _outcome(run)
    with mock.patch.object(ima_native, "_module", None):
        python = _outcome(run)
    assert native == python, (native[:4], python[:4])
    return native


def fuzz_one(data: bytes) -> None:
    """One input: selector byte, then an ASCII or binary list."""
    if not data or _NATIVE is None:
        return
    hash_alg = "sha256" if data[0] & 1 else "sha1"
    order = "big" if data[0] & 2 else "little"
    body = data[1:]
    if data[0] & 4:  # a binary list (its byte order detected, as the verifier does)
        parsed = _both(lambda: parse_binary(body, template_hash_alg=hash_alg))
    else:
        parsed = _both(lambda: parse_ascii(body, template_hash_alg=hash_alg, byte_order=order))
    if parsed[0] != "ok":
        return
    entries = parsed[1].entries
    alg = {"template_hash_alg": hash_alg}
    whole = _both(lambda: replay_ima(entries, banks=_BANKS, **alg))
    half = _both(lambda: replay_ima(entries[: len(entries) // 2], banks=_BANKS, **alg))
    if half[0] == "ok":
        state = half[1]
        for bank in ("sha1", "sha384"):
            good = {bank: {10: state.value(bank)}, "sha256": {10: state.value("sha256")}}
            wrong = {bank: {10: hashlib.new(bank, state.value(bank)).digest()}}
            for quoted in (good, wrong):
                start = replay_ima((), banks=_BANKS)
                _both(lambda q=quoted, s=start: replay_until_quote(s, entries, q, **alg))
    if whole[0] == "ok" or half[0] == "ok":
        _both(lambda: appraise_ima_full(entries, _policy()))


def seed_inputs() -> Iterator[bytes]:
    """Every ASCII IMA list in the shared vectors, behind both hash selectors."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    tpm = testvectors_root() / "tpm"
    manifest = json.loads((tpm / "manifest.json").read_text())
    lists = [tpm / e["file"] for e in manifest["ima_logs"] if e["format"] == "ascii"]
    lists += [
        tpm / "keylime" / "ima-sig" / n for n in ("ima-buf-keyring.txt", "ima-sig-bad-sigsize.txt")
    ]
    for path in lists:
        for selector in (b"\x00", b"\x03"):
            yield selector + path.read_bytes()
    for item in manifest["ima_logs"]:
        if item["format"] == "binary":
            for selector in (b"\x04", b"\x05"):
                yield selector + (tpm / item["file"]).read_bytes()


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("ima_native", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
