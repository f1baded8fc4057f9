"""The audit fixes of test_service_tpm_audit_fixes.py on the real stream.

The real gRPC server against a live swtpm, as test_ima_stream.py and
test_attestation_flow.py drive it: a PCR-only group's host sends a boot log
whose events were retyped or rewritten (digests kept, so it replays); a host
with an IMA policy reboots and its first chunk starts at the old boot's count;
a made-up IMA entry in PCR11 (not quoted) follows the kept count.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.collectors.ima_log import read_ima_log
from agent.collectors.tpm import Tpm
from tests.integration.test_attestation_flow import (
    Stream,
    codes,
    enroll,
    evidence_for,
    set_reference_from,
)
from tests.integration.test_ima_stream import Kernel
from tests.verifier_harness import VerifierHarness, running_verifier
from verifier.evidence.tpm.event_findings import CHECK_EVENTS
from verifier.evidence.tpm.ima import parse_binary
from verifier.evidence.tpm.ima_encode import encode_binary
from verifier.evidence.tpm.ima_round import CHECK_IMA_POLICY, CHECK_IMA_REPLAY
from weightgate.v1 import common_pb2, operator_pb2

_ALGORITHMS = ((0x0004, "sha1"), (0x000B, "sha256"))
EV_SEPARATOR, EV_IPL, EV_EFI_ACTION = 0x4, 0xD, 0x80000007
BOOT = (
    (0, EV_IPL, b"firmware: audit UEFI"),
    (4, EV_IPL, b"bootloader: shimx64.efi"),
    (7, EV_EFI_ACTION, b"secure boot: enabled"),
    *((pcr, EV_SEPARATOR, bytes(4)) for pcr in range(8)),
)


def _event(pcr: int, kind: int, data: bytes, measured: bytes | None = None) -> bytes:
    """A TCG_PCR_EVENT2 whose digests are over ``measured`` (default: its data)."""
    hashed = data if measured is None else measured
    digests = b"".join(
        struct.pack("<H", a) + hashlib.new(n, hashed).digest() for a, n in _ALGORITHMS
    )
    return (
        struct.pack("<III", pcr, kind, len(_ALGORITHMS))
        + digests
        + struct.pack("<I", len(data))
        + data
    )


def _firmware_log(events: tuple[tuple[int, int, bytes, bytes | None], ...]) -> bytes:
    spec = b"Spec ID Event03\x00" + struct.pack("<IBBBB", 0, 0, 2, 0, 2)
    spec += struct.pack("<I", len(_ALGORITHMS))
    spec += b"".join(struct.pack("<HH", a, hashlib.new(n).digest_size) for a, n in _ALGORITHMS)
    spec += b"\x00"
    header = struct.pack("<II", 0, 0x3) + bytes(20) + struct.pack("<I", len(spec)) + spec
    return header + b"".join(_event(*e) for e in events)


def _boot_log(*, retype: int | None = None, data: bytes | None = None) -> bytes:
    """The log of BOOT, the PCR7 event optionally retyped or rewritten (digests kept)."""
    events: list[tuple[int, int, bytes, bytes | None]] = []
    for pcr, kind, measured in BOOT:
        if pcr == 7 and kind == EV_EFI_ACTION:
            events.append((pcr, retype or kind, data or measured, measured))
        else:
            events.append((pcr, kind, measured, None))
    return _firmware_log(tuple(events))


@pytest.fixture(scope="module")
def boot_setup(
    tmp_path_factory: pytest.TempPathFactory, swtpm_factory_module: Any
) -> Iterator[tuple[VerifierHarness, Tpm, bytes]]:
    process = swtpm_factory_module()
    tpm = Tpm(process.tcti)
    for pcr, _, data in BOOT:
        tpm.extend_pcr(pcr, data)
    state = tmp_path_factory.mktemp("audit-boot")
    with running_verifier(state, ek_ca_certificates=process.ek_ca_certificates) as verifier:
        verifier.operator.RegisterHost(
            operator_pb2.RegisterHostRequest(host_id="boot", group="pcr-only")
        )
        set_reference_from(verifier, tpm, "pcr-only")
        yield verifier, tpm, enroll(verifier, tpm, "boot")


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        pytest.param(_boot_log(), [], id="honest"),
        pytest.param(_boot_log(retype=EV_IPL), ["tpm.eventlog.unexpected_event_type"], id="type"),
        pytest.param(
            _boot_log(data=b"secure boot: disabled"), ["tpm.eventlog.digest_mismatch"], id="data"
        ),
    ],
)
def test_the_stream_checks_the_events_of_a_pcr_only_group(
    boot_setup: tuple[VerifierHarness, Tpm, bytes], log: bytes, expected: list[str]
) -> None:
    verifier, tpm, ak_name = boot_setup
    assert verifier.store.get_boot_reference("pcr-only") is None
    stream = Stream(verifier, "boot", ak_name)
    try:
        challenge = stream.next_challenge()
        evidence = evidence_for(tpm, challenge)
        evidence.boot_log.event_log = log
        verdict = stream.answer(evidence)
    finally:
        stream.close()
    assert "tpm.eventlog.replay" in verdict.checks_run, "every variant replays"
    assert codes(verdict) == expected
    if expected:
        assert verdict.tier == common_pb2.TIER_CONTRAINDICATED
    else:
        assert verdict.tier == common_pb2.TIER_AFFIRMING
        assert CHECK_EVENTS in verdict.checks_run


ALLOWED = hashlib.sha256(b"/usr/bin/a, version 1").digest()


@pytest.fixture(scope="module")
def ima_setup(
    tmp_path_factory: pytest.TempPathFactory, swtpm_factory_module: Any
) -> Iterator[tuple[VerifierHarness, Any, Tpm, Path]]:
    process = swtpm_factory_module()  # our own: this module power-cycles it
    tpm = Tpm(process.tcti)
    state = tmp_path_factory.mktemp("audit-ima")
    with running_verifier(state, ek_ca_certificates=process.ek_ca_certificates) as verifier:
        verifier.operator.RegisterHost(operator_pb2.RegisterHostRequest(host_id="ima", group="ima"))
        set_reference_from(verifier, tpm, "ima")
        policy = {"version": 1, "digests": {"/usr/bin/a": [f"sha256:{ALLOWED.hex()}"]}}
        change = operator_pb2.ImaPolicyChange(group="ima", policy_json=json.dumps(policy).encode())
        verifier.operator.ProposeChange(
            operator_pb2.ProposeChangeRequest(change=operator_pb2.ProposedChange(ima_policy=change))
        )
        yield verifier, process, tpm, state / "binary_runtime_measurements"


def _ima_round(stream: Stream, tpm: Tpm, path: Path) -> tuple[common_pb2.Verdict, int]:
    challenge = stream.next_challenge()
    evidence = evidence_for(tpm, challenge)
    evidence.ima.CopyFrom(read_ima_log(path, challenge.ima.from_entry))
    return stream.answer(evidence), challenge.ima.from_entry


def _boot(tpm: Tpm, process: Any, path: Path, runs: int) -> Kernel:
    kernel = Kernel(tpm, process.tcti, path)
    kernel.boot_aggregate()
    for _ in range(runs):
        kernel.measure("/usr/bin/a", ALLOWED)
    return kernel


def test_the_first_ima_round_after_a_reboot_restarts_the_list(
    ima_setup: tuple[VerifierHarness, Any, Tpm, Path],
) -> None:
    verifier, process, tpm, path = ima_setup
    _boot(tpm, process, path, runs=2)
    stream = Stream(verifier, "ima", enroll(verifier, tpm, "ima"))
    try:
        verdict, asked_from = _ima_round(stream, tpm, path)
        assert (asked_from, verdict.tier) == (0, common_pb2.TIER_AFFIRMING), codes(verdict)
        before = verifier.store.ima_progress("ima")
        assert before is not None and before.entry_count == 3

        process.restart()  # a reboot: resetCount goes up, PCRs and the IMA list start over
        _boot(tpm, process, path, runs=4)  # the new list is longer than the kept count
        verdict, asked_from = _ima_round(stream, tpm, path)
        assert asked_from == 3, "the verifier cannot know of the reboot before the quote"
        assert verdict.tier == common_pb2.TIER_WARNING, codes(verdict)
        assert codes(verdict) == ["tpm.ima.full_list_needed"]
        assert not {CHECK_IMA_REPLAY, CHECK_IMA_POLICY} & set(verdict.checks_run)
        assert verifier.store.ima_progress("ima") == before, "nothing of the new boot is kept"

        # Asked for the whole list, an agent that sends from the old count again is
        # refused: the warning is for the one round the verifier could not know.
        challenge = stream.next_challenge()
        assert challenge.ima.from_entry == 0
        evidence = evidence_for(tpm, challenge)
        evidence.ima.CopyFrom(read_ima_log(path, 3))
        verdict = stream.answer(evidence)
        assert (verdict.tier, codes(verdict)) == (
            common_pb2.TIER_CONTRAINDICATED,
            ["tpm.ima.out_of_order"],
        )

        verdict, asked_from = _ima_round(stream, tpm, path)
        assert asked_from == 0
        assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
        after = verifier.store.ima_progress("ima")
        assert after is not None and after.entry_count == 5
        assert after.reset_count > before.reset_count

        # A made-up entry in PCR11 (not quoted) after the kept count is refused.
        kernel = Kernel(tpm, process.tcti, path)
        kernel.entries = list(parse_binary(path.read_bytes()).entries)
        fake = replace(kernel.entries[-1], index=len(kernel.entries), pcr=11)
        path.write_bytes(encode_binary([*kernel.entries, fake]))
        verdict, asked_from = _ima_round(stream, tpm, path)
        assert asked_from == 5
        assert codes(verdict) == ["tpm.ima.pcr_not_quoted"]
        assert verifier.store.ima_progress("ima").entry_count == 5, "the count did not drift"
    finally:
        stream.close()
