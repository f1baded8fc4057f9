"""atheris harness for the IMA list parsers, replay and appraisal (untrusted bytes).

Run: ``python tests/fuzz/fuzz_ima.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one from the IMA lists in the shared
vectors' ``tpm/manifest.json`` (and the keylime ima-sig/ima-buf extras). The first
input byte picks the parser (even: binary, odd: ASCII). The properties:

* parsing returns or raises ParseError, nothing else;
* a parsed list re-encodes to exactly the input (the parsers accept one encoding);
* replay returns or raises ImaReplayError; appraisal returns a list of reasons
  (signature parsing and verification included: the policy trusts the keylime IMA
  keys when the vectors are present, so real signatures get verified).

``fuzz_one`` is importable so that the unit suite runs the same properties without
atheris (tests/unit/test_fuzz_smoke_ima.py).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.ima import ImaList, parse_binary
from verifier.evidence.tpm.ima_ascii import parse_ascii
from verifier.evidence.tpm.ima_encode import encode_ascii, encode_binary
from verifier.evidence.tpm.ima_policy import RuntimePolicy, appraise_ima, load_runtime_policy
from verifier.evidence.tpm.ima_replay import ImaReplayError, replay_ima

_BANKS = ("sha1", "sha256")


@functools.cache
def _policy() -> RuntimePolicy:
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    keys = sorted((testvectors_root() / "tpm" / "keylime" / "ima-sig").glob("*.pem"))
    doc: dict[str, object] = {
        "version": 1,
        "digests": {"/usr/bin/sh": ["sha256:" + "00" * 32]},
        "excludes": ["/tmp/.*"],
        "keyrings": {".ima": ["sha256:" + "11" * 32]},
        "verification_keys": [k.read_text() for k in keys],
    }
    return load_runtime_policy(json.dumps(doc))


def fuzz_one(data: bytes) -> None:
    """One fuzz input: selector byte, then a binary or ASCII list."""
    if not data:
        return
    body = data[1:]
    parsed: ImaList
    try:
        parsed = parse_ascii(body) if data[0] & 1 else parse_binary(body)
    except ParseError:
        return
    if parsed.format == "ascii":
        assert encode_ascii(parsed.entries) == body
    else:
        assert encode_binary(parsed.entries, byte_order=parsed.byte_order) == body
    assert [e.index for e in parsed.entries] == list(range(len(parsed.entries)))
    try:
        state = replay_ima(parsed.entries, banks=_BANKS)
    except ImaReplayError:
        pass
    else:
        assert state.count == len(parsed.entries)
    reasons = appraise_ima(parsed.entries, _policy())
    assert all(r.code.startswith("tpm.ima.") for r in reasons)


def seed_inputs() -> Iterator[bytes]:
    """Every IMA list in the shared vectors, behind its format's selector byte."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    tpm = testvectors_root() / "tpm"
    manifest = json.loads((tpm / "manifest.json").read_text())
    for entry in manifest["ima_logs"]:
        selector = b"\x01" if entry["format"] == "ascii" else b"\x00"
        yield selector + (tpm / entry["file"]).read_bytes()
    for extra in ("ima-buf-keyring.txt", "ima-sig-bad-sigsize.txt"):
        yield b"\x01" + (tpm / "keylime" / "ima-sig" / extra).read_bytes()


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("ima", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
