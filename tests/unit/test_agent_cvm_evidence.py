"""The agent's answers to SnpRequest and TdxRequest: from configfs-tsm or the simulator, or why not.

``FakeConfigfs`` stands in for the kernel's configfs: a plain temporary directory
whose entries the test fills with pre-written ``provider`` (``sev_guest`` or
``tdx_guest``), ``generation``, ``outblob`` and ``auxblob`` files when the
collector makes one (configfs does that itself), whose ``generation`` counts
writes as the kernel's does, and whose entries are removed with their files
(configfs's rmdir does that). It is no kernel, no firmware and no TDX module: it
shows what the collector does with each answer a kernel can give. The reports and
quotes in it come from devsim.snp and devsim.tdx and are checked with the
verifier's libraries, the test roots pinned explicitly.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
from cryptography import x509

from agent.collectors import snp as snp_module
from agent.collectors import tdx as tdx_module
from agent.collectors.snp import BoundedSnpCollector, snp_evidence_message
from agent.collectors.snp_certtable import (
    ASK_GUID,
    VCEK_GUID,
    VLEK_GUID,
    CertTableError,
    der_to_pem,
    parse_cert_table,
)
from agent.collectors.snp_tsm import (
    TDX_GUEST,
    ConfigfsTsm,
    TsmReport,
    TsmUnavailable,
    tsm_report,
)
from agent.collectors.tdx import BoundedTdxCollector, tdx_evidence_message
from agent.collectors.tpm import Quote
from agent.config import AgentConfig
from agent.daemon import Agent
from devsim.snp import SnpHost, create_snp_host
from devsim.tdx import TdxGuest, create_tdx_guest
from verifier.evidence.snp.appraise import check_report_data
from verifier.evidence.snp.authenticate import authenticate_report
from verifier.evidence.snp.certs import load_certificates
from verifier.evidence.snp.chain import load_amd_roots
from verifier.evidence.snp.report import parse_report
from verifier.evidence.snp.tcb import ProductLine
from verifier.evidence.tdx.authenticate import authenticate_quote
from verifier.evidence.tdx.quote import parse_quote
from weightgate.cvm_binding import snp_report_data, tdx_report_data
from weightgate.v1 import attestation_pb2, common_pb2

NONCE = bytes(range(32))
ATTEST = b"\xffTCG" + bytes(60)
REPORT_DATA = snp_report_data(NONCE, ATTEST)
TDX_REPORT_DATA = tdx_report_data(NONCE, ATTEST)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> SnpHost:
    return create_snp_host(tmp_path_factory.mktemp("snp") / "host")


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> TdxGuest:
    return create_tdx_guest(tmp_path_factory.mktemp("tdx") / "guest")


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
            self._bump(path.parent)  # someone wrote inblob while the report was made
        return data


def _tsm_root(tmp_path: Path) -> Path:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    return root


@pytest.fixture
def configfs(tmp_path: Path, host: SnpHost) -> FakeConfigfs:
    """configfs-tsm with the sev_guest provider."""
    return FakeConfigfs(
        _tsm_root(tmp_path), outblob=host.report(REPORT_DATA), auxblob=host.certificate_table()
    )


@pytest.fixture
def tdx_configfs(tmp_path: Path, guest: TdxGuest) -> FakeConfigfs:
    """configfs-tsm with the tdx_guest provider: it fills no auxblob."""
    return FakeConfigfs(
        _tsm_root(tmp_path),
        outblob=guest.quote(TDX_REPORT_DATA),
        auxblob=None,  # a value shows it is not read
        provider=b"tdx_guest\n",
    )


def message_from(configfs: FakeConfigfs) -> attestation_pb2.SnpEvidence:
    got = tsm_report(configfs, REPORT_DATA)
    if isinstance(got, TsmUnavailable):
        return attestation_pb2.SnpEvidence(unavailable=got.reason)
    return snp_module._message(got)


def tdx_message_from(configfs: FakeConfigfs) -> attestation_pb2.TdxEvidence:
    got = tsm_report(configfs, TDX_REPORT_DATA, provider=TDX_GUEST)
    if isinstance(got, TsmUnavailable):
        return attestation_pb2.TdxEvidence(unavailable=got.reason)
    return attestation_pb2.TdxEvidence(quote=got.report)


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


def tdx_assert_authenticates(guest: TdxGuest, quote: bytes, report_data: bytes) -> None:
    authenticated = authenticate_quote(
        parse_quote(quote),
        root=x509.load_pem_x509_certificate(guest.root_pem),
        at=datetime.now(UTC),
        spki_pins=frozenset({guest.root_spki_sha256}),  # the TEST root, pinned explicitly
    )
    assert authenticated.quote.body.report_data == report_data


# --- SEV-SNP: configfs-tsm ----------------------------------------------------------------------


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


def test_a_host_without_configfs_tsm_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No real /dev/sev-guest either, whatever machine runs the tests.
    monkeypatch.setattr("agent.collectors.sev_guest.SEV_GUEST_DEVICE", tmp_path / "no-device")
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


# --- SEV-SNP: the other sources ------------------------------------------------------------------


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


# --- TDX: configfs-tsm, provider tdx_guest ----------------------------------------------------


def test_tdx_tsm_quote_is_sent_untouched(guest: TdxGuest, tdx_configfs: FakeConfigfs) -> None:
    message = tdx_message_from(tdx_configfs)
    assert message.unavailable == ""
    assert message.quote == tdx_configfs.outblob
    assert tdx_configfs.inblobs == [TDX_REPORT_DATA]
    tdx_assert_authenticates(guest, message.quote, TDX_REPORT_DATA)


def test_tdx_auxblob_is_not_read_for_tdx(tdx_configfs: FakeConfigfs) -> None:
    tdx_configfs.auxblob = b"\x01garbage that would not parse as a certificate table"
    message = tdx_message_from(tdx_configfs)
    assert message.unavailable == "" and message.quote == tdx_configfs.outblob
    assert "auxblob" not in tdx_configfs.reads


def test_tdx_the_entry_is_fresh_and_always_removed(tdx_configfs: FakeConfigfs) -> None:
    tdx_message_from(tdx_configfs)
    tdx_message_from(tdx_configfs)
    assert len(set(tdx_configfs.made)) == 2
    assert list(tdx_configfs.root.iterdir()) == []


def test_tdx_one_generation_race_is_retried_on_a_new_entry(tdx_configfs: FakeConfigfs) -> None:
    tdx_configfs.races = 1
    message = tdx_message_from(tdx_configfs)
    assert message.unavailable == "" and message.quote == tdx_configfs.outblob
    assert len(tdx_configfs.made) == 2 and tdx_configfs.inblobs == [TDX_REPORT_DATA] * 2
    assert list(tdx_configfs.root.iterdir()) == []


def test_tdx_a_second_race_is_unavailable(tdx_configfs: FakeConfigfs) -> None:
    tdx_configfs.races = 2
    message = tdx_message_from(tdx_configfs)
    assert "another writer raced the configfs-tsm report entry twice" in message.unavailable
    assert "the quote might answer someone else's REPORT_DATA" in message.unavailable
    assert not message.quote


def test_tdx_sev_guest_provider_is_unavailable(tdx_configfs: FakeConfigfs) -> None:
    tdx_configfs.provider = b"sev_guest\n"
    message = tdx_message_from(tdx_configfs)
    assert message.unavailable == (
        "configfs-tsm provider is 'sev_guest', not 'tdx_guest' (not TDX)"
    )
    assert tdx_configfs.inblobs == []  # nothing written to an entry of another kind


def test_tdx_missing_provider_is_unavailable(tdx_configfs: FakeConfigfs) -> None:
    tdx_configfs.provider = None
    assert (
        tdx_message_from(tdx_configfs).unavailable == "configfs-tsm entry has no provider attribute"
    )


def test_tdx_empty_outblob_is_unavailable(tdx_configfs: FakeConfigfs) -> None:
    tdx_configfs.outblob = b""
    assert tdx_message_from(tdx_configfs).unavailable == "configfs-tsm outblob is empty: no quote"


def test_tdx_oversized_outblob_is_unavailable(tdx_configfs: FakeConfigfs) -> None:
    tdx_configfs.outblob = bytes(64 * 1024 + 1)
    assert tdx_message_from(tdx_configfs).unavailable == "configfs-tsm outblob is over 65536 bytes"


def test_tdx_a_host_without_configfs_tsm_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.collectors.tdx_guest.TDX_GUEST_DEVICE", tmp_path / "no-device")
    message = tdx_evidence_message(
        source="tsm", tsm_dir=tmp_path / "none", simulator_dir=None, report_data=TDX_REPORT_DATA
    )
    assert "no configfs-tsm report directory (not a TDX guest" in message.unavailable
    assert str(tmp_path / "none") in message.unavailable


def test_tdx_a_plain_directory_is_no_configfs_and_is_left_clean(tmp_path: Path) -> None:
    message = tdx_evidence_message(
        source="tsm", tsm_dir=tmp_path, simulator_dir=None, report_data=TDX_REPORT_DATA
    )
    assert message.unavailable == "configfs-tsm entry has no provider attribute"
    assert list(tmp_path.iterdir()) == []


# --- TDX: off and the simulator --------------------------------------------------------------


def test_tdx_off_says_so() -> None:
    message = tdx_evidence_message(
        source="off", tsm_dir=None, simulator_dir=None, report_data=TDX_REPORT_DATA
    )
    assert (
        message.unavailable == 'TDX evidence is switched off on this agent (tdx_evidence = "off")'
    )
    assert not message.quote


def test_tdx_simulator_answers_like_configfs(guest: TdxGuest) -> None:
    message = tdx_evidence_message(
        source="simulator", tsm_dir=None, simulator_dir=guest.directory, report_data=TDX_REPORT_DATA
    )
    assert message.unavailable == ""
    tdx_assert_authenticates(guest, message.quote, TDX_REPORT_DATA)


def test_tdx_a_missing_simulated_guest_is_unavailable(tmp_path: Path) -> None:
    message = tdx_evidence_message(
        source="simulator", tsm_dir=None, simulator_dir=tmp_path, report_data=TDX_REPORT_DATA
    )
    assert message.unavailable.startswith("simulated TDX guest unavailable: ")
    assert "guest.json: missing" in message.unavailable


def test_tdx_short_report_data_is_unavailable(guest: TdxGuest) -> None:
    for source, directory in (("simulator", guest.directory), ("tsm", guest.directory)):
        message = tdx_evidence_message(
            source=source,  # type: ignore[arg-type]
            tsm_dir=directory, simulator_dir=directory, report_data=b"x" * 32,
        )  # fmt: skip
        assert "of 32 bytes, not 64" in message.unavailable


# --- bounded: a stuck firmware or quote request holds no round hostage ------------------


@dataclass(frozen=True)
class Stuck:
    """A device whose evidence function blocks until ``release`` is set."""

    module: ModuleType
    evidence: str  # the module's evidence function, replaced by a blocking one
    collector: type[BoundedSnpCollector] | type[BoundedTdxCollector]
    late: Callable[[], attestation_pb2.SnpEvidence | attestation_pb2.TdxEvidence]
    timed_out: str
    not_returned: str
    payload: str  # the message field the late answer fills


STUCK = {
    "snp": Stuck(
        snp_module, "snp_evidence_message", BoundedSnpCollector,
        lambda: attestation_pb2.SnpEvidence(report=b"late"),
        "SNP report request did not finish within 0.05 s",
        "the previous SNP report request has not returned", "report",
    ),
    "tdx": Stuck(
        tdx_module, "tdx_evidence_message", BoundedTdxCollector,
        lambda: attestation_pb2.TdxEvidence(quote=b"late"),
        "TDX quote request did not finish within 0.05 s",
        "the previous TDX quote request has not returned", "quote",
    ),
}  # fmt: skip


@pytest.fixture(params=sorted(STUCK))
def stuck(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Stuck, threading.Event]]:
    device: Stuck = STUCK[request.param]
    release = threading.Event()

    def blocking(**_: object) -> attestation_pb2.SnpEvidence | attestation_pb2.TdxEvidence:
        release.wait(10)
        return device.late()

    monkeypatch.setattr(device.module, device.evidence, blocking)
    yield device, release
    release.set()


def test_timeout_then_no_stacking_then_recovery(stuck: tuple[Stuck, threading.Event]) -> None:
    device, release = stuck
    collector = device.collector(
        source="tsm", tsm_dir=Path("/x"), simulator_dir=None, timeout_seconds=0.05
    )

    async def scenario() -> list[attestation_pb2.SnpEvidence | attestation_pb2.TdxEvidence]:
        first = await collector.collect(report_data=REPORT_DATA)
        second = await collector.collect(report_data=REPORT_DATA)
        release.set()
        await asyncio.sleep(0.2)
        third = await collector.collect(report_data=REPORT_DATA)
        return [first, second, third]

    first, second, third = asyncio.run(scenario())
    assert first.unavailable == device.timed_out
    assert device.not_returned in second.unavailable
    assert getattr(third, device.payload) == b"late"


# --- the daemon: collected after the TPM quote, over the quote's bytes -------------------


class QuotingTpm:
    """Only what Agent._evidence uses of a Tpm: one quote with fixed bytes."""

    def __init__(self, attest: bytes) -> None:
        self.attest = attest

    def quote(self, **_: object) -> Quote:
        return Quote(attest=self.attest, signature=b"sig", pcrs={"sha256": {0: bytes(32)}})


def agent_for(
    tmp_path: Path, attest: bytes, *, snp: SnpHost | None = None, tdx: TdxGuest | None = None
) -> Agent:
    """An agent with the simulated SNP host and/or TDX guest given, every other device off."""
    config = AgentConfig(
        host_id="node", verifier="127.0.0.1:1", tcti="none", state_dir=tmp_path, insecure=True,
        gpu_evidence="off",
        snp_evidence="simulator" if snp else "off", snp_simulator=snp.directory if snp else None,
        tdx_evidence="simulator" if tdx else "off", tdx_simulator=tdx.directory if tdx else None,
    )  # fmt: skip
    return Agent(config, tpm=QuotingTpm(attest))  # type: ignore[arg-type]


def challenge(
    *, snp: bool = False, tdx: bool = False, nonce: bytes = NONCE
) -> attestation_pb2.Challenge:
    message = attestation_pb2.Challenge(
        challenge_id="c1",
        nonce=nonce,
        tpm=attestation_pb2.TpmQuoteRequest(
            qualifying_data=b"q" * 32,
            pcr_selection=[common_pb2.PcrSelection(hash_algorithm="sha256", pcrs=[0])],
        ),
    )
    if snp:
        message.snp.SetInParent()
    if tdx:
        message.tdx.SetInParent()
    return message


def run_evidence(agent: Agent, message: attestation_pb2.Challenge) -> attestation_pb2.Evidence:
    return asyncio.run(agent._evidence(message))


def test_daemon_binds_the_report_to_this_rounds_quote(host: SnpHost, tmp_path: Path) -> None:
    attest = b"\xffTCG quote of this round"
    evidence = run_evidence(agent_for(tmp_path, attest, snp=host), challenge(snp=True))
    assert evidence.HasField("snp") and evidence.snp.unavailable == ""
    report = parse_report(evidence.snp.report)
    assert report.report_data == snp_report_data(NONCE, attest)
    assert evidence.tpm.attest == attest


def test_daemon_sends_no_snp_evidence_unasked(host: SnpHost, tmp_path: Path) -> None:
    evidence = run_evidence(agent_for(tmp_path, ATTEST, snp=host), challenge(snp=False))
    assert not evidence.HasField("snp")


def test_tdx_daemon_binds_the_quote_to_this_rounds_tpm_quote(
    guest: TdxGuest, tmp_path: Path
) -> None:
    attest = b"\xffTCG quote of this round"
    evidence = run_evidence(agent_for(tmp_path, attest, tdx=guest), challenge(tdx=True))
    assert evidence.HasField("tdx") and evidence.tdx.unavailable == ""
    expected = tdx_report_data(NONCE, attest)
    assert expected != snp_report_data(NONCE, attest)  # TDX's own domain
    tdx_assert_authenticates(guest, evidence.tdx.quote, expected)
    assert evidence.tpm.attest == attest
    assert not evidence.HasField("snp")


def test_tdx_daemon_sends_no_tdx_evidence_unasked(guest: TdxGuest, tmp_path: Path) -> None:
    evidence = run_evidence(agent_for(tmp_path, ATTEST, tdx=guest), challenge(tdx=False))
    assert not evidence.HasField("tdx")


def test_tdx_daemon_answers_an_empty_nonce_with_a_reason(guest: TdxGuest, tmp_path: Path) -> None:
    evidence = run_evidence(agent_for(tmp_path, ATTEST, tdx=guest), challenge(tdx=True, nonce=b""))
    assert evidence.tdx.unavailable == "no TDX quote: report data: empty challenge nonce"
    assert not evidence.tdx.quote
