"""One short device check: run the agent's GPU collector against the real NVML.

For a session lent a GPU machine (issue 6, item 7). It asks every GPU for an
attestation report over a fresh random 32-byte nonce and for its attestation
certificate chain through ``agent.collectors.gpu`` with the real pynvml, and
records what it saw under ``$OUT`` (or ``--out``):

- ``summary.json``: pynvml version, driver version, CC state, multi-GPU mode,
  and per GPU: nonce, report and chain lengths and SHA-256s, the reasons for
  anything missing, and which files were written;
- ``gpuN.report.bin`` and ``gpuN.chain.bin``: the bytes exactly as NVML returned
  them (trimmed to NVML's sizes), for the first ``--max-gpu-files`` GPUs (the
  device tool returns at most 8 files; the summary hashes every GPU).

It needs only the standard library, this repository's ``agent/collectors`` and
pynvml; never the verifier. It takes seconds.

Run it::

    python3 -m venv .venv-gpu && .venv-gpu/bin/pip install nvidia-ml-py
    .venv-gpu/bin/python tools/gpu_check.py            # writes to $OUT

On this project's H200 device image ``python3`` already has nvidia-ml-py and
nothing can be installed there, so ``python3 tools/gpu_check.py`` is the whole
command. If a GPU is not in confidential-computing mode, expect its report call
to fail with an NVML error (recorded in the summary, not a crash).

Exit status: 0 every GPU gave a report and a chain; 1 some GPU did not;
2 no evidence at all (pynvml missing, nvmlInit failed, no GPU), with the reason
on stderr and in the summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check-out")))
    parser.add_argument("--max-gpu-files", type=int, default=3)
    args = parser.parse_args(argv)
    # Run as a script from any directory: the collector lives in this repository.
    sys.path.insert(0, str(REPO))
    from agent.collectors.gpu import collect_gpu_evidence  # noqa: PLC0415

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    nonces: dict[int, bytes] = {}

    def nonce_for(index: int) -> bytes:
        nonces[index] = secrets.token_bytes(32)
        return nonces[index]

    started = time.monotonic()
    collection = collect_gpu_evidence(nonce_for)
    elapsed = time.monotonic() - started

    gpus: list[dict[str, Any]] = []
    for gpu in collection.gpus:
        entry: dict[str, Any] = {
            "index": gpu.index,
            "nonce": gpu.nonce.hex(),
            "complete": gpu.complete,
            "reasons": list(gpu.reasons),
            "files": [],
        }
        for name, data in (("report", gpu.report), ("chain", gpu.cert_chain)):
            entry[f"{name}_length"] = None if data is None else len(data)
            entry[f"{name}_sha256"] = None if data is None else hashlib.sha256(data).hexdigest()
            if data is not None and gpu.index < args.max_gpu_files:
                path = out / f"gpu{gpu.index}.{name}.bin"
                path.write_bytes(data)
                entry["files"].append(path.name)
        gpus.append(entry)

    summary = {
        "pynvml": _version("nvidia-ml-py"),
        "python": sys.version.split()[0],
        "unavailable": collection.unavailable,
        "driver_version": collection.driver_version,
        "cc_state": collection.cc_state,
        "multi_gpu_mode": collection.multi_gpu_mode,
        "reasons": list(collection.reasons),
        "gpu_count": len(collection.gpus),
        "gpus": gpus,
        "seconds": round(elapsed, 3),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    if collection.unavailable is not None:
        print(f"gpu_check: no GPU evidence: {collection.unavailable}", file=sys.stderr)
        return 2
    if not collection.gpus or not all(gpu.complete for gpu in collection.gpus):
        print("gpu_check: some GPU gave no report or chain (see reasons)", file=sys.stderr)
        return 1
    return 0


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
