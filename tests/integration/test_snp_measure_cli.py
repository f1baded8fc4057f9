"""`weightgate reference snp-measure` on sev-snp-measure's OVMF fixture (PROVENANCE.md).

The shared vector ``snp/ssm_ovmf_AmdSev_suffix.bin`` is the last 4 KiB of an
edk2-stable202405 AmdSevX64 OVMF build: it holds the footer table and SEV
metadata, so the measurement of a VM whose firmware is exactly these 4 KiB can be
computed and compared with the values PROVENANCE.md records (upstream's
tests/test_guest.py, re-run there). PROVENANCE passes ``/dev/null`` as kernel and
initrd; here an empty file stands in for it (the same bytes, hence the same hashes).
Driven through ``verifier.cli.main`` in-process, once as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.vectors import vectors_dir
from verifier.cli import main
from verifier.evidence.snp.policy import load_policy

CMDLINE = "console=ttyS0 loglevel=7"
OVMF_HASH = (
    "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa"
    "16aff8c374c2a55c467a50da6d466b74"
)
DEBUGSWAP_MEASUREMENT = (
    "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba"
    "7e534442e7e1e17895dfe778d0228977"
)
DEFAULT_FEATURES_MEASUREMENT = (
    "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362"
    "f390ef83a92046c042e706363b4b08fa"
)
EC2_MEASUREMENT = (
    "0ce9ccc06bab55eebe8abc234f3df6514883977a68a591b71052498ab52b2f1a"
    "a415db338033946ef93aa8278c0d67fb"
)
MILAN_TCB = "Milan:bootloader=3,tee=0,snp=8,microcode=115"


@pytest.fixture
def ovmf() -> Path:
    return vectors_dir("snp", "ssm_ovmf_AmdSev_suffix.bin")


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    return path


def _run(capsys: Any, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["reference", "snp-measure", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _measure(capsys: Any, *args: str) -> str:
    code, out, err = _run(capsys, *args)
    assert (code, err) == (0, ""), err
    return out.strip()


def _kernel_boot(ovmf: Path, kernel: Path, initrd: Path, *extra: str) -> list[str]:
    return [
        "--ovmf", str(ovmf), "--kernel", str(kernel), "--initrd", str(initrd),
        "--append", CMDLINE, "--vcpus", "1", "--vcpu-type", "EPYC-v4", *extra,
    ]  # fmt: skip


# --- PROVENANCE.md's values -------------------------------------------------------


def test_ovmf_hash_of_the_vector() -> None:
    from sevsnpmeasure import guest  # noqa: PLC0415

    ovmf = vectors_dir("snp", "ssm_ovmf_AmdSev_suffix.bin")
    assert guest.calc_snp_ovmf_hash(str(ovmf)).hex() == OVMF_HASH


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--guest-features", "0x21"], DEBUGSWAP_MEASUREMENT),
        (["--guest-features", "0x21", "--ovmf-hash", OVMF_HASH], DEBUGSWAP_MEASUREMENT),
        (["--guest-features", "33"], DEBUGSWAP_MEASUREMENT),
        ([], DEFAULT_FEATURES_MEASUREMENT),  # default 0x1, as sev-snp-measure's own CLI
        (["--guest-features", "0x1"], DEFAULT_FEATURES_MEASUREMENT),
    ],
)
def test_provenance_measurement(
    capsys: Any, ovmf: Path, empty: Path, extra: list[str], expected: str
) -> None:
    assert _measure(capsys, *_kernel_boot(ovmf, empty, empty, *extra)) == expected


def test_provenance_ec2_measurement(capsys: Any, ovmf: Path, empty: Path) -> None:
    # EC2 sets its own initial registers: no vCPU type is needed (nor measured).
    args = ["--ovmf", str(ovmf), "--kernel", str(empty), "--initrd", str(empty), "--append", ""]
    args += ["--vcpus", "1", "--guest-features", "0x21", "--vmm-type", "ec2"]
    assert _measure(capsys, *args) == EC2_MEASUREMENT


def test_kernel_without_initrd_measures_an_empty_initrd(
    capsys: Any, ovmf: Path, empty: Path
) -> None:
    args = ["--ovmf", str(ovmf), "--kernel", str(empty), "--append", CMDLINE, "--vcpus", "1"]
    args += ["--vcpu-type", "EPYC-v4", "--guest-features", "0x21"]
    assert _measure(capsys, *args) == DEBUGSWAP_MEASUREMENT


# --- determinism and one-mutation ------------------------------------------------


def test_deterministic(capsys: Any, ovmf: Path, tmp_path: Path) -> None:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd"
    kernel.write_bytes(bytes(range(256)) * 64)
    initrd.write_bytes(b"initrd" * 1000)
    args = _kernel_boot(ovmf, kernel, initrd, "--vcpus", "4")
    first = _measure(capsys, *args)
    assert len(bytes.fromhex(first)) == 48
    assert _measure(capsys, *args) == first


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "mutation",
    [
        "kernel byte", "initrd byte", "ovmf byte", "cmdline", "vcpus", "vcpu type",
        "guest features", "vmm type",
    ],
)  # fmt: skip
def test_one_changed_input_changes_the_measurement(
    capsys: Any, ovmf: Path, tmp_path: Path, mutation: str
) -> None:
    firmware = tmp_path / "OVMF.fd"  # a scratch copy to mutate, outside the repository
    firmware.write_bytes(ovmf.read_bytes())
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd"
    kernel.write_bytes(b"kernel" * 100)
    initrd.write_bytes(b"initrd" * 100)
    options = {
        "--ovmf": str(firmware), "--kernel": str(kernel), "--initrd": str(initrd),
        "--append": CMDLINE, "--vcpus": "2", "--vcpu-type": "EPYC-Milan",
        "--guest-features": "0x21", "--vmm-type": "QEMU",
    }  # fmt: skip

    def args() -> list[str]:
        return [item for pair in options.items() for item in pair]

    before = _measure(capsys, *args())
    if mutation == "kernel byte":
        _flip(kernel, 7)
    elif mutation == "initrd byte":
        _flip(initrd, 599)
    elif mutation == "ovmf byte":
        _flip(firmware, 0)  # page data, outside the footer table and metadata
    elif mutation == "cmdline":
        options["--append"] = CMDLINE.replace("7", "8")
    elif mutation == "vcpus":
        options["--vcpus"] = "3"
    elif mutation == "vcpu type":
        options["--vcpu-type"] = "EPYC-Genoa"
    elif mutation == "guest features":
        options["--guest-features"] = "0x1"
    else:
        options["--vmm-type"] = "gce"
    assert _measure(capsys, *args()) != before


# --- bad input: one line naming it, exit 2 ----------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"--ovmf": "/nonexistent/OVMF.fd"}, "--ovmf /nonexistent/OVMF.fd: no such file"),
        ({"--ovmf": None}, "--ovmf is required"),
        ({"--ovmf": "NOT_OVMF"}, "not an SEV-SNP OVMF build"),
        ({"--ovmf": "EMPTY"}, "not an SEV-SNP OVMF build"),
        ({"--kernel": "/nonexistent/vmlinuz"}, "--kernel /nonexistent/vmlinuz: no such file"),
        ({"--initrd": "/"}, "--initrd /: not a regular file"),
        ({"--kernel": None}, "--initrd needs --kernel"),
        ({"--kernel": None, "--initrd": None}, "--append needs --kernel"),
        ({"--vcpu-type": "EPYC-Zen9"}, "--vcpu-type 'EPYC-Zen9': unknown"),
        ({"--vcpu-type": None}, "--vcpu-type is required with --vmm-type QEMU"),
        ({"--vcpus": "0"}, "--vcpus '0': must be 1-4096"),
        ({"--vcpus": "four"}, "--vcpus 'four': not an integer"),
        ({"--vcpus": None}, "--vcpus is required"),
        ({"--guest-features": "0xZZ"}, "--guest-features '0xZZ': not an integer"),
        ({"--guest-features": "-1"}, "--guest-features '-1': must be"),
        ({"--vmm-type": "xen"}, "--vmm-type 'xen'"),
        ({"--ovmf-hash": "abc"}, "--ovmf-hash 'abc': not hex"),
        ({"--ovmf-hash": "ab" * 32}, "--ovmf-hash: must be 48 bytes, not 32"),
        ({"--policy-template": ""}, "--policy-template needs --min-tcb"),
        ({"--policy-template": "", "--min-tcb": "Zen9:snp=1"}, "--min-tcb 'Zen9:snp=1'"),
        ({"--policy-template": "", "--min-tcb": "Milan:snp=1"}, "--min-tcb: min_tcb[Milan]"),
        ({"--policy-template": "", "--min-tcb": "Milan:snp"}, "is not COMPONENT=SPL"),
        ({"--policy-template": "", "--min-tcb": "Milan:snp=999"}, "must be 0-255"),
        ({"--min-tcb": MILAN_TCB}, "--min-tcb is only for --policy-template"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    capsys: Any, ovmf: Path, tmp_path: Path, change: dict[str, str | None], named: str
) -> None:
    not_ovmf, empty = tmp_path / "not-ovmf.fd", tmp_path / "empty"
    not_ovmf.write_bytes(b"\xa5" * 4096)
    empty.write_bytes(b"")
    options: dict[str, str | None] = {
        "--ovmf": str(ovmf), "--kernel": str(empty), "--initrd": str(empty),
        "--append": CMDLINE, "--vcpus": "1", "--vcpu-type": "EPYC-v4",
    }  # fmt: skip
    options.update(change)
    substitute = {"NOT_OVMF": str(not_ovmf), "EMPTY": str(empty)}
    args: list[str] = []
    for flag, value in options.items():
        if value is None:
            continue
        args.append(flag)
        if value:
            args.append(substitute.get(value, value))
    code, out, err = _run(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("weightgate reference snp-measure: ")
    assert named in err


# --- output formats ---------------------------------------------------------------


def test_json_shape(capsys: Any, ovmf: Path, tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    args = ["--ovmf", str(ovmf), "--kernel", str(kernel), "--append", CMDLINE]
    args += ["--vcpus", "2", "--vcpu-type", "EPYC-Genoa", "--guest-features", "0x21"]
    plain = _measure(capsys, *args)
    document = json.loads(_measure(capsys, *args, "--json"))
    assert set(document) == {"measurement", "inputs", "computed_by"}
    assert document["measurement"] == plain
    assert document["computed_by"].startswith("sev-snp-measure ")
    inputs = document["inputs"]
    assert inputs["ovmf"] == {
        "path": str(ovmf),
        "sha256": hashlib.sha256(ovmf.read_bytes()).hexdigest(),
    }
    assert inputs["ovmf_hash"] is None
    assert inputs["kernel"] == {
        "path": str(kernel),
        "sha256": hashlib.sha256(b"kernel").hexdigest(),
    }
    assert inputs["initrd"] == {"path": None, "sha256": hashlib.sha256(b"").hexdigest()}
    assert inputs["cmdline"] == {
        "text": CMDLINE,
        "sha256_nul_terminated": hashlib.sha256(CMDLINE.encode() + b"\0").hexdigest(),
    }
    assert (inputs["vcpus"], inputs["vcpu_type"]) == (2, "EPYC-Genoa")
    assert (inputs["guest_features"], inputs["vmm_type"]) == ("0x21", "QEMU")


def test_json_without_kernel(capsys: Any, ovmf: Path) -> None:
    args = ["--ovmf", str(ovmf), "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--json"]
    inputs = json.loads(_measure(capsys, *args))["inputs"]
    assert inputs["kernel"] is None
    assert inputs["initrd"] is None
    assert inputs["cmdline"] is None


def test_policy_template_loads(capsys: Any, ovmf: Path, empty: Path) -> None:
    args = _kernel_boot(ovmf, empty, empty, "--guest-features", "0x21")
    args += ["--policy-template", "--min-tcb", MILAN_TCB]
    args += ["--min-tcb", "Turin:fmc=0,bootloader=1,tee=0,snp=3,microcode=9"]
    text = _measure(capsys, *args)
    policy = load_policy(text)
    assert policy.allowed_measurements == frozenset({bytes.fromhex(DEBUGSWAP_MEASUREMENT)})
    assert {line.value for line in policy.min_tcb} == {"Milan", "Turin"}
    assert set(json.loads(text)) == {"version", "allowed_measurements", "min_tcb"}


def test_help_as_a_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "verifier.cli", "reference", "snp-measure", "--help"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    expected = ["DebugSwap", "0x21", "--ovmf", "--kernel", "--initrd", "--append", "--vcpus"]
    expected += ["--vcpu-type", "EPYC-Milan", "--vmm-type", "--policy-template", "--min-tcb"]
    for words in expected:
        assert words in result.stdout


def test_kernel_with_an_ovmf_that_cannot_measure_one(
    capsys: Any, ovmf: Path, tmp_path: Path, empty: Path
) -> None:
    # The vector's SEV metadata declares the kernel-hashes page (type 0x10) at 0x810000;
    # retyped as plain SEC memory, OVMF is like an OvmfX64 build: no direct kernel boot.
    data = ovmf.read_bytes()
    kernel_hashes = struct.pack("<III", 0x810000, 0x1000, 0x10)
    assert data.count(kernel_hashes) == 1
    firmware = tmp_path / "OVMF-no-kernel-hashes.fd"
    firmware.write_bytes(data.replace(kernel_hashes, struct.pack("<III", 0x810000, 0x1000, 1)))
    without_kernel = ["--ovmf", str(firmware), "--vcpus", "1", "--vcpu-type", "EPYC-v4"]
    assert len(bytes.fromhex(_measure(capsys, *without_kernel))) == 48
    code, out, err = _run(capsys, *_kernel_boot(firmware, empty, empty))
    assert (code, out, err.count("\n")) == (2, "", 1)
    assert "--kernel: OVMF" in err
    assert "has no SNP kernel-hashes page" in err
