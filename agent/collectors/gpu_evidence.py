"""The GpuEvidence answer to a challenge's GpuRequest, from NVML or the simulator.

Each GPU is asked for a report over its own nonce, derived from the challenge nonce
and this round's quote bytes (:func:`weightgate.gpu_nonce.gpu_nonce`, the derivation
the verifier repeats), so the collection runs after the quote. Evidence bytes go
into the message untouched; whatever could not be collected is said in
``unavailable`` (for the whole host or per device), never silently left out.
"""

from __future__ import annotations

from pathlib import Path

from agent.collectors.bounded import BoundedCollector
from agent.collectors.gpu import GpuCollection, NvmlApi, collect_gpu_evidence
from agent.config import GpuSource
from weightgate.gpu_nonce import gpu_nonce
from weightgate.v1 import attestation_pb2

__all__ = ["BoundedGpuCollector", "gpu_evidence_message"]


def _nvml_for(source: GpuSource, simulator_dir: Path | None) -> NvmlApi | str | None:
    """The NVML to use (None: pynvml, loaded by the collector), or why there is none."""
    if source == "off":
        return 'GPU evidence is switched off on this agent (gpu_evidence = "off")'
    if source == "simulator":
        from agent.collectors.gpu_simulated import load_simulated_nvml  # noqa: PLC0415

        if simulator_dir is None:  # the config loader refuses this; kept fail-closed
            return "gpu_evidence = simulator without gpu_simulator directory"
        return load_simulated_nvml(simulator_dir)
    return None


def gpu_evidence_message(
    *,
    source: GpuSource,
    simulator_dir: Path | None,
    challenge_nonce: bytes,
    tpm_attest: bytes,
) -> attestation_pb2.GpuEvidence:
    """Collect every GPU's evidence for this round (blocking: run it in a thread)."""
    nvml = _nvml_for(source, simulator_dir)
    if isinstance(nvml, str):
        return attestation_pb2.GpuEvidence(unavailable=nvml)
    collection = collect_gpu_evidence(
        lambda position: gpu_nonce(challenge_nonce, tpm_attest, position), nvml=nvml
    )
    return _message(collection)


def _message(collection: GpuCollection) -> attestation_pb2.GpuEvidence:
    message = attestation_pb2.GpuEvidence(
        cc_state=collection.cc_mode or "",
        driver_version=collection.driver_version or "",
    )
    if collection.unavailable is not None:
        message.unavailable = collection.unavailable
        return message
    for gpu in collection.gpus:
        device = message.devices.add()
        # NVML enumerates GPUs only (NVSwitches need NSCQ): an empty arch says "GPU".
        if gpu.complete and gpu.report is not None and gpu.cert_chain is not None:
            device.report = gpu.report
            device.certificate_chain = gpu.cert_chain
        else:
            device.unavailable = "; ".join(gpu.reasons) or "NVML returned no report or chain"
    return message


class BoundedGpuCollector:
    """One GPU collection at a time, each given at most ``timeout_seconds``.

    NVML calls block in C and cannot be interrupted: a hung driver would hold the
    round past the verifier's deadline. So the collection runs in a worker thread,
    the round waits at most ``timeout_seconds`` and then answers "unavailable"
    (the verifier fails the round, naming it), and while that thread has not
    returned, later rounds answer "unavailable" at once instead of stacking more
    threads on a hung driver.
    """

    def __init__(
        self, *, source: GpuSource, simulator_dir: Path | None, timeout_seconds: float
    ) -> None:
        self._source, self._simulator_dir = source, simulator_dir
        self._bounded = BoundedCollector(
            timeout_seconds=timeout_seconds,
            unavailable=_unavailable,
            what="GPU collection",
            stuck="NVML",
            timeout_hint=" (gpu_timeout_seconds)",
        )

    async def collect(
        self, *, challenge_nonce: bytes, tpm_attest: bytes
    ) -> attestation_pb2.GpuEvidence:
        return await self._bounded.run(
            gpu_evidence_message,
            source=self._source,
            simulator_dir=self._simulator_dir,
            challenge_nonce=challenge_nonce,
            tpm_attest=tpm_attest,
        )


def _unavailable(reason: str) -> attestation_pb2.GpuEvidence:
    return attestation_pb2.GpuEvidence(unavailable=reason)
