"""A simulated fleet of NVIDIA Hopper GPUs on disk: create it once, load it, attest.

Layout of a fleet directory (directories 0700, private keys 0600)::

    fleet.json              count, model, versions, CC state, validity
    trust/device_root.pem   the TEST device identity root (pin it explicitly)
    trust/rim_root.pem      the TEST RIM signing root (pin it explicitly)
    rims/<RIM id>.xml       one driver RIM and one VBIOS RIM, valid for every GPU
    ocsp/<keyhash>-<serial>.der   a good response per non-root certificate
    gpu_policy.json         a GPU policy (verifier format) these GPUs satisfy
    gpus/<i>/key.pem        GPU i's FMC leaf key: signs its reports
    gpus/<i>/chain.pem      GPU i's chain, leaf first, 5 certificates (root copy last)

The CA keys are never written: once the fleet exists nobody can issue another
certificate, RIM or OCSP answer under its roots. ``fleet.json`` is written last,
so a half-made directory fails to load instead of loading half a fleet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from devsim.files import key_pem, make_private_dir
from devsim.nvidia import ocsp, pki
from devsim.nvidia.files import FILES, FleetError
from devsim.nvidia.model import GpuModel
from devsim.nvidia.report import NONCE_SIZE, signed_report
from devsim.nvidia.rim import make_rim
from devsim.x509util import Validity, pem

FORMAT_VERSION = 1
# The agent refuses more than 64 GPUs (agent.collectors.gpu.MAX_GPUS); a fleet
# larger than any host could never be collected in one piece.
MAX_GPUS = 64
# Ten years bounds a typo (36500) while leaving long-lived demo fleets possible.
MAX_VALIDITY_DAYS = 3650
CHAIN_LENGTH = 5  # leaf, BROM, provisioner ICA, identity CA, root copy
CC_STATE = "on"

_FLEET_KEYS = frozenset(
    {
        "format",
        "simulator",
        "gpus",
        "cc_state",
        "created_at",
        "valid_until",
        "rim_ids",
        *GpuModel().to_json(),
    }
)


@dataclass(frozen=True)
class _Gpu:
    key: ec.EllipticCurvePrivateKey
    chain_pem: bytes
    fwid: bytes


@dataclass(frozen=True)
class Fleet:
    """A loaded fleet: its public trust material and each GPU's signing identity."""

    directory: Path
    model: GpuModel
    device_root_pem: bytes
    rim_root_pem: bytes
    created_at: datetime
    valid_until: datetime
    _gpus: tuple[_Gpu, ...] = field(repr=False)

    @property
    def gpu_count(self) -> int:
        return len(self._gpus)

    @property
    def cc_state(self) -> str:
        """The CC mode every simulated GPU is in (the verifier's CcState value)."""
        return CC_STATE

    @property
    def rims_dir(self) -> Path:
        return self.directory / "rims"

    @property
    def ocsp_dir(self) -> Path:
        return self.directory / "ocsp"

    @property
    def policy_path(self) -> Path:
        return self.directory / "gpu_policy.json"

    @property
    def rim_ids(self) -> tuple[str, str]:
        """(driver RIM id, VBIOS RIM id): the names the verifier looks the RIMs up by."""
        return self.model.driver_rim_id, self.model.vbios_rim_id

    def _gpu(self, position: int) -> _Gpu:
        if not 0 <= position < len(self._gpus):
            raise IndexError(f"GPU {position}: the fleet has {len(self._gpus)} GPUs")
        return self._gpus[position]

    def chain_pem(self, position: int) -> bytes:
        """GPU ``position``'s certificate chain as NVML returns it (PEM, leaf first)."""
        return self._gpu(position).chain_pem

    def attest(self, position: int, nonce: bytes) -> tuple[bytes, bytes]:
        """(report, chain PEM) of GPU ``position`` answering ``nonce`` (32 bytes).

        The report is what NVML returns: request + MEASUREMENTS response + r || s.
        """
        gpu = self._gpu(position)
        report = signed_report(self.model, nonce=bytes(nonce), fwid=gpu.fwid, leaf_key=gpu.key)
        return report, gpu.chain_pem


