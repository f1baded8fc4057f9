"""`weightgate demo`: a private swtpm, the verifier and one agent, end to end.

It shows what an operator would see, with mutual TLS throughout: an
evaluation CA issues certificates to the verifier, the agent and four people;
alice (operator) proposes the reference values, the group's GPU and SEV-SNP
policies, the site, the host's assignment and the pre-deployment review (which
requires the measured-boot log, GPU attestation and a confidential VM), and bob
and carol (approvers) approve each before it takes effect. The host enrolls its
TPM and becomes trusted: its four simulated GPUs and its SEV-SNP report (devsim,
TEST roots trusted explicitly) are attested in the same rounds, bound to each
round's quote. It receives the weights; then a PCR that the reference covers is
extended (as an unapproved boot component would), the host turns untrusted with
the reason, and the weights are erased. Finally dana (auditor) verifies the
audit log, which fails after a one-byte edit in the database. Everything it
starts is stopped by pid, also on failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from verifier.demo.boot_log import (
    EV_EFI_ACTION,
    EV_IPL,
    EV_SEPARATOR,
    FIRMWARE_PCRS,
    SEPARATOR,
    build_typed_log,
)
from verifier.demo.cvm import make_demo_cvm
from verifier.demo.gpus import make_demo_gpus
from verifier.demo.processes import (
    free_port,
    proposal_id,
    run,
    say,
    start,
    tool,
    wait_for,
)
from verifier.demo.swtpm import start_swtpm

HOST_ID = "demo-host"
GROUP = "demo"
SITE = "demo-dc"
RISK_TIER = "high"
SAMPLE_FILES = {  # a tiny stand-in for a checkpoint: name -> size in bytes
    "config.json": 0,
    "model-00001-of-00002.safetensors": 5 * 1024 * 1024 + 123,
    "model-00002-of-00002.safetensors": 3 * 1024 * 1024,
}
REFERENCE_PCRS = "0-7"
GPUS = 4
PROPOSER = "alice"
APPROVERS = ("bob", "carol")
AUDITOR = "dana"
PEOPLE = ((PROPOSER, "operator"), *((a, "approver") for a in APPROVERS), (AUDITOR, "auditor"))
# What a tiny "boot" measures into the fresh TPM so the reference is not all zeros.
BOOT_MEASUREMENTS = (
    (0, "firmware: demo UEFI 1.0"),
    (4, "bootloader: shimx64.efi"),
    (4, "bootloader: grubx64.efi"),
    (7, "secure boot: enabled, db=demo-ca"),
)
# As the verifier's event checks expect of firmware (event_checks.py): PCR7 holds
# only Secure Boot policy event types, and PCRs 0-7 each end with a separator.
BOOT_EVENTS = (
    *(
        (pcr, EV_EFI_ACTION if pcr == 7 else EV_IPL, text.encode())
        for pcr, text in BOOT_MEASUREMENTS
    ),
    *((pcr, EV_SEPARATOR, SEPARATOR) for pcr in FIRMWARE_PCRS),
)


def run_demo(*, keep: bool) -> int:
    state = Path(tempfile.mkdtemp(prefix="weightgate-demo-"))
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            _demo(state, stack)
        print(
            f"\ndemo finished in {time.monotonic() - started:.1f}s;"
            " everything it started is stopped"
        )
        return 0
    except (RuntimeError, OSError) as exc:
        print(f"\ndemo failed: {exc}\nlogs are in {state}", file=sys.stderr)
        keep = True
        return 1
    finally:
        if not keep:
            shutil.rmtree(state, ignore_errors=True)


class _Demo:
    """The demo's steps, sharing what they started (stopped by `stack` at the end)."""

    def __init__(self, state: Path, stack: ExitStack) -> None:
        self.state = state
        self.stack = stack
        self.processes: list[subprocess.Popen[bytes]] = []
        self.target = state / "agent-weights"
        self.verifier_config = state / "verifier.toml"
        self.agent_config = state / "agent.toml"
        self.address = f"127.0.0.1:{free_port()}"
        self.pki = state / "pki"
        self.boot_log = state / "binary_bios_measurements"

    def weightgate(self, *argv: str, who: str = PROPOSER) -> str:
        """Run `weightgate` as ``who``, with that person's certificate (mutual TLS)."""
        return run([tool("weightgate"), *argv, *self.connection(who)])

    def connection(self, who: str) -> list[str]:
        return [
            f"--verifier={self.address}",
            f"--ca={self.pki / 'ca.crt'}",
            f"--cert={self.pki / f'operator-{who}.crt'}",
            f"--key={self.pki / f'operator-{who}.key'}",
        ]

    def propose(self, *argv: str) -> str:
        """Run a change command as the proposer; show its diff; return the proposal id."""
        output = self.weightgate(*argv, "--justification", "weightgate demo")
        print("\n".join("    " + line for line in output.strip().splitlines()))
        return proposal_id(output)

    def approve(self, proposal_ids: list[str]) -> None:
        for approver in APPROVERS:
            for proposal in proposal_ids:
                result = self.weightgate("proposals", "approve", proposal, who=approver)
                print(f"    {approver}: {result.strip()}")

    def wait(self, what: str, check: Callable[[], bool]) -> None:
        wait_for(what, check, self.processes)

    def status(self) -> str:
        hosts = json.loads(self.weightgate("hosts", "list", "--json"))["hosts"]
        return str(hosts[0]["status"]) if hosts else "missing"

    def start_tpm(self) -> None:
        say("starting a private software TPM (swtpm) with an EK certificate from a local CA")
        self.tpm = start_swtpm(self.state / "swtpm")
        self.stack.callback(self.tpm.stop)
        print(f"    swtpm pid {self.tpm.pid}, {self.tpm.tcti}")
        for pcr, _, data in BOOT_EVENTS:
            self.measure(pcr, data)
        for pcr, measurement in BOOT_MEASUREMENTS:
            print(f"    measured into PCR{pcr}: {measurement}")
        print(f"    and a separator into each of PCRs 0-{FIRMWARE_PCRS[-1]}")
        # What a firmware would have logged for those measurements; the agent sends it.
        self.boot_log.write_bytes(build_typed_log(BOOT_EVENTS))
        print(f"    and logged them in {self.boot_log.name}, as firmware would")

    def measure(self, pcr: int, data: bytes) -> None:
        event = self.state / "event.bin"
        event.write_bytes(data)
        tools_env = os.environ | {"TPM2TOOLS_TCTI": self.tpm.tcti}
        run(["tpm2_pcrevent", str(pcr), str(event)], env=tools_env)

    def issue_certificates(self) -> None:
        say("an evaluation CA issues certificates: the verifier, the agent and four people")
        pki = str(self.pki)
        run([tool("weightgate"), "pki", "init", "--dir", pki])
        run([tool("weightgate"), "pki", "issue", "server", "verifier", "--san", "127.0.0.1",
              "--dir", pki])  # fmt: skip
        run([tool("weightgate"), "pki", "issue", "agent", HOST_ID, "--dir", pki])
        for name, role in PEOPLE:
            run([tool("weightgate"), "pki", "issue", "operator", name, "--role", role,
                  "--dir", pki])  # fmt: skip
            print(f"    {name}: {role}")

    def start_verifier(self) -> None:
        say(f"{GPUS} simulated NVIDIA H100 GPUs (devsim, TEST roots); their signed RIMs are "
            "imported into the verifier's RIM store")  # fmt: skip
        self.gpus = make_demo_gpus(self.state, GPUS)
        say("the host is an AMD SEV-SNP confidential VM (devsim, TEST ARK): its CPU signs "
            "a report over each round's nonce and TPM quote")  # fmt: skip
        self.cvm = make_demo_cvm(self.state)
        ca_list = ", ".join(json.dumps(str(p)) for p in self.tpm.ek_ca_certificates)
        self.verifier_config.write_text(
            "[verifier]\n"
            f'listen = "{self.address}"\n'
            f'state_dir = "{self.state / "verifier"}"\n'
            "attestation_interval_seconds = 2\n"
            f"ek_ca_certificates = [{ca_list}]\n"
            "\n[verifier.tls]  # mutual TLS: agents and people need a certificate from our CA\n"
            f'certificate = "{self.pki / "server-verifier.crt"}"\n'
            f'private_key = "{self.pki / "server-verifier.key"}"\n'
            f'client_ca = "{self.pki / "ca.crt"}"\n'
            "\n[verifier.approvals]  # the two-person rule: two approvers besides the proposer\n"
            "reference_values = 2\nsite = 2\nhost_site = 2\nreview = 2\ngpu_policy = 2\n"
            "snp_policy = 2\n"
            f"{self.gpus.verifier_table()}"
            f"{self.cvm.verifier_table()}"
        )
        say(f"starting the verifier on {self.address} (SQLite in {self.state / 'verifier'})")
        argv = [
            tool("weightgate"),
            "verifier",
            "serve",
            "--config",
            str(self.verifier_config),
        ]
        verifier = start(argv, self.state / "verifier.log", self.stack)
        self.processes.append(verifier)

        def reachable() -> bool:
            try:
                self.weightgate("hosts", "list")
            except RuntimeError:
                return False
            return True

        self.wait("the verifier to listen", reachable)
        print(f"    verifier pid {verifier.pid}")

    def register_host(self) -> None:
        say(f"alice registers {HOST_ID} in group {GROUP!r}")
        print("    " + self.weightgate("hosts", "add", HOST_ID, "--group", GROUP).strip())
        self.write_agent_config()
        say("alice proposes reference PCRs 0-7 read from the known-good host")
        pcrs_file = self.state / "reference-pcrs.json"
        pcrs_file.write_text(
            run([tool("weightgate-agent"), "read-pcrs", "--config", str(self.agent_config),
                  "--bank", "sha256", "--pcrs", REFERENCE_PCRS])
        )  # fmt: skip
        self.proposals = [
            self.propose("reference", "set", "--group", GROUP, "--pcrs", str(pcrs_file))
        ]
        say("alice proposes the group's GPU policy: CC mode on, minimum driver and VBIOS, "
            "the allowed RIMs")  # fmt: skip
        policy = ("reference", "propose-gpu", "--group", GROUP, "--policy", str(self.gpus.policy))
        self.proposals.append(self.propose(*policy))
        say("alice proposes the group's SEV-SNP policy: the launch measurement, minimum TCB, "
            "no debug")  # fmt: skip
        snp = ("reference", "propose-snp", "--group", GROUP, "--policy", str(self.cvm.policy))
        self.proposals.append(self.propose(*snp))

    def write_agent_config(self, extra: str = "", tables: str = "") -> None:
        self.agent_config.write_text(
            "[agent]\n"
            f'host_id = "{HOST_ID}"\n'
            f'verifier = "{self.address}"\n'
            f'tcti = "{self.tpm.tcti}"\n'
            f'state_dir = "{self.state / "agent"}"\n'
            "reconnect_initial_seconds = 0.5\n"
            f'event_log_path = "{self.boot_log}"\n'
            f"{self.gpus.agent_keys()}"
            f"{self.cvm.agent_keys()}"
            f"{extra}"
            "\n[agent.tls]\n"
            f'ca_certificate = "{self.pki / "ca.crt"}"\n'
            f'certificate = "{self.pki / f"agent-{HOST_ID}.crt"}"\n'
            f'private_key = "{self.pki / f"agent-{HOST_ID}.key"}"\n'
            f"{tables}"
        )

    def publish_sample_model(self) -> None:
        say("alice encrypts a sample checkpoint, then proposes a site, the host's assignment "
             "and a pre-deployment review")  # fmt: skip
        source = self.state / "sample-model"
        source.mkdir()
        for name, size in SAMPLE_FILES.items():
            (source / name).write_bytes(b"{}" if size == 0 else os.urandom(size))
        added = self.weightgate(
            "models", "add", "sample-model", "--version", "1", "--path", str(source),
            "--risk-tier", RISK_TIER, "--config", str(self.verifier_config),
        )  # fmt: skip
        print("    " + added.strip())
        digest = added.split()[-1]
        site = ("sites", "set", SITE, "--cleared", RISK_TIER,
                "--description", "demo datacenter, operated by the lab")  # fmt: skip
        self.proposals.append(self.propose(*site))
        self.proposals.append(self.propose("hosts", "assign", HOST_ID, "--site", SITE))
        review = ("reviews", "propose", digest, "--site", SITE,
                  "--categories", "cyber,cbrn,autonomy", "--findings", "none blocking",
                  "--controls", "measured_boot_log,gpu_attestation,confidential_vm",
                  "--summary", "sample model cleared for the demo site")  # fmt: skip
        self.proposals.append(self.propose(*review))
        say("nothing takes effect yet: the proposals await two approvers besides alice")
        print(self.weightgate("proposals", "list", "--state", "pending", who=AUDITOR))
        refused = subprocess.run(  # noqa: S603
            [tool("weightgate"), "proposals", "approve", self.proposals[0],
             *self.connection(PROPOSER)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        print(f"    alice approving her own proposal: {refused.stderr.strip()}")
        say("bob and carol approve each proposal; it applies at the second approval")
        self.approve(self.proposals)
        public_key = self.state / "verifier-signing.pub"
        public_key.write_text(
            run([tool("weightgate"), "verifier", "public-key", "--config",
                  str(self.verifier_config)])
        )  # fmt: skip
        self.public_key = public_key
        self.write_agent_config(
            extra=f'verifier_signing_key = "{public_key}"\n',
            tables=(
                f'\n[[agent.models]]\nmanifest_digest = "{digest}"\ntarget_dir = "{self.target}"\n'
            ),
        )

    def start_agent(self) -> None:
        say("starting the agent: it enrolls its TPM (EK cert, AK, credential activation)")
        argv = [tool("weightgate-agent"), "run", "--config", str(self.agent_config)]
        agent = start(argv, self.state / "agent.log", self.stack)
        self.processes.append(agent)
        print(f"    agent pid {agent.pid}")
        self.wait("the host to become trusted", lambda: self.status() == "trusted")
        say("the host is attested and TRUSTED")
        print(self.weightgate("hosts", "list"))
        shown = json.loads(self.weightgate("hosts", "show", HOST_ID, "--json", "--history", "1"))
        checks = shown["history"][0]["checks_run"] if shown["history"] else []
        if not {"nvidia.gpu.attested", "snp.attested"} <= set(checks):
            raise RuntimeError(f"the trusted verdict did not attest the GPUs and CVM: {checks}")
        print(f"    its {GPUS} GPUs each answered a nonce bound to this round's quote; checks: "
              + ", ".join(c for c in checks if c.startswith("nvidia.")))  # fmt: skip
        print("    its SEV-SNP report carried REPORT_DATA bound to the same quote; checks: "
              + ", ".join(c for c in checks if c.startswith("snp.")))  # fmt: skip

    def receive_weights(self) -> None:
        def holds_weights() -> bool:
            return all((self.target / name).is_file() for name in SAMPLE_FILES)

        self.wait("the weights to be released and decrypted", holds_weights)
        say("keys released to the host's TPM binding key; the agent decrypted the weights")
        print(self.weightgate("releases", "list"))
        for name in sorted(SAMPLE_FILES):
            copy, original = self.target / name, self.state / "sample-model" / name
            same = copy.read_bytes() == original.read_bytes()
            print(f"    {copy}: {copy.stat().st_size} bytes, bit-exact={same}")

    def tamper_and_erase(self) -> None:
        say("an unapproved boot component is measured into PCR4 (tpm2_pcrevent)")
        self.measure(4, b"bootloader: evil-grubx64.efi")
        self.wait("the host to become untrusted", lambda: self.status() == "untrusted")
        say("the next quote shows it: the host is UNTRUSTED, with the reason")
        print(self.weightgate("hosts", "list"))

        def erased() -> bool:
            releases = json.loads(self.weightgate("releases", "list", "--json"))["releases"]
            return bool(releases) and all(r["state"] == "erased" for r in releases)

        self.wait("the weights to be erased", erased)
        say("the release was revoked; the agent erased the weights and sent an AK-signed receipt")
        print(self.weightgate("releases", "list"))
        files = (
            sorted(p for p in self.target.rglob("*") if p.is_file()) if self.target.exists() else []
        )
        print(f"    files left in {self.target}: {[p.name for p in files] or 'none'}")
        print()
        print("\n".join(self.weightgate("hosts", "show", HOST_ID).splitlines()[:8]))

    def audit(self) -> None:
        say("dana (auditor) has the verifier sign a checkpoint and verifies the audit log")
        checkpoint = self.state / "audit-checkpoint.json"
        self.weightgate("audit", "checkpoint", "--out", str(checkpoint), who=AUDITOR)
        verified = self.weightgate(
            "audit", "verify", "--checkpoint", str(checkpoint),
            "--public-key", str(self.public_key), who=AUDITOR,
        )  # fmt: skip
        print("\n".join("    " + line for line in verified.strip().splitlines()))
        say("someone with database access changes one byte of one audit record")
        database = self.state / "verifier" / "verifier.db"
        with contextlib.closing(sqlite3.connect(database)) as db, db:
            seq, actor = db.execute(
                "SELECT seq, actor FROM audit_records WHERE actor = ? ORDER BY seq LIMIT 1",
                (PROPOSER,),
            ).fetchone()
            db.execute("UPDATE audit_records SET actor = ? WHERE seq = ?", ("alicf", seq))
        print(f"    record {seq}: actor {actor!r} -> 'alicf'")
        tampered = subprocess.run(  # noqa: S603
            [tool("weightgate"), "audit", "verify", "--checkpoint", str(checkpoint),
             "--public-key", str(self.public_key), *self.connection(AUDITOR)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if tampered.returncode == 0:
            raise RuntimeError("audit verify passed over an edited record")
        report = (tampered.stdout + tampered.stderr).strip()
        print("\n".join("    " + line for line in report.splitlines()))
        print(f"    audit verify exit status {tampered.returncode}: the edit is detected")


def _demo(state: Path, stack: ExitStack) -> None:
    demo = _Demo(state, stack)
    demo.issue_certificates()
    demo.start_tpm()
    demo.start_verifier()
    demo.register_host()
    demo.publish_sample_model()
    demo.start_agent()
    demo.receive_weights()
    demo.tamper_and_erase()
    demo.audit()
    say("stopping the agent, the verifier and the TPM")
