"""`weightgate demo`: a private swtpm, the verifier and one agent, end to end.

It shows what an operator would see: the host enrolls its TPM and becomes
trusted; then a PCR that the reference covers is extended (as an unapproved
boot component would) and the host turns untrusted, with the reason. Everything
it starts is stopped by pid, also on failure or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from verifier.demo.swtpm import start_swtpm

HOST_ID = "demo-host"
GROUP = "demo"
REFERENCE_PCRS = "0-7"
WAIT_SECONDS = 40.0
# What a tiny "boot" measures into the fresh TPM so the reference is not all zeros.
BOOT_MEASUREMENTS = (
    (0, "firmware: demo UEFI 1.0"),
    (4, "bootloader: shimx64.efi"),
    (4, "bootloader: grubx64.efi"),
    (7, "secure boot: enabled, db=demo-ca"),
)


def _say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _bin(name: str) -> str:
    """Our console scripts live beside the running interpreter (the venv's bin/)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def _run(argv: list[str], *, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)  # noqa: S603
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {result.stderr.strip()}")
    return result.stdout


def _start(argv: list[str], log_path: Path, stack: ExitStack) -> subprocess.Popen[bytes]:
    log_file = stack.enter_context(log_path.open("wb"))
    process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)  # noqa: S603

    def stop() -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    stack.callback(stop)
    return process


def _wait_for(
    what: str, check: Callable[[], bool], processes: list[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        if check():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


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


def _demo(state: Path, stack: ExitStack) -> None:
    _say("starting a private software TPM (swtpm) with an EK certificate from a local CA")
    tpm = start_swtpm(state / "swtpm")
    stack.callback(tpm.stop)
    print(f"    swtpm pid {tpm.pid}, {tpm.tcti}")
    tools_env = os.environ | {"TPM2TOOLS_TCTI": tpm.tcti}
    for pcr, measurement in BOOT_MEASUREMENTS:
        event = state / "event.bin"
        event.write_text(measurement)
        _run(["tpm2_pcrevent", str(pcr), str(event)], env=tools_env)
        print(f"    measured into PCR{pcr}: {measurement}")

    port = _free_port()
    verifier_address = f"127.0.0.1:{port}"
    ca_list = ", ".join(json.dumps(str(p)) for p in tpm.ek_ca_certificates)
    verifier_config = state / "verifier.toml"
    verifier_config.write_text(
        "[verifier]\n"
        f'listen = "{verifier_address}"\n'
        f'state_dir = "{state / "verifier"}"\n'
        "insecure = true  # demo only: plaintext on loopback\n"
        "attestation_interval_seconds = 2\n"
        f"ek_ca_certificates = [{ca_list}]\n"
    )
    _say(f"starting the verifier on {verifier_address} (SQLite in {state / 'verifier'})")
    verifier = _start(
        [_bin("weightgate"), "verifier", "serve", "--config", str(verifier_config)],
        state / "verifier.log",
        stack,
    )
    operator = [f"--verifier={verifier_address}", "--insecure"]

    def weightgate(*argv: str) -> str:
        return _run([_bin("weightgate"), *argv, *operator])

    def reachable() -> bool:
        try:
            weightgate("hosts", "list")
        except RuntimeError:
            return False
        return True

    _wait_for("the verifier to listen", reachable, [verifier])
    print(f"    verifier pid {verifier.pid}")

    _say(f"operator registers {HOST_ID} in group {GROUP!r}")
    print("    " + weightgate("hosts", "add", HOST_ID, "--group", GROUP).strip())

    agent_config = state / "agent.toml"
    agent_config.write_text(
        "[agent]\n"
        f'host_id = "{HOST_ID}"\n'
        f'verifier = "{verifier_address}"\n'
        f'tcti = "{tpm.tcti}"\n'
        f'state_dir = "{state / "agent"}"\n'
        "insecure = true  # demo only\n"
        "reconnect_initial_seconds = 0.5\n"
    )
    _say("operator takes reference PCRs 0-7 from the known-good host (weightgate-agent read-pcrs)")
    pcrs_file = state / "reference-pcrs.json"
    pcrs_file.write_text(
        _run(
            [_bin("weightgate-agent"), "read-pcrs", "--config", str(agent_config),
             "--bank", "sha256", "--pcrs", REFERENCE_PCRS]
        )
    )  # fmt: skip
    print(
        "    " + weightgate("reference", "set", "--group", GROUP, "--pcrs", str(pcrs_file)).strip()
    )

    _say("starting the agent: it enrolls its TPM (EK cert, AK, credential activation)")
    agent = _start(
        [_bin("weightgate-agent"), "run", "--config", str(agent_config)], state / "agent.log", stack
    )
    print(f"    agent pid {agent.pid}")

    def status() -> str:
        hosts = json.loads(weightgate("hosts", "list", "--json"))["hosts"]
        return str(hosts[0]["status"]) if hosts else "missing"

    _wait_for("the host to become trusted", lambda: status() == "trusted", [verifier, agent])
    _say("the host is attested and TRUSTED")
    print(weightgate("hosts", "list"))

    _say("an unapproved boot component is measured into PCR4 (tpm2_pcrevent)")
    event = state / "rootkit.bin"
    event.write_text("bootloader: evil-grubx64.efi")
    _run(["tpm2_pcrevent", "4", str(event)], env=tools_env)
    _wait_for("the host to become untrusted", lambda: status() == "untrusted", [verifier, agent])
    _say("the next quote shows it: the host is UNTRUSTED, with the reason")
    print(weightgate("hosts", "list"))
    print()
    print("\n".join(weightgate("hosts", "show", HOST_ID).splitlines()[:12]))
    _say("stopping the agent, the verifier and the TPM")
