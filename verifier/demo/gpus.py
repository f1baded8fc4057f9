"""The demo's GPUs: a simulated fleet (devsim), its RIMs imported as an operator would.

The fleet's device and RIM roots are test roots, so the demo's verifier trusts them
through ``insecure_test_roots`` — the one setting that does, never a default. The
simulator runs as its own process (``python -m devsim.nvidia``): the verifier
package never imports it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from verifier.demo.processes import run, tool

__all__ = ["DemoGpus", "make_demo_gpus"]


@dataclass(frozen=True)
class DemoGpus:
    fleet: Path
    rim_store: Path
    count: int

    @property
    def policy(self) -> Path:
        return self.fleet / "gpu_policy.json"

    def verifier_table(self) -> str:
        """``[verifier.nvidia]`` for the demo's verifier config."""
        roots = [self.fleet / "trust" / "device_root.pem", self.fleet / "trust" / "rim_root.pem"]
        return (
            "\n[verifier.nvidia]  # simulated GPUs: their TEST roots, trusted explicitly\n"
            f"rim_store = {json.dumps(str(self.rim_store))}\n"
            f"ocsp_dir = {json.dumps(str(self.fleet / 'ocsp'))}\n"
            f"insecure_test_roots = [{', '.join(json.dumps(str(r)) for r in roots)}]\n"
        )

    def agent_keys(self) -> str:
        """The agent config keys that answer GPU requests from the simulated fleet."""
        return f'gpu_evidence = "simulator"\ngpu_simulator = {json.dumps(str(self.fleet))}\n'


def make_demo_gpus(state: Path, count: int) -> DemoGpus:
    """Create a fleet of ``count`` GPUs under ``state`` and import its RIMs into a store."""
    fleet = state / "gpu-fleet"
    store = state / "rim-store"
    print("    " + run([sys.executable, "-m", "devsim.nvidia", "init", str(fleet),
                        "--gpus", str(count)]).strip())  # fmt: skip
    rims = sorted(str(path) for path in (fleet / "rims").glob("*.xml"))
    imported = run([tool("weightgate"), "reference", "import-rim", *rims, "--store", str(store),
                    "--rim-root", str(fleet / "trust" / "rim_root.pem"),
                    "--allow-other-rim-root"])  # fmt: skip
    for line in imported.splitlines():
        print("    " + " ".join(line.split()[:3]))
    return DemoGpus(fleet, store, count)