def _policy(model: GpuModel) -> bytes:
    doc = {
        "version": 1,
        "allowed_cc_states": [CC_STATE],
        "min_driver_version": model.driver_version,
        "min_vbios_version": model.vbios_version,
        "allowed_rim_ids": [model.driver_rim_id, model.vbios_rim_id],
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


def _check_request(directory: Path, gpus: int, validity_days: int, now: datetime) -> None:
    if isinstance(gpus, bool) or not 1 <= gpus <= MAX_GPUS:
        raise FleetError(f"--gpus must be 1..{MAX_GPUS}, got {gpus}")
    FILES.check_create(
        directory, validity_days=validity_days, max_validity_days=MAX_VALIDITY_DAYS, now=now
    )


def create_fleet(
    directory: Path, *, gpus: int, now: datetime | None = None, validity_days: int = 30
) -> Fleet:
    """Make a fleet of ``gpus`` simulated GPUs in ``directory`` (absent or empty).

    Every key and certificate is fresh; certificates and OCSP answers are valid
    from shortly before ``now`` (default: the current time) for ``validity_days``.
    Raises FleetError for bad arguments or an unusable directory.
    """
    now = datetime.now(UTC) if now is None else now
    directory = Path(directory)
    _check_request(directory, gpus, validity_days, now)
    model = GpuModel()
    validity = Validity.starting(now, validity_days)
    cas = pki.make_device_cas(validity)
    rim_pki = pki.make_rim_pki(validity)
    devices = [pki.make_device(cas, validity) for _ in range(gpus)]

    make_private_dir(directory)
    trust = make_private_dir(directory / "trust")
    FILES.write_public(trust / "device_root.pem", pem(cas.root.certificate))
    FILES.write_public(trust / "rim_root.pem", pem(rim_pki.root.certificate))
    gpus_dir = make_private_dir(directory / "gpus")
    for position, (brom, leaf) in enumerate(devices):
        gpu_dir = make_private_dir(gpus_dir / str(position))
        FILES.write_private(gpu_dir / "key.pem", key_pem(leaf.key))
        FILES.write_public(gpu_dir / "chain.pem", pki.device_chain_pem(leaf, brom, cas))
    rims = make_private_dir(directory / "rims")
    FILES.write_public(rims / f"{model.driver_rim_id}.xml", make_rim(model, rim_pki, role="driver"))
    FILES.write_public(rims / f"{model.vbios_rim_id}.xml", make_rim(model, rim_pki, role="vbios"))
    answered = [cas.identity, cas.provisioner, *rim_pki.chain]
    answered += [issued for pair in devices for issued in pair]
    ocsp.write_responses(
        make_private_dir(directory / "ocsp"),
        answered,
        now=now,
        next_update=validity.not_after,
    )
    FILES.write_public(directory / "gpu_policy.json", _policy(model))
    doc = {
        "format": FORMAT_VERSION,
        "simulator": "weightgate devsim.nvidia: TEST roots, not NVIDIA; never pin in production",
        "gpus": gpus,
        **model.to_json(),
        "cc_state": CC_STATE,
        "created_at": now.isoformat(),
        "valid_until": validity.not_after.isoformat(),
        "rim_ids": {"driver": model.driver_rim_id, "vbios": model.vbios_rim_id},
    }
    FILES.write_public(directory / "fleet.json", json.dumps(doc, indent=2).encode() + b"\n")
    return load_fleet(directory)


def _one_certificate(path: Path) -> bytes:
    FILES.certificates(path, 1)
    return FILES.read_file(path)


def _load_gpu(directory: Path) -> _Gpu:
    key = FILES.read_private_key(directory / "key.pem")
    chain_path = directory / "chain.pem"
    chain_pem = FILES.read_file(chain_path)
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise FleetError(f"{chain_path}: not PEM certificates") from None
    if len(chain) != CHAIN_LENGTH:
        raise FleetError(f"{chain_path}: {len(chain)} certificates, expected {CHAIN_LENGTH}")
    if chain[0].public_key() != key.public_key():
        raise FleetError(f"{chain_path}: the leaf is not for {directory / 'key.pem'}")
    try:
        fwid = pki.leaf_fwid(chain[0])
    except (x509.ExtensionNotFound, ValueError):
        raise FleetError(f"{chain_path}: the leaf carries no Hopper FWID extension") from None
    return _Gpu(key, chain_pem, fwid)


def load_fleet(directory: Path) -> Fleet:
    """Load a fleet made by :func:`create_fleet`; FleetError names the file at fault.

    Reads fleet.json, the two trust roots and every GPU's key and chain (keys
    must be private to their owner). RIMs, OCSP answers and the policy are the
    verifier's inputs and are not read here.
    """
    directory = Path(directory)
    meta = directory / "fleet.json"
    doc = FILES.read_json_object(meta, format_version=FORMAT_VERSION, keys=_FLEET_KEYS)
    count = doc.get("gpus")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_GPUS:
        raise FleetError(f"{meta}: gpus must be an integer 1..{MAX_GPUS}")
    if doc.get("cc_state") != CC_STATE:
        raise FleetError(f"{meta}: cc_state must be {CC_STATE!r}")
    try:
        model = GpuModel.from_json(doc)
    except ValueError as exc:
        raise FleetError(f"{meta}: {exc}") from None
    return Fleet(
        directory=directory,
        model=model,
        device_root_pem=_one_certificate(directory / "trust" / "device_root.pem"),
        rim_root_pem=_one_certificate(directory / "trust" / "rim_root.pem"),
        created_at=FILES.timestamp(doc, "created_at", meta),
        valid_until=FILES.timestamp(doc, "valid_until", meta),
        _gpus=tuple(_load_gpu(directory / "gpus" / str(i)) for i in range(count)),
    )


__all__ = ["NONCE_SIZE", "Fleet", "FleetError", "create_fleet", "load_fleet"]
