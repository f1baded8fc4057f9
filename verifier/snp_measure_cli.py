"""`weightgate reference snp-measure`: the launch measurement an SEV-SNP VM must report.

The AMD secure processor hashes every page the hypervisor loads before the guest
starts (OVMF, the page of kernel/initrd/command-line hashes QEMU fills in for a
direct kernel boot, the CPUID and secrets pages, one VMSA per vCPU) into the
48-byte MEASUREMENT of every report. The computation is sev-snp-measure's
(virtee, PyPI ``sev-snp-measure``); this module checks the inputs, names the one
that is wrong, and prints the value for a policy's ``allowed_measurements``.
Offline: nothing here opens a connection.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from sevsnpmeasure import guest, ovmf, vcpu_types, vmm_types
from sevsnpmeasure.sev_mode import SevMode

from verifier.cli_inputs import add_described_parser, parse_hex, usage_exit
from verifier.evidence.snp import policy as snp_policy
from verifier.evidence.snp.tcb import ProductLine

__all__ = [
    "MeasureError",
    "MeasureInputs",
    "add_snp_measure_command",
    "launch_measurement",
    "run_snp_measure_command",
]

MEASUREMENT_SIZE = 48
# KVM's x86 vCPU limit (KVM_MAX_VCPUS): more cannot launch, and each vCPU adds a VMSA
# page to hash, so a typo like 40960 is named instead of computed.
MAX_VCPUS = 4096
# OVMF is mapped into the flash window below 4 GiB and real builds are 2-4 MiB: a
# larger file is the wrong file (a disk image), not firmware.
MAX_OVMF_BYTES = 64 << 20
VMM_TYPES = {
    "QEMU": vmm_types.VMMType.QEMU,
    "ec2": vmm_types.VMMType.ec2,
    "gce": vmm_types.VMMType.gce,
}
VCPU_TYPES: dict[str, int] = dict(vcpu_types.CPU_SIGS)
DEFAULT_GUEST_FEATURES = 0x1  # sev-snp-measure's own default: SNPActive only

DESCRIPTION = """\
Computes the expected SEV-SNP launch measurement (MEASUREMENT of the attestation
report) of a VM from its boot components, offline, and prints it as 96 hex digits.
The result goes into a policy's "allowed_measurements" (see --policy-template and
`weightgate reference propose-snp`). Every input below changes the value: give
exactly what the VMM is started with.

