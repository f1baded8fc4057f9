"""IMA on the attestation stream, incremental across rounds (real swtpm, real gRPC).

The test plays the kernel: it appends entries to an IMA list and extends PCR10
the way IMA does (SHA-1 bank: the template hash; SHA-256 bank: SHA-256 of the
template data), and answers each challenge with the entries the verifier asks
for. The group's runtime policy is set by proposal (no quorum in this harness).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.collectors.ima_log import read_ima_log
from agent.collectors.tpm import Tpm, TpmError
from tests.integration.test_attestation_flow import (
    Stream,
    codes,
    enroll,
    evidence_for,
    set_reference_from,
)
from tests.verifier_harness import VerifierHarness, running_verifier
from verifier.evidence.tpm.ima import ImaEntry
from verifier.evidence.tpm.ima_encode import build_entry, encode_binary
from weightgate.v1 import attestation_pb2, common_pb2, operator_pb2

GROUP, HOST = "ima", "ima-host"
ALLOWED = hashlib.sha256(b"/usr/bin/a, version 1").digest()


class Kernel:
    """Appends IMA entries and extends PCR10 of the swtpm as the kernel would."""

    def __init__(self, tpm: Tpm, tcti: str, list_path: Path) -> None:
        self.tpm, self.tcti, self.path = tpm, tcti, list_path
        self.entries: list[ImaEntry] = []
        try:
            tpm.read_pcrs({"sha1": [10]})
            self.banks = ("sha1", "sha256")
        except TpmError:
            self.banks = ("sha256",)

    def measure(self, name: str, digest: bytes) -> None:
        index = len(self.entries)
        draft = build_entry(index, 10, bytes(20), "ima-ng", digest_alg="sha256",
                            digest=digest, name=name)  # fmt: skip
        entry = build_entry(index, 10, hashlib.sha1(draft.template_data).digest(), "ima-ng",
                            digest_alg="sha256", digest=digest, name=name)  # fmt: skip
        values = {
            "sha1": entry.template_hash,
            "sha256": hashlib.sha256(entry.template_data).digest(),
        }
        extend = ",".join(f"{bank}={values[bank].hex()}" for bank in self.banks)
        env = os.environ | {"TPM2TOOLS_TCTI": self.tcti}
        subprocess.run(["tpm2_pcrextend", f"10:{extend}"], env=env, check=True, capture_output=True)
        self.entries.append(entry)
        self.path.write_bytes(encode_binary(self.entries))

    def boot_aggregate(self) -> None:
        pcrs = self.tpm.read_pcrs({"sha256": list(range(10))})["sha256"]
        aggregate = hashlib.sha256(b"".join(pcrs[i] for i in range(10))).digest()
        self.measure("boot_aggregate", aggregate)


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, swtpm_factory_module: Any
) -> Iterator[tuple[VerifierHarness, Tpm, Kernel]]:
    process = swtpm_factory_module()
    tpm = Tpm(process.tcti)
    state = tmp_path_factory.mktemp("ima-verifier")
    with running_verifier(state, ek_ca_certificates=process.ek_ca_certificates) as verifier:
        verifier.operator.RegisterHost(operator_pb2.RegisterHostRequest(host_id=HOST, group=GROUP))
        set_reference_from(verifier, tpm, GROUP)
        kernel = Kernel(tpm, process.tcti, state / "binary_runtime_measurements")
        kernel.boot_aggregate()
        kernel.measure("/usr/bin/a", ALLOWED)
        policy = {"version": 1, "digests": {"/usr/bin/a": [f"sha256:{ALLOWED.hex()}"]}}
        change = operator_pb2.ImaPolicyChange(group=GROUP, policy_json=json.dumps(policy).encode())
        verifier.operator.ProposeChange(
            operator_pb2.ProposeChangeRequest(change=operator_pb2.ProposedChange(ima_policy=change))
        )
        yield verifier, tpm, kernel


def _round(stream: Stream, tpm: Tpm, kernel: Kernel) -> tuple[common_pb2.Verdict, int]:
    """Answer one challenge as the agent does: quote, then the list from where asked."""
    challenge = stream.next_challenge()
    assert challenge.HasField("ima")
    assert 10 in [p for s in challenge.tpm.pcr_selection for p in s.pcrs]
    evidence = evidence_for(tpm, challenge)
    evidence.ima.CopyFrom(read_ima_log(kernel.path, challenge.ima.from_entry))
    return stream.answer(evidence), challenge.ima.from_entry


def test_ima_rounds_are_incremental_and_a_violation_is_sticky(
    setup: tuple[VerifierHarness, Tpm, Kernel],
) -> None:
    verifier, tpm, kernel = setup
    stream = Stream(verifier, HOST, enroll(verifier, tpm, HOST))
    try:
        verdict, asked_from = _round(stream, tpm, kernel)
        assert asked_from == 0
        assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
        assert {"tpm.ima.replay", "tpm.ima.policy"} <= set(verdict.checks_run)
        progress = verifier.store.ima_progress(HOST)
        assert progress is not None and progress.entry_count == 2

        kernel.measure("/usr/bin/a", ALLOWED)  # run again: a third, allowed entry
        verdict, asked_from = _round(stream, tpm, kernel)
        assert asked_from == 2, "only the new entries are asked for"
        assert verdict.tier == common_pb2.TIER_AFFIRMING, codes(verdict)
        assert verifier.store.ima_progress(HOST).entry_count == 3

        kernel.measure("/usr/bin/evil", hashlib.sha256(b"evil").digest())
        for _ in range(2):  # the finding does not scroll away with the next chunk
            verdict, asked_from = _round(stream, tpm, kernel)
            assert asked_from == 3
            assert verdict.tier == common_pb2.TIER_CONTRAINDICATED
            assert codes(verdict) == ["tpm.ima.path_unknown"]
            assert "/usr/bin/evil" in verdict.reasons[0].detail
        assert verifier.store.ima_progress(HOST).entry_count == 3

        # A chunk that does not start where the verifier stands is refused...
        challenge = stream.next_challenge()
        evidence = evidence_for(tpm, challenge)
        evidence.ima.CopyFrom(read_ima_log(kernel.path, 1))
        assert codes(stream.answer(evidence)) == ["tpm.ima.out_of_order"]
        # ...and an edited entry breaks the replay against the quoted PCR10.
        challenge = stream.next_challenge()
        evidence = evidence_for(tpm, challenge)
        raw = bytearray(kernel.path.read_bytes())
        raw[-2] ^= 1  # a byte of the last entry's file name
        evidence.ima.CopyFrom(attestation_pb2.ImaLog(entries=bytes(raw), first_entry=0))
        assert codes(stream.answer(evidence)) == ["tpm.ima.template_hash_mismatch"]
    finally:
        stream.close()
