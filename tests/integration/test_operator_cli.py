"""`weightgate hosts …` / `weightgate reference …` against a real verifier over loopback.

The commands run in-process (``verifier.cli.main``) so their stdout, stderr and
exit code are checked directly; the verifier is the real gRPC server.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_process import AGENT
from tests.verifier_harness import VerifierHarness, running_verifier
from verifier.cli import main
from verifier.demo.swtpm import SwtpmProcess
from weightgate.v1 import operator_pb2

HOST = "cli-node"
GROUP = "cli-group"
COLUMNS = ["HOST", "GROUP", "STATUS", "LAST ATTESTATION", "REASON"]


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VerifierHarness]:
    # Operator commands never enroll anything: no EK CA needed.
    with running_verifier(tmp_path_factory.mktemp("cli-verifier"), ek_ca_certificates=()) as v:
        yield v


@pytest.fixture(autouse=True)
def _no_connection_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI takes defaults from these; a developer's shell must not change the results.
    monkeypatch.delenv("WEIGHTGATE_INSECURE", raising=False)
    monkeypatch.delenv("WEIGHTGATE_VERIFIER", raising=False)


class Cli:
    def __init__(self, verifier: VerifierHarness, capsys: pytest.CaptureFixture[str]) -> None:
        self._address = verifier.address
        self._capsys = capsys

    def raw(self, *argv: str) -> tuple[int, str, str]:
        """Run `weightgate ARGV`; (exit code, stdout, stderr)."""
        self._capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse usage errors
            code = int(exit_.code or 0)
        out, err = self._capsys.readouterr()
        return code, out, err

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        return self.raw(*argv, "--verifier", self._address, "--insecure")

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert code == 0, err
        assert err == ""
        return out


@pytest.fixture
def cli(verifier: VerifierHarness, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(verifier, capsys)


@pytest.fixture(scope="module")
def registered(verifier: VerifierHarness) -> str:
    verifier.operator.RegisterHost(operator_pb2.RegisterHostRequest(host_id=HOST, group=GROUP))
    return HOST


def write_pcrs(path: Path, document: Any) -> Path:
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def pcrs_document(fill: str) -> dict[str, Any]:
    return {"pcrs": {"sha256": {str(i): fill * 32 for i in range(8)}}}


def test_hosts_add_then_list_shows_the_table(cli: Cli) -> None:
    out = cli.ok("hosts", "add", "added-node", "--group", "lab")
    assert out.strip() == "registered added-node in group lab"
    lines = cli.ok("hosts", "list").splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == COLUMNS
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "added-node" in rows
    row = rows["added-node"]
    # Cells line up under their headings.
    for heading, cell in zip(
        COLUMNS, ["added-node", "lab", "registered", "never", "-"], strict=True
    ):
        assert row[lines[0].index(heading) :].startswith(cell), (heading, row)


def test_hosts_add_twice_is_refused(cli: Cli) -> None:
    cli.ok("hosts", "add", "twice-node", "--group", "lab")
    code, out, err = cli("hosts", "add", "twice-node", "--group", "other")
    assert code == 1
    assert out == ""
    assert "ALREADY_EXISTS" in err


def test_hosts_list_json(cli: Cli, registered: str) -> None:
    document = json.loads(cli.ok("hosts", "list", "--json"))
    by_host = {h["host"]: h for h in document["hosts"]}
    assert by_host[registered] == {
        "host": registered,
        "group": GROUP,
        "status": "registered",
        "last_attestation": None,
        "reasons": [],
    }


def test_hosts_show_json(cli: Cli, registered: str) -> None:
    document = json.loads(cli.ok("hosts", "show", registered, "--json"))
    assert document["host"] == registered
    assert document["group"] == GROUP
    assert document["status"] == "registered"
    assert document["ak_name"] == ""
    assert document["history"] == []
    assert [e["kind"] for e in document["events"]] == ["registered"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", document["events"][0]["at"])


def test_hosts_show_table(cli: Cli, registered: str) -> None:
    out = cli.ok("hosts", "show", registered)
    assert f"host:    {registered}  (group {GROUP})" in out
    assert "status:  registered" in out
    assert "(none yet)" in out


@pytest.mark.parametrize("as_json", [False, True])
def test_unknown_host_is_not_found(cli: Cli, *, as_json: bool) -> None:
    code, out, err = cli("hosts", "show", "no-such-host", *(["--json"] if as_json else []))
    assert code == 1
    assert out == ""
    assert "NOT_FOUND" in err
    assert "no-such-host" in err


def test_reference_set_from_agent_read_pcrs_then_show(
    cli: Cli, swtpm: SwtpmProcess, tmp_path: Path
) -> None:
    # The file format is the one `weightgate-agent read-pcrs` writes.
    agent_config = tmp_path / "agent.toml"
    agent_config.write_text(
        f'[agent]\nverifier = "127.0.0.1:1"\ntcti = "{swtpm.tcti}"\n'
        f'state_dir = "{tmp_path}"\ninsecure = true\n'
    )
    read = subprocess.run(
        [str(AGENT), "read-pcrs", "--config", str(agent_config), "--pcrs", "0-7"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert read.returncode == 0, read.stderr
    pcrs_file = write_pcrs(tmp_path / "golden.json", read.stdout)
    out = cli.ok("reference", "set", "--group", "from-agent", "--pcrs", str(pcrs_file))
    # The plaintext test verifier needs no approvals: the proposal applies at once.
    assert out.strip() == (
        "applied at once (no approval required here): "
        "reference values of group from-agent replaced (8 PCRs)"
    )
    shown = json.loads(cli.ok("reference", "show", "--group", "from-agent", "--json"))
    assert shown == {"group": "from-agent", "pcrs": json.loads(read.stdout)["pcrs"]}


def test_reference_set_only_and_show_table(cli: Cli, tmp_path: Path) -> None:
    pcrs_file = write_pcrs(tmp_path / "pcrs.json", pcrs_document("ab"))
    out = cli.ok(
        "reference", "set", "--group", "partial", "--pcrs", str(pcrs_file), "--only", "0,7"
    )
    assert out.strip().endswith("reference values of group partial replaced (2 PCRs)")
    lines = cli.ok("reference", "show", "--group", "partial").splitlines()
    assert lines == [
        "group partial:",
        f"  sha256 PCR 0: {'ab' * 32}",
        f"  sha256 PCR 7: {'ab' * 32}",
    ]


MALFORMED = {
    "not json": "{not json",
    "no pcrs key": {"sha256": {"0": "00" * 32}},
    "empty pcrs": {"pcrs": {}},
    "bank not an object": {"pcrs": {"sha256": ["00" * 32]}},
    "not hex": {"pcrs": {"sha256": {"0": "zz" * 32}}},
    "value not a string": {"pcrs": {"sha256": {"0": 5}}},
    "index not a number": {"pcrs": {"sha256": {"zero": "00" * 32}}},
    "negative index": {"pcrs": {"sha256": {"-1": "00" * 32}}},
    "index out of range": {"pcrs": {"sha256": {"24": "00" * 32}}},
    "wrong digest length": {"pcrs": {"sha256": {"0": "00" * 20}}},
    "unknown bank": {"pcrs": {"md5": {"0": "00" * 16}}},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_pcrs_file_is_a_usage_error_and_writes_nothing(
    cli: Cli, verifier: VerifierHarness, tmp_path: Path, case: str
) -> None:
    group = "guarded"
    good = write_pcrs(tmp_path / "good.json", pcrs_document("11"))
    cli.ok("reference", "set", "--group", group, "--pcrs", str(good))
    before = cli.ok("reference", "show", "--group", group, "--json")

    bad = write_pcrs(tmp_path / "bad.json", MALFORMED[case])
    code, out, err = cli("reference", "set", "--group", group, "--pcrs", str(bad))
    assert code == 2, err
    assert out == ""
    assert err.startswith(f"weightgate: {bad}: "), err
    assert len(err.strip().splitlines()) == 1, err  # one clear line, no traceback
    assert cli.ok("reference", "show", "--group", group, "--json") == before


def test_missing_pcrs_file_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("reference", "set", "--group", "g", "--pcrs", str(tmp_path / "absent.json"))
    assert code == 2
    assert "absent.json" in err


def test_reference_show_unknown_group_is_not_found(cli: Cli) -> None:
    code, out, err = cli("reference", "show", "--group", "never-set")
    assert code == 1
    assert out == ""
    assert "NOT_FOUND" in err


@pytest.mark.parametrize(
    "command", [["hosts", "list"], ["hosts", "show", HOST], ["reference", "show", "--group", "g"]]
)
def test_missing_tls_options_without_insecure_is_a_usage_error(
    cli: Cli, verifier: VerifierHarness, tmp_path: Path, command: list[str]
) -> None:
    code, out, err = cli.raw(*command, "--verifier", verifier.address)
    assert code == 2
    assert out == ""
    assert "--ca, --cert and --key" in err
    # Only some of them, or ones that cannot be read: still a usage error, no traceback.
    ca = tmp_path / "ca.pem"
    code, _, err = cli.raw(*command, "--verifier", verifier.address, "--ca", str(ca))
    assert code == 2
    assert "--ca, --cert and --key" in err
    files = ["--ca", str(ca), "--cert", str(tmp_path / "c.pem"), "--key", str(tmp_path / "k.pem")]
    code, _, err = cli.raw(*command, "--verifier", verifier.address, *files)
    assert code == 2
    assert err.strip() == f"weightgate: {ca}: cannot read: No such file or directory"


def test_unreachable_verifier_is_a_runtime_failure(cli: Cli) -> None:
    code, out, err = cli.raw("hosts", "list", "--verifier", "127.0.0.1:1", "--insecure")
    assert code == 1
    assert out == ""
    assert "UNAVAILABLE" in err


def test_usage_errors_exit_2(cli: Cli) -> None:
    code, _, err = cli("hosts", "add", "no-group-node")
    assert code == 2
    assert "--group" in err
