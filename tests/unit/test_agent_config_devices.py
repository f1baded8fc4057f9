"""The agent's device-evidence keys: SEV-SNP (snp_evidence, snp_simulator, snp_tsm_dir),
TDX (tdx_evidence, tdx_simulator; its configfs-tsm directory is snp_tsm_dir) and GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, ConfigError, load_config
from agent.config_devices import DEFAULT_SNP_TSM_DIR

BASE = """\
[agent]
host_id = "node-1"
verifier = "verifier.example:8443"
tcti = "swtpm:host=127.0.0.1,port=2321"
state_dir = "state"
insecure = true
"""
DEVICES = ["snp", "tdx"]  # the configfs-tsm devices: <device>_evidence, <device>_simulator


def _load(directory: Path, extra: str) -> AgentConfig:
    path = directory / "agent.toml"
    path.write_text(BASE + extra)
    return load_config(path)


@pytest.mark.parametrize("device", DEVICES)
def test_device_defaults_to_configfs_tsm(tmp_path: Path, device: str) -> None:
    config = _load(tmp_path, "")
    assert getattr(config, f"{device}_evidence") == "tsm"
    assert getattr(config, f"{device}_simulator") is None
    assert config.snp_tsm_dir == DEFAULT_SNP_TSM_DIR == Path("/sys/kernel/config/tsm/report")
    # the dataclass default agrees with the loader
    assert getattr(AgentConfig, f"{device}_evidence") == "tsm"


@pytest.mark.parametrize(("device", "simulator"), [("snp", "snp-host"), ("tdx", "tdx-guest")])
def test_device_settings_are_read(tmp_path: Path, device: str, simulator: str) -> None:
    config = _load(
        tmp_path,
        f'{device}_evidence = "simulator"\n{device}_simulator = "{simulator}"\n'
        'snp_tsm_dir = "tsm"\n',
    )
    assert getattr(config, f"{device}_evidence") == "simulator"
    assert getattr(config, f"{device}_simulator") == tmp_path.resolve() / simulator
    assert config.snp_tsm_dir == tmp_path.resolve() / "tsm"  # configfs-tsm: SNP and TDX alike


@pytest.mark.parametrize("device", DEVICES)
def test_device_off(tmp_path: Path, device: str) -> None:
    assert getattr(_load(tmp_path, f'{device}_evidence = "off"\n'), f"{device}_evidence") == "off"


@pytest.mark.parametrize(
    ("keys", "where"),
    [
        ('snp_evidence = "sev"', ':7: [agent] snp_evidence: expected "tsm", "off" or "simulator"'),
        ('snp_evidence = "simulator"', "[agent] snp_simulator: a devsim.snp host directory, set"),
        ('snp_simulator = "h"', ':7: [agent] snp_simulator: a devsim.snp host directory, set '
         'exactly when snp_evidence = "simulator"'),
        ('snp_evidence = "tsm"\nsnp_simulator = "h"', ":8: [agent] snp_simulator"),
        ("snp_tsm_dir = 3", ":7: [agent] snp_tsm_dir: expected a string"),
        ('snp_tsm_dir = ""', ":7: [agent] snp_tsm_dir: expected a string"),
        ("snp_evidence = true", ":7: [agent] snp_evidence"),
        ('tdx_evidence = "dcap"', ':7: [agent] tdx_evidence: expected "tsm", "off" or "simulator"'),
        ('tdx_evidence = "simulator"', "[agent] tdx_simulator: a devsim.tdx guest directory, set"),
        ('tdx_simulator = "g"', ':7: [agent] tdx_simulator: a devsim.tdx guest directory, set '
         'exactly when tdx_evidence = "simulator"'),
        ('tdx_evidence = "tsm"\ntdx_simulator = "g"', ":8: [agent] tdx_simulator"),
        ("tdx_simulator = 3", ":7: [agent] tdx_simulator: expected a string"),
        ("tdx_evidence = true", ":7: [agent] tdx_evidence"),
    ],
)  # fmt: skip
def test_bad_device_settings_are_located(tmp_path: Path, keys: str, where: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, keys + "\n")
    assert where in str(e.value), str(e.value)


@pytest.mark.parametrize(
    ("first", "second"), [(("gpu", "fleet"), ("snp", "host")), (("snp", "host"), ("tdx", "guest"))]
)
def test_device_simulators_are_independent(
    tmp_path: Path, first: tuple[str, str], second: tuple[str, str]
) -> None:
    config = _load(
        tmp_path,
        "".join(
            f'{device}_evidence = "simulator"\n{device}_simulator = "{name}"\n'
            for device, name in (first, second)
        ),
    )
    for device, name in (first, second):
        assert getattr(config, f"{device}_simulator") == tmp_path.resolve() / name


def test_gpu_timeout_still_read(tmp_path: Path) -> None:
    assert _load(tmp_path, "gpu_timeout_seconds = 5\n").gpu_timeout_seconds == 5.0
    with pytest.raises(ConfigError, match=":7: \\[agent\\] gpu_timeout_seconds: expected a pos"):
        _load(tmp_path, "gpu_timeout_seconds = 0\n")
