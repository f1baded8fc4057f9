"""The agent's answer to an SnpRequest: from configfs-tsm or the simulator, or why not.

``FakeConfigfs`` stands in for the kernel's configfs: a plain temporary directory
whose entries the test fills with pre-written ``provider``, ``generation``,
``outblob`` and ``auxblob`` files when the collector makes one (configfs does
that itself), whose ``generation`` counts writes as the kernel's does, and whose
entries are removed with their files (configfs's rmdir does that). It is no
kernel: it shows what the collector does with each answer a kernel can give.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.collectors import snp as snp_module
from agent.collectors.snp import BoundedSnpCollector, snp_evidence_message
from agent.collectors.snp_certtable import (
    ASK_GUID,
    VCEK_GUID,
    VLEK_GUID,
    CertTableError,
    der_to_pem,
    parse_cert_table,
)
from agent.collectors.snp_tsm import ConfigfsTsm, TsmReport, TsmUnavailable, tsm_report
from agent.collectors.tpm import Quote
from agent.config import AgentConfig
from agent.daemon import Agent
from devsim.snp import SnpHost, create_snp_host
from verifier.evidence.snp.appraise import check_report_data
from verifier.evidence.snp.authenticate import authenticate_report
from verifier.evidence.snp.certs import load_certificates
from verifier.evidence.snp.chain import load_amd_roots
from verifier.evidence.snp.report import parse_report
from verifier.evidence.snp.tcb import ProductLine
from weightgate.cvm_binding import snp_report_data
from weightgate.v1 import attestation_pb2, common_pb2

NONCE = bytes(range(32))
ATTEST = b"\xffTCG" + bytes(60)
REPORT_DATA = snp_report_data(NONCE, ATTEST)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> SnpHost:
    return create_snp_host(tmp_path_factory.mktemp("snp") / "host")


@dataclass
class FakeConfigfs(ConfigfsTsm):
    """configfs-tsm played by a temporary directory (see the module docstring)."""

    root: Path
    outblob: bytes = b""
    auxblob: bytes | None = b""  # None: the kernel has no auxblob attribute
    provider: bytes | None = b"sev_guest\n"  # None: no provider attribute
    races: int = 0  # this many attempts see another writer during outblob's read
    made: list[Path] = field(default_factory=list)
    inblobs: list[bytes] = field(default_factory=list)

    def make_entry(self) -> Path:
        entry = super().make_entry()
        self.made.append(entry)
        files = {"generation": b"0\n", "outblob": self.outblob, "auxblob": self.auxblob}
        files["provider"] = self.provider
        for name, data in files.items():
            if data is not None:
                (entry / name).write_bytes(data)
        return entry

    def remove_entry(self, entry: Path) -> None:
        shutil.rmtree(entry)

    def _bump(self, entry: Path) -> None:
        generation = entry / "generation"
        generation.write_bytes(b"%d\n" % (int(generation.read_bytes()) + 1))

    def write(self, path: Path, data: bytes) -> None:
        super().write(path, data)
        self.inblobs.append(data)
        self._bump(path.parent)

    def read(self, path: Path, limit: int) -> bytes:
        data = super().read(path, limit)
        if path.name == "outblob" and self.races > 0:
            self.races -= 1
            self._bump(path.parent)  # someone wrote inblob while the report was made
        return data


@pytest.fixture
def configfs(tmp_path: Path, host: SnpHost) -> FakeConfigfs:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    return FakeConfigfs(root, outblob=host.report(REPORT_DATA), auxblob=host.certificate_table())


def message_from(configfs: FakeConfigfs) -> attestation_pb2.SnpEvidence:
    got = tsm_report(configfs, REPORT_DATA)
    if isinstance(got, TsmUnavailable):
        return attestation_pb2.SnpEvidence(unavailable=got.reason)
    return snp_module._message(got)


def assert_authenticates(host: SnpHost, message: attestation_pb2.SnpEvidence) -> None:
    chain = load_certificates(message.cert_chain)
    roots = load_amd_roots(chain[1:], pins={ProductLine(host.product): host.ark_sha256})
    auth = authenticate_report(
        parse_report(message.report),
        key_certificate=load_certificates(message.vcek)[0],
        intermediates=chain[:1],
        roots=roots,
        at=datetime.now(UTC),
    )
    assert check_report_data(REPORT_DATA, auth) == []


# --- configfs-tsm ----------------------------------------------------------------------


def test_tsm_report_and_certificates_are_sent(host: SnpHost, configfs: FakeConfigfs) -> None:
    message = message_from(configfs)
    assert message.unavailable == ""
    assert message.report == configfs.outblob
    assert message.vcek == host.vcek_der
    assert message.cert_chain == host.cert_chain_pem  # ASK then ARK, DER armored as PEM
    assert configfs.inblobs == [REPORT_DATA]
    assert_authenticates(host, message)


def test_the_entry_is_fresh_and_always_removed(configfs: FakeConfigfs) -> None:
    message_from(configfs)
    configfs.provider = None
    message_from(configfs)
    assert len(set(configfs.made)) == 2
    assert list(configfs.root.iterdir()) == []


def test_one_generation_race_is_retried_on_a_new_entry(configfs: FakeConfigfs) -> None:
    configfs.races = 1
    message = message_from(configfs)
    assert message.unavailable == ""
    assert len(configfs.made) == 2
    assert list(configfs.root.iterdir()) == []


def test_a_second_race_is_unavailable(configfs: FakeConfigfs) -> None:
    configfs.races = 2
    message = message_from(configfs)
    assert "another writer raced the configfs-tsm report entry twice" in message.unavailable
    assert "generation 0 -> 1 -> 2" in message.unavailable
    assert not message.report
    assert list(configfs.root.iterdir()) == []


def test_missing_provider_is_unavailable(configfs: FakeConfigfs) -> None:
    configfs.provider = None
    message = message_from(configfs)
    assert message.unavailable == "configfs-tsm entry has no provider attribute"
    assert configfs.inblobs == []  # nothing written to an entry of unknown kind


def test_tdx_provider_is_unavailable(configfs: FakeConfigfs) -> None:
    configfs.provider = b"tdx_guest\n"
    message = message_from(configfs)
    assert "provider is 'tdx_guest', not 'sev_guest'" in message.unavailable


def test_truncated_auxblob_is_unavailable(configfs: FakeConfigfs) -> None:
    assert configfs.auxblob is not None
    configfs.auxblob = configfs.auxblob[:40]  # cut inside the entry table
    message = message_from(configfs)
    assert "auxblob: certificate table truncated" in message.unavailable
    assert not message.report


def test_auxblob_cut_inside_a_certificate_is_unavailable(configfs: FakeConfigfs) -> None:
    assert configfs.auxblob is not None
    configfs.auxblob = configfs.auxblob[:-10]  # the table is whole, the ARK is not
    message = message_from(configfs)
    assert "ARK at offset" in message.unavailable and "outside" in message.unavailable


@pytest.mark.parametrize("auxblob", [b"", None])
def test_no_certificates_from_the_host_still_sends_the_report(
    configfs: FakeConfigfs, auxblob: bytes | None
) -> None:
    configfs.auxblob = auxblob
    message = message_from(configfs)
    assert message.unavailable == ""
    assert message.report == configfs.outblob
    assert not message.vcek and not message.cert_chain


def test_outblob_of_the_wrong_size_is_unavailable(configfs: FakeConfigfs) -> None:
    configfs.outblob = configfs.outblob[:1000]
    assert "outblob is 1000 bytes, not a 1184-byte report" in message_from(configfs).unavailable


def test_garbage_generation_is_unavailable(configfs: FakeConfigfs) -> None:
    original = configfs.make_entry

    def make_entry() -> Path:
        entry = original()
        (entry / "generation").write_bytes(b"lots\n")
        return entry

    configfs.make_entry = make_entry  # type: ignore[method-assign]
    assert "generation b'lots' is not a number" in message_from(configfs).unavailable


def test_a_host_without_configfs_tsm_says_why(tmp_path: Path) -> None:
    message = snp_evidence_message(
        source="tsm", tsm_dir=tmp_path / "none", simulator_dir=None, report_data=REPORT_DATA
    )
    assert "no configfs-tsm report directory" in message.unavailable
    assert str(tmp_path / "none") in message.unavailable


def test_a_plain_directory_is_no_configfs_and_is_left_clean(tmp_path: Path) -> None:
    message = snp_evidence_message(
        source="tsm", tsm_dir=tmp_path, simulator_dir=None, report_data=REPORT_DATA
    )
    assert message.unavailable == "configfs-tsm entry has no provider attribute"
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_tsm_directory_is_unavailable(tmp_path: Path) -> None:
    class Refusing(ConfigfsTsm):
        def make_entry(self) -> Path:
            raise PermissionError(13, "Permission denied")

    got = tsm_report(Refusing(tmp_path), REPORT_DATA)
    assert isinstance(got, TsmUnavailable)
    assert (
        got.reason == f"cannot create a configfs-tsm report entry in {tmp_path}: Permission denied"
    )


# --- the GHCB certificate table -------------------------------------------------------


def table(*entries: tuple[uuid.UUID, int, int], tail: bytes = b"") -> bytes:
    head = b"".join(struct.pack("<16sII", g.bytes, o, n) for g, o, n in entries)
    return head + bytes(24) + tail


def test_unknown_entries_are_skipped_and_bounds_checked() -> None:
    crl = uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea")
    parsed = parse_cert_table(table((crl, 72, 2), (VCEK_GUID, 74, 3), tail=b"xxabc"))
    assert parsed.vcek == b"abc" and parsed.ask is None and parsed.vlek is None


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (table((VCEK_GUID, 24, 1), tail=b"x"), "outside"),
        (table((VCEK_GUID, 48, 0), tail=b"x"), "outside"),
        (table((VCEK_GUID, 48, 2**32 - 1), tail=b"x"), "outside"),
        (table((VCEK_GUID, 72, 1), (VCEK_GUID, 72, 1), tail=b"x"), "twice"),
        (table(*[(uuid.uuid4(), 0, 1)] * 65), "over 64 entries"),
        (bytes(23), "truncated"),
        (b"\x01" * 200, "truncated"),
        (bytes(64 * 1024 + 1), "at most 65536"),
    ],
    ids=[
        "points-into-table", "empty", "past-end", "duplicate", "too-many", "no-entry",
        "no-terminator", "too-large",
    ],
)  # fmt: skip
def test_malformed_tables_are_refused(blob: bytes, message: str) -> None:
    with pytest.raises(CertTableError, match=message):
        parse_cert_table(blob)


def test_vlek_signed_report_gets_the_vlek(host: SnpHost) -> None:
    report = bytearray(host.report(REPORT_DATA))
    report[0x048] |= 1 << 2  # SIGNING_KEY = VLEK
    certs = b"VCEKVLEKASVK"
    aux = table((VCEK_GUID, 96, 4), (VLEK_GUID, 100, 4), (ASK_GUID, 104, 4), tail=certs)
    message = snp_module._message(TsmReport(report=bytes(report), auxblob=aux))
    assert message.vcek == b"VLEK"
    assert message.cert_chain == der_to_pem(b"ASVK")


def test_pem_entries_pass_through() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert der_to_pem(pem) == pem


# --- the other sources ------------------------------------------------------------------


def test_off_says_so() -> None:
    message = snp_evidence_message(
        source="off", tsm_dir=Path("/nonexistent"), simulator_dir=None, report_data=REPORT_DATA
    )
    assert (
        message.unavailable == 'SNP evidence is switched off on this agent (snp_evidence = "off")'
    )


def test_simulator_answers_like_configfs(host: SnpHost) -> None:
    message = snp_evidence_message(
        source="simulator", tsm_dir=Path("/nonexistent"), simulator_dir=host.directory,
        report_data=REPORT_DATA,
    )  # fmt: skip
    assert message.unavailable == ""
    assert parse_report(message.report).report_data == REPORT_DATA
    assert_authenticates(host, message)


def test_a_missing_simulated_host_is_unavailable(tmp_path: Path) -> None:
    message = snp_evidence_message(
        source="simulator", tsm_dir=Path("/nonexistent"), simulator_dir=tmp_path,
        report_data=REPORT_DATA,
    )  # fmt: skip
    assert message.unavailable.startswith("simulated SNP host unavailable:")
    assert "host.json: missing" in message.unavailable


def test_short_report_data_is_unavailable(host: SnpHost) -> None:
    for source in ("tsm", "simulator"):
        message = snp_evidence_message(
            source=source, tsm_dir=Path("/nonexistent"),
            simulator_dir=host.directory, report_data=b"x" * 32,
        )  # fmt: skip
        assert message.unavailable == "REPORT_DATA of 32 bytes, not 64"


# --- bounded: a stuck firmware request holds no round hostage --------------------------


@pytest.fixture
def stuck(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    release = threading.Event()

    def blocking(**_: object) -> attestation_pb2.SnpEvidence:
        release.wait(10)
        return attestation_pb2.SnpEvidence(report=b"late")

    monkeypatch.setattr(snp_module, "snp_evidence_message", blocking)
    yield release
    release.set()


def test_timeout_then_no_stacking_then_recovery(stuck: threading.Event) -> None:
    collector = BoundedSnpCollector(
        source="tsm", tsm_dir=Path("/x"), simulator_dir=None, timeout_seconds=0.05
    )

    async def scenario() -> list[attestation_pb2.SnpEvidence]:
        first = await collector.collect(report_data=REPORT_DATA)
        second = await collector.collect(report_data=REPORT_DATA)
        stuck.set()
        await asyncio.sleep(0.2)
        third = await collector.collect(report_data=REPORT_DATA)
        return [first, second, third]

    first, second, third = asyncio.run(scenario())
    assert first.unavailable == "SNP report request did not finish within 0.05 s"
    assert "the previous SNP report request has not returned" in second.unavailable
    assert third.report == b"late"


# --- the daemon: collected after the quote, over the quote's bytes ----------------------


class QuotingTpm:
    """Only what Agent._evidence uses of a Tpm: one quote with fixed bytes."""

    def __init__(self, attest: bytes) -> None:
        self.attest = attest

    def quote(self, **_: object) -> Quote:
        return Quote(attest=self.attest, signature=b"sig", pcrs={"sha256": {0: bytes(32)}})


def agent_for(host: SnpHost, tmp_path: Path, attest: bytes) -> Agent:
    config = AgentConfig(
        host_id="node", verifier="127.0.0.1:1", tcti="none", state_dir=tmp_path, insecure=True,
        gpu_evidence="off", snp_evidence="simulator", snp_simulator=host.directory,
    )  # fmt: skip
    return Agent(config, tpm=QuotingTpm(attest))  # type: ignore[arg-type]


def challenge(*, snp: bool) -> attestation_pb2.Challenge:
    message = attestation_pb2.Challenge(
        challenge_id="c1",
        nonce=NONCE,
        tpm=attestation_pb2.TpmQuoteRequest(
            qualifying_data=b"q" * 32,
            pcr_selection=[common_pb2.PcrSelection(hash_algorithm="sha256", pcrs=[0])],
        ),
    )
    if snp:
        message.snp.SetInParent()
    return message


def run_evidence(agent: Agent, message: attestation_pb2.Challenge) -> attestation_pb2.Evidence:
    return asyncio.run(agent._evidence(message))


def test_daemon_binds_the_report_to_this_rounds_quote(host: SnpHost, tmp_path: Path) -> None:
    attest = b"\xffTCG quote of this round"
    evidence = run_evidence(agent_for(host, tmp_path, attest), challenge(snp=True))
    assert evidence.HasField("snp") and evidence.snp.unavailable == ""
    report = parse_report(evidence.snp.report)
    assert report.report_data == snp_report_data(NONCE, attest)
    assert evidence.tpm.attest == attest


def test_daemon_sends_no_snp_evidence_unasked(host: SnpHost, tmp_path: Path) -> None:
    evidence = run_evidence(agent_for(host, tmp_path, ATTEST), challenge(snp=False))
    assert not evidence.HasField("snp")
