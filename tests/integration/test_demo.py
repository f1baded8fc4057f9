"""`weightgate demo` end to end, as a user runs it: trusted, then untrusted, then tidy."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WEIGHTGATE = Path(sys.executable).parent / "weightgate"
DEMO_TIMEOUT_SECONDS = 120
GONE_WITHIN_SECONDS = 5.0


def _gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return re.search(r"^State:\s+Z", status, re.MULTILINE) is not None


def test_demo_shows_trusted_then_untrusted_and_stops_everything(tmp_path: Path) -> None:
    tools = ("swtpm", "swtpm_setup", "swtpm_localca", "tpm2_pcrevent")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    # The demo keeps its state under TMPDIR: point it here so leftovers are visible.
    env = os.environ | {"TMPDIR": str(tmp_path)}
    demo = subprocess.Popen(
        [str(WEIGHTGATE), "demo"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, so a hung demo can be killed whole
    )
    try:
        output, _ = demo.communicate(timeout=DEMO_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGKILL)
        output, _ = demo.communicate()
        pytest.fail(f"the demo did not finish in {DEMO_TIMEOUT_SECONDS}s:\n{output}")

    assert demo.returncode == 0, output
    trusted = re.search(r"^demo-host\s+demo\s+trusted\s", output, re.MULTILINE)
    untrusted = re.search(r"^demo-host\s+demo\s+untrusted\s.*tpm\.pcr\.mismatch", output, re.M)
    assert trusted is not None, output
    assert untrusted is not None, output
    assert trusted.start() < untrusted.start(), output
    assert "PCR4" in output[untrusted.start() :]
    # The two-person rule: nothing alice proposed applied before carol's approval.
    assert re.search(r"carol: proposal \w+ applied: reference values of group demo", output)
    assert re.search(r"carol: proposal \w+ applied: review \w+ in force", output)
    assert "alice approving her own proposal: weightgate: PERMISSION_DENIED" in output
    # The review requires the boot log to replay against each quote and every GPU
    # to attest: the release below happened, so the agent's log matched the swtpm's
    # PCRs and the four simulated GPUs answered nonces bound to the quote.
    assert "+ required controls: confidential_vm, gpu_attestation, measured_boot_log" in output
    assert re.search(r"carol: proposal \w+ applied: AMD SEV-SNP policy of group demo", output)
    assert re.search(r"SEV-SNP report carried REPORT_DATA .*snp\.attested", output), output
    assert re.search(r"carol: proposal \w+ applied: NVIDIA GPU policy of group demo", output)
    assert re.search(r"its 4 GPUs each answered .*nvidia\.gpu\.attested", output), output
    first_applied = output.index(" applied: ")
    assert output.index("bob: proposal") < first_applied < trusted.start()
    # The audit log verifies, then a one-byte edit is caught.
    assert "audit chain intact" in output
    assert "audit chain BROKEN: audit record" in output
    assert "the edit is detected" in output

    pids = {name: int(pid) for name, pid in re.findall(r"(swtpm|verifier|agent) pid (\d+)", output)}
    assert set(pids) == {"swtpm", "verifier", "agent"}, output
    deadline = time.monotonic() + GONE_WITHIN_SECONDS
    while not all(_gone(pid) for pid in pids.values()):
        if time.monotonic() > deadline:
            alive = {name: pid for name, pid in pids.items() if not _gone(pid)}
            for pid in alive.values():  # started (indirectly) by this test: clean up
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the demo left processes running: {alive}")
        time.sleep(0.05)
    # Without --keep the demo removes its state directory.
    assert not list(tmp_path.glob("weightgate-demo-*")), output
