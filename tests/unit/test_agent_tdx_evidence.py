"""The agent's answer to a TdxRequest: a quote from configfs-tsm or the simulator, or why not.

``FakeConfigfs`` stands in for the kernel's configfs: a plain temporary directory
whose entries the test fills with pre-written ``provider`` (``tdx_guest``),
``generation`` and ``outblob`` files when the collector makes one (configfs does
that itself), whose ``generation`` counts writes as the kernel's does, and whose
entries are removed with their files (configfs's rmdir does that). It is no
kernel and no TDX module: it shows what the collector does with each answer the
kernel's tdx_guest provider can give. The quotes in it come from devsim.tdx and
are checked with the verifier's TDX library, the test root pinned explicitly.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from agent.collectors import tdx as tdx_module
from agent.collectors.snp_tsm import TDX_GUEST, ConfigfsTsm, TsmUnavailable, tsm_report
from agent.collectors.tdx import BoundedTdxCollector, tdx_evidence_message
from agent.collectors.tpm import Quote
from agent.config import AgentConfig
from agent.daemon import Agent
from devsim.tdx import TdxGuest, create_tdx_guest
from verifier.evidence.tdx.authenticate import authenticate_quote
from verifier.evidence.tdx.quote import parse_quote
from weightgate.cvm_binding import snp_report_data, tdx_report_data
from weightgate.v1 import attestation_pb2, common_pb2

NONCE = bytes(range(32))
ATTEST = b"\xffTCG" + bytes(60)
REPORT_DATA = tdx_report_data(NONCE, ATTEST)


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> TdxGuest:
    return create_tdx_guest(tmp_path_factory.mktemp("tdx") / "guest")


@dataclass
class FakeConfigfs(ConfigfsTsm):
    """configfs-tsm with the tdx_guest provider, played by a temporary directory."""

    root: Path
    outblob: bytes = b""
    provider: bytes | None = b"tdx_guest\n"  # None: no provider attribute
    auxblob: bytes | None = None  # tdx_guest fills none; a value shows it is not read
    races: int = 0  # this many attempts see another writer during outblob's read
    made: list[Path] = field(default_factory=list)
    inblobs: list[bytes] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)

    def make_entry(self) -> Path:
        entry = super().make_entry()
        self.made.append(entry)
        files = {
            "generation": b"0\n",
            "outblob": self.outblob,
            "provider": self.provider,
            "auxblob": self.auxblob,
        }
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
        self.reads.append(path.name)
        data = super().read(path, limit)
        if path.name == "outblob" and self.races > 0:
            self.races -= 1
            self._bump(path.parent)  # someone wrote inblob while the quote was made
        return data


@pytest.fixture
def configfs(tmp_path: Path, guest: TdxGuest) -> FakeConfigfs:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    return FakeConfigfs(root, outblob=guest.quote(REPORT_DATA))


def message_from(configfs: FakeConfigfs) -> attestation_pb2.TdxEvidence:
    got = tsm_report(configfs, REPORT_DATA, provider=TDX_GUEST)
    if isinstance(got, TsmUnavailable):
        return attestation_pb2.TdxEvidence(unavailable=got.reason)
    return attestation_pb2.TdxEvidence(quote=got.report)


def assert_authenticates(guest: TdxGuest, quote: bytes, report_data: bytes) -> None:
    authenticated = authenticate_quote(
        parse_quote(quote),
        root=x509.load_pem_x509_certificate(guest.root_pem),
        at=datetime.now(UTC),
        spki_pins=frozenset({guest.root_spki_sha256}),  # the TEST root, pinned explicitly
    )
    assert authenticated.quote.body.report_data == report_data


# --- configfs-tsm, provider tdx_guest ----------------------------------------------------


def test_tsm_quote_is_sent_untouched(guest: TdxGuest, configfs: FakeConfigfs) -> None:
    message = message_from(configfs)
    assert message.unavailable == ""
    assert message.quote == configfs.outblob
    assert configfs.inblobs == [REPORT_DATA]
    assert_authenticates(guest, message.quote, REPORT_DATA)


def test_auxblob_is_not_read_for_tdx(configfs: FakeConfigfs) -> None:
    configfs.auxblob = b"\x01garbage that would not parse as a certificate table"
    message = message_from(configfs)
    assert message.unavailable == "" and message.quote == configfs.outblob
    assert "auxblob" not in configfs.reads


def test_the_entry_is_fresh_and_always_removed(configfs: FakeConfigfs) -> None:
    message_from(configfs)
    message_from(configfs)
    assert len(set(configfs.made)) == 2
    assert list(configfs.root.iterdir()) == []


def test_one_generation_race_is_retried_on_a_new_entry(configfs: FakeConfigfs) -> None:
    configfs.races = 1
    message = message_from(configfs)
    assert message.unavailable == "" and message.quote == configfs.outblob
    assert len(configfs.made) == 2 and configfs.inblobs == [REPORT_DATA] * 2
    assert list(configfs.root.iterdir()) == []


def test_a_second_race_is_unavailable(configfs: FakeConfigfs) -> None:
    configfs.races = 2
    message = message_from(configfs)
    assert "another writer raced the configfs-tsm report entry twice" in message.unavailable
    assert "the quote might answer someone else's REPORT_DATA" in message.unavailable
    assert not message.quote


def test_sev_guest_provider_is_unavailable(configfs: FakeConfigfs) -> None:
    configfs.provider = b"sev_guest\n"
    message = message_from(configfs)
    assert message.unavailable == (
        "configfs-tsm provider is 'sev_guest', not 'tdx_guest' (not TDX)"
    )
    assert configfs.inblobs == []  # nothing written to an entry of another kind


def test_missing_provider_is_unavailable(configfs: FakeConfigfs) -> None:
    configfs.provider = None
    assert message_from(configfs).unavailable == "configfs-tsm entry has no provider attribute"


def test_empty_outblob_is_unavailable(configfs: FakeConfigfs) -> None:
    configfs.outblob = b""
    assert message_from(configfs).unavailable == "configfs-tsm outblob is empty: no quote"


def test_oversized_outblob_is_unavailable(configfs: FakeConfigfs) -> None:
    configfs.outblob = bytes(64 * 1024 + 1)
    assert message_from(configfs).unavailable == "configfs-tsm outblob is over 65536 bytes"


def test_a_host_without_configfs_tsm_says_why(tmp_path: Path) -> None:
    message = tdx_evidence_message(
        source="tsm", tsm_dir=tmp_path / "none", simulator_dir=None, report_data=REPORT_DATA
    )
    assert "no configfs-tsm report directory (not a TDX guest" in message.unavailable
    assert str(tmp_path / "none") in message.unavailable


def test_a_plain_directory_is_no_configfs_and_is_left_clean(tmp_path: Path) -> None:
    message = tdx_evidence_message(
        source="tsm", tsm_dir=tmp_path, simulator_dir=None, report_data=REPORT_DATA
    )
    assert message.unavailable == "configfs-tsm entry has no provider attribute"
    assert list(tmp_path.iterdir()) == []


# --- off and the simulator --------------------------------------------------------------


def test_off_says_so() -> None:
    message = tdx_evidence_message(
        source="off", tsm_dir=None, simulator_dir=None, report_data=REPORT_DATA
    )
    assert (
        message.unavailable == 'TDX evidence is switched off on this agent (tdx_evidence = "off")'
    )
    assert not message.quote


def test_simulator_answers_like_configfs(guest: TdxGuest) -> None:
    message = tdx_evidence_message(
        source="simulator", tsm_dir=None, simulator_dir=guest.directory, report_data=REPORT_DATA
    )
    assert message.unavailable == ""
    assert_authenticates(guest, message.quote, REPORT_DATA)


def test_a_missing_simulated_guest_is_unavailable(tmp_path: Path) -> None:
    message = tdx_evidence_message(
        source="simulator", tsm_dir=None, simulator_dir=tmp_path, report_data=REPORT_DATA
    )
    assert message.unavailable.startswith("simulated TDX guest unavailable: ")
    assert "guest.json: missing" in message.unavailable


def test_short_report_data_is_unavailable(guest: TdxGuest) -> None:
    for source, directory in (("simulator", guest.directory), ("tsm", guest.directory)):
        message = tdx_evidence_message(
            source=source,  # type: ignore[arg-type]
            tsm_dir=directory, simulator_dir=directory, report_data=b"x" * 32,
        )  # fmt: skip
        assert "of 32 bytes, not 64" in message.unavailable


# --- bounded: a stuck quote request holds no round hostage ------------------------------


@pytest.fixture
def stuck(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    release = threading.Event()

    def blocking(**_: object) -> attestation_pb2.TdxEvidence:
        release.wait(10)
        return attestation_pb2.TdxEvidence(quote=b"late")

    monkeypatch.setattr(tdx_module, "tdx_evidence_message", blocking)
    yield release
    release.set()


def test_timeout_then_no_stacking_then_recovery(stuck: threading.Event) -> None:
    collector = BoundedTdxCollector(
        source="tsm", tsm_dir=Path("/x"), simulator_dir=None, timeout_seconds=0.05
    )

    async def scenario() -> list[attestation_pb2.TdxEvidence]:
        first = await collector.collect(report_data=REPORT_DATA)
        second = await collector.collect(report_data=REPORT_DATA)
        stuck.set()
        await asyncio.sleep(0.2)
        third = await collector.collect(report_data=REPORT_DATA)
        return [first, second, third]

    first, second, third = asyncio.run(scenario())
    assert first.unavailable == "TDX quote request did not finish within 0.05 s"
    assert "the previous TDX quote request has not returned" in second.unavailable
    assert third.quote == b"late"


# --- the daemon: collected after the TPM quote, over the quote's bytes -------------------


class QuotingTpm:
    """Only what Agent._evidence uses of a Tpm: one quote with fixed bytes."""

    def __init__(self, attest: bytes) -> None:
        self.attest = attest

    def quote(self, **_: object) -> Quote:
        return Quote(attest=self.attest, signature=b"sig", pcrs={"sha256": {0: bytes(32)}})


def agent_for(guest: TdxGuest, tmp_path: Path, attest: bytes) -> Agent:
    config = AgentConfig(
        host_id="node", verifier="127.0.0.1:1", tcti="none", state_dir=tmp_path, insecure=True,
        gpu_evidence="off", snp_evidence="off",
        tdx_evidence="simulator", tdx_simulator=guest.directory,
    )  # fmt: skip
    return Agent(config, tpm=QuotingTpm(attest))  # type: ignore[arg-type]


def challenge(*, tdx: bool, nonce: bytes = NONCE) -> attestation_pb2.Challenge:
    message = attestation_pb2.Challenge(
        challenge_id="c1",
        nonce=nonce,
        tpm=attestation_pb2.TpmQuoteRequest(
            qualifying_data=b"q" * 32,
            pcr_selection=[common_pb2.PcrSelection(hash_algorithm="sha256", pcrs=[0])],
        ),
    )
    if tdx:
        message.tdx.SetInParent()
    return message


def run_evidence(agent: Agent, message: attestation_pb2.Challenge) -> attestation_pb2.Evidence:
    return asyncio.run(agent._evidence(message))


def test_daemon_binds_the_quote_to_this_rounds_tpm_quote(guest: TdxGuest, tmp_path: Path) -> None:
    attest = b"\xffTCG quote of this round"
    evidence = run_evidence(agent_for(guest, tmp_path, attest), challenge(tdx=True))
    assert evidence.HasField("tdx") and evidence.tdx.unavailable == ""
    expected = tdx_report_data(NONCE, attest)
    assert expected != snp_report_data(NONCE, attest)  # TDX's own domain
    assert_authenticates(guest, evidence.tdx.quote, expected)
    assert evidence.tpm.attest == attest
    assert not evidence.HasField("snp")


def test_daemon_sends_no_tdx_evidence_unasked(guest: TdxGuest, tmp_path: Path) -> None:
    evidence = run_evidence(agent_for(guest, tmp_path, ATTEST), challenge(tdx=False))
    assert not evidence.HasField("tdx")


def test_daemon_answers_an_empty_nonce_with_a_reason(guest: TdxGuest, tmp_path: Path) -> None:
    evidence = run_evidence(agent_for(guest, tmp_path, ATTEST), challenge(tdx=True, nonce=b""))
    assert evidence.tdx.unavailable == "no TDX quote: report data: empty challenge nonce"
    assert not evidence.tdx.quote