Guest features: the SEV_FEATURES the guest kernel enables, which the VMSAs carry.
0x1 (SNPActive) is sev-snp-measure's default; Linux 6.6+ guests enable DebugSwap
(bit 5) when the host supports it and then need --guest-features 0x21. When a
measured value does not match a real report, try the other one first.
"""


class MeasureError(Exception):
    """An input the measurement cannot be computed from; the message names it."""


@dataclass(frozen=True)
class MeasureInputs:
    """Everything the launch measurement depends on, checked."""

    ovmf: Path
    vcpus: int
    vcpu_type: str | None
    guest_features: int
    vmm_type: str
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    ovmf_hash: bytes | None = None


def add_snp_measure_command(reference_commands: Any) -> None:
    measure = add_described_parser(
        reference_commands,
        "snp-measure",
        help="compute the expected AMD SEV-SNP launch measurement from OVMF, kernel, initrd, ...",
        description=DESCRIPTION,
    )
    # Values are checked by run_snp_measure_command, not by argparse, so that a bad one is
    # reported in one line that names it (argparse prints its usage first).
    measure.add_argument(
        "--ovmf", metavar="OVMF.fd",
        help="the OVMF firmware image the VM boots (an SEV-SNP build, e.g. edk2 "
        "OvmfPkg/AmdSev/AmdSevX64.dsc for a direct kernel boot); required",
    )  # fmt: skip
    measure.add_argument(
        "--ovmf-hash", metavar="HEX",
        help="sev-snp-measure's precomputed OVMF hash (96 hex digits, its --mode "
        "snp:ovmf-hash): the pages of --ovmf are then not hashed again, but --ovmf is still "
        "read for its SEV metadata and reset vector",
    )  # fmt: skip
    measure.add_argument(
        "--kernel", type=Path, metavar="FILE",
        help="the kernel QEMU boots directly (-kernel, with kernel-hashes=on on the "
        "sev-snp-guest object); its SHA-256 is in the measured hashes page. Leave it out "
        "for a VM that boots from its disk",
    )  # fmt: skip
    measure.add_argument(
        "--initrd", type=Path, metavar="FILE",
        help="the initrd (-initrd); needs --kernel. Without it the hash of an empty initrd "
        "is measured, as QEMU does",
    )  # fmt: skip
    measure.add_argument(
        "--append",
        metavar="CMDLINE",
        help="the kernel command line (-append), byte for byte; needs --kernel",
    )
    measure.add_argument("--vcpus", metavar="N", help="number of vCPUs (one VMSA each)")
    measure.add_argument(
        "--vcpu-type", metavar="TYPE",
        help="QEMU -cpu model, whose CPUID signature is in each VMSA: "
        f"{', '.join(VCPU_TYPES)}; required for --vmm-type QEMU",
    )  # fmt: skip
    measure.add_argument(
        "--guest-features", metavar="VALUE",
        help="SEV_FEATURES the guest enables, e.g. 0x21 for Linux 6.6+ with DebugSwap "
        f"(default {DEFAULT_GUEST_FEATURES:#x}; see above)",
    )  # fmt: skip
    measure.add_argument(
        "--vmm-type", default="QEMU", metavar="VMM",
        help=f"who launches the VM: {', '.join(VMM_TYPES)} (initial register state "
        "differs; default QEMU)",
    )  # fmt: skip
    output = measure.add_mutually_exclusive_group()
    output.add_argument(
        "--json", action="store_true",
        help="print the measurement with the inputs' SHA-256 digests",
    )  # fmt: skip
    output.add_argument(
        "--policy-template", action="store_true",
        help="print a minimal SEV-SNP policy (verifier/evidence/snp/policy.py) allowing this "
        "measurement, for `reference propose-snp --policy`; needs --min-tcb",
    )  # fmt: skip
    measure.add_argument(
        "--min-tcb", action="append", metavar="LINE:COMPONENT=SPL,...",
        help="with --policy-template: the minimum TCB of a product line, e.g. "
        "Milan:bootloader=3,tee=0,snp=8,microcode=115 (Turin adds fmc=); repeat per line. "
        "Take it from a known-good report (`weightgate evidence verify snp --json`)",
    )  # fmt: skip


def _file(path: Path, flag: str) -> Path:
    if not path.is_file():
        reason = "not a regular file" if path.exists() else "no such file"
        raise MeasureError(f"{flag} {path}: {reason}")
    return path


def _int(text: str, flag: str, minimum: int, maximum: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise MeasureError(f"{flag} {text!r}: not an integer") from None
    if not minimum <= value <= maximum:
        shown = f"{maximum:#x}" if maximum > 0xFFFF else str(maximum)
        raise MeasureError(f"{flag} {text!r}: must be {minimum}-{shown}")
    return value


def inputs_from_args(args: argparse.Namespace) -> MeasureInputs:
    """The checked inputs (MeasureError: the first bad one, named)."""
    if args.ovmf is None:
        raise MeasureError("--ovmf is required")
    ovmf = _file(Path(args.ovmf), "--ovmf")
    if ovmf.stat().st_size > MAX_OVMF_BYTES:
        raise MeasureError(f"--ovmf {ovmf}: larger than {MAX_OVMF_BYTES >> 20} MiB, not firmware")
    if args.vmm_type not in VMM_TYPES:
        raise MeasureError(f"--vmm-type {args.vmm_type!r}: one of {', '.join(VMM_TYPES)}")
    if args.vcpus is None:
        raise MeasureError("--vcpus is required")
    vcpus = _int(args.vcpus, "--vcpus", 1, MAX_VCPUS)
    if args.vcpu_type is None and args.vmm_type == "QEMU":
        raise MeasureError("--vcpu-type is required with --vmm-type QEMU")
    if args.vcpu_type is not None and args.vcpu_type not in VCPU_TYPES:
        raise MeasureError(
            f"--vcpu-type {args.vcpu_type!r}: unknown, one of {', '.join(VCPU_TYPES)}"
        )
    guest_features = DEFAULT_GUEST_FEATURES
    if args.guest_features is not None:
        guest_features = _int(args.guest_features, "--guest-features", 0, (1 << 64) - 1)
    for flag, value in (("--initrd", args.initrd), ("--append", args.append)):
        if value is not None and args.kernel is None:
            raise MeasureError(f"{flag} needs --kernel (only a direct kernel boot measures it)")
    ovmf_hash = None
    if args.ovmf_hash is not None:
        ovmf_hash = parse_hex("--ovmf-hash", args.ovmf_hash, MeasureError)
        if len(ovmf_hash) != MEASUREMENT_SIZE:
            raise MeasureError(
                f"--ovmf-hash: must be {MEASUREMENT_SIZE} bytes, not {len(ovmf_hash)}"
            )
    return MeasureInputs(
        ovmf=ovmf,
        vcpus=vcpus,
        vcpu_type=args.vcpu_type,
        guest_features=guest_features,
        vmm_type=args.vmm_type,
        kernel=None if args.kernel is None else _file(args.kernel, "--kernel"),
        initrd=None if args.initrd is None else _file(args.initrd, "--initrd"),
        append=args.append,
        ovmf_hash=ovmf_hash,
    )


def _check_ovmf(path: Path) -> None:
    """Refuse a file that is no SEV-SNP OVMF before the library reads it as one.

    Without the SEV-ES reset block and SEV metadata the library would still measure
    a foreign file's pages, or fail on --kernel and blame the kernel.
    """
    firmware = ovmf.OVMF(str(path))
    firmware.sev_es_reset_eip()  # RuntimeError when the footer table lacks it
    if not firmware.metadata_items():
        raise RuntimeError("no SEV metadata (OVMF_SEV_META_DATA_GUID) in its footer table")


def launch_measurement(inputs: MeasureInputs) -> bytes:
    """The 48-byte launch measurement (MeasureError: an input it cannot come from)."""
    vcpu_sig = 0 if inputs.vcpu_type is None else VCPU_TYPES[inputs.vcpu_type]
    kernel = None if inputs.kernel is None else str(inputs.kernel)
    initrd = None if inputs.initrd is None else str(inputs.initrd)
    try:
        _check_ovmf(inputs.ovmf)
        digest = guest.calc_launch_digest(
            SevMode.SEV_SNP,
            inputs.vcpus,
            vcpu_sig,
            str(inputs.ovmf),
            kernel,
            initrd,
            inputs.append,
            inputs.guest_features,
            "" if inputs.ovmf_hash is None else inputs.ovmf_hash.hex(),
            VMM_TYPES[inputs.vmm_type],
        )
    except OSError as exc:
        raise MeasureError(f"{exc.filename}: cannot read: {exc.strerror}") from None
    except RuntimeError as exc:
        if "SNP_KERNEL_HASHES" in str(exc):
            raise MeasureError(
                f"--kernel: OVMF {inputs.ovmf} has no SNP kernel-hashes page, so it cannot "
                "measure a direct kernel boot (use an OvmfPkg/AmdSev build)"
            ) from None
        raise MeasureError(f"--ovmf {inputs.ovmf}: not an SEV-SNP OVMF build: {exc}") from None
    # The library parses OVMF's footer table and metadata with ctypes and asserts on sizes:
    # a truncated or foreign file surfaces as one of these.
    except (ValueError, LookupError, AssertionError, OverflowError) as exc:
        raise MeasureError(f"--ovmf {inputs.ovmf}: not an SEV-SNP OVMF build: {exc}") from None
    if not isinstance(digest, bytes) or len(digest) != MEASUREMENT_SIZE:
        raise MeasureError("sev-snp-measure returned no 48-byte measurement")
    return digest


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise MeasureError(f"{path}: cannot read: {exc.strerror}") from None
    return digest.hexdigest()


def _file_entry(path: Path | None) -> dict[str, str] | None:
    return None if path is None else {"path": str(path), "sha256": _sha256_file(path)}


def _initrd_entry(inputs: MeasureInputs) -> dict[str, str | None] | None:
    if inputs.kernel is None:
        return None
    if inputs.initrd is None:  # QEMU measures an empty initrd then
        return {"path": None, "sha256": hashlib.sha256(b"").hexdigest()}
    return dict(_file_entry(inputs.initrd) or {})


def measurement_document(inputs: MeasureInputs, measurement: bytes) -> dict[str, Any]:
    """The measurement and what it was computed from (``--json``)."""
    cmdline = None
    if inputs.kernel is not None:
        text = inputs.append or ""
        # What QEMU puts in the hashes page: the command line with its terminating NUL.
        nul_terminated = hashlib.sha256(text.encode() + b"\x00").hexdigest()
        cmdline = {"text": text, "sha256_nul_terminated": nul_terminated}
    return {
        "measurement": measurement.hex(),
        "inputs": {
            "ovmf": _file_entry(inputs.ovmf),
            "ovmf_hash": None if inputs.ovmf_hash is None else inputs.ovmf_hash.hex(),
            "kernel": _file_entry(inputs.kernel),
            "initrd": _initrd_entry(inputs),
            "cmdline": cmdline,
            "vcpus": inputs.vcpus,
            "vcpu_type": inputs.vcpu_type,
            "guest_features": f"{inputs.guest_features:#x}",
            "vmm_type": inputs.vmm_type,
        },
        "computed_by": f"sev-snp-measure {version('sev-snp-measure')}",
    }


def _min_tcb(specs: list[str] | None) -> dict[str, dict[str, int]]:
    if not specs:
        raise MeasureError(
            "--policy-template needs --min-tcb LINE:COMPONENT=SPL,... (a policy without a "
            "minimum TCB is refused)"
        )
    lines = {p.value for p in ProductLine}
    result: dict[str, dict[str, int]] = {}
    for spec in specs:
        line, sep, components = spec.partition(":")
        if not sep or line not in lines:
            raise MeasureError(
                f"--min-tcb {spec!r}: must start with a product line {sorted(lines)}"
            )
        spls: dict[str, int] = {}
        for item in components.split(","):
            name, sep, value = item.partition("=")
            if not sep:
                raise MeasureError(f"--min-tcb {spec!r}: {item!r} is not COMPONENT=SPL")
            spls[name.strip()] = _int(value, f"--min-tcb {line}:{name.strip()}=", 0, 255)
        result[line] = spls
    return result


def policy_template(measurement: bytes, min_tcb: dict[str, dict[str, int]]) -> dict[str, Any]:
    """A policy allowing this measurement; load_policy accepts it (MeasureError: min_tcb)."""
    document = {
        "version": snp_policy.POLICY_FORMAT_VERSION,
        "allowed_measurements": [measurement.hex()],
        "min_tcb": min_tcb,
    }
    try:
        snp_policy.load_policy(json.dumps(document))
    except snp_policy.PolicyError as exc:
        raise MeasureError(f"--min-tcb: {exc}") from None
    return document


def run_snp_measure_command(args: argparse.Namespace) -> int:
    try:
        inputs = inputs_from_args(args)
        min_tcb = _min_tcb(args.min_tcb) if args.policy_template else None
        if min_tcb is None and args.min_tcb:
            raise MeasureError("--min-tcb is only for --policy-template")
        measurement = launch_measurement(inputs)
        if min_tcb is not None:
            output = json.dumps(policy_template(measurement, min_tcb), indent=2)
        elif args.json:
            output = json.dumps(measurement_document(inputs, measurement), indent=2)
        else:
            output = measurement.hex()
    except MeasureError as exc:
        return usage_exit("reference snp-measure", exc)
    print(output)
    return 0
