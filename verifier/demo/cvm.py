"""The demo host as an AMD SEV-SNP confidential VM: a simulated CVM (devsim).

Its ARK is a TEST root, so the demo's verifier trusts it through
``insecure_test_roots`` — the one setting that does, never a default. The simulator
runs as its own process (``python -m devsim.snp``): the verifier never imports it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from verifier.demo.processes import run

__all__ = ["DemoCvm", "make_demo_cvm"]


@dataclass(frozen=True)
class DemoCvm:
    directory: Path

    @property
    def policy(self) -> Path:
        return self.directory / "snp_policy.json"

    def verifier_table(self) -> str:
        """``[verifier.snp]`` for the demo's verifier config."""
        chain = json.dumps(str(self.directory / "cert_chain.pem"))
        return (
            "\n[verifier.snp]  # the simulated CVM: its TEST ARK, trusted explicitly\n"
            f"insecure_test_roots = [{chain}]\n"
        )

    def agent_keys(self) -> str:
        """The agent config keys that answer SNP requests from the simulated CVM."""
        return f'snp_evidence = "simulator"\nsnp_simulator = {json.dumps(str(self.directory))}\n'


def make_demo_cvm(state: Path) -> DemoCvm:
    """Create the simulated SEV-SNP guest under ``state``."""
    directory = state / "snp-cvm"
    print("    " + run([sys.executable, "-m", "devsim.snp", "init", str(directory)]).strip())
    return DemoCvm(directory)
