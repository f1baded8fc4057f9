"""The agent's device-evidence keys: SEV-SNP (snp_evidence, snp_simulator, snp_tsm_dir)."""

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


def _load(directory: Path, extra: str) -> AgentConfig:
    path = directory / "agent.toml"
    path.write_text(BASE + extra)
    return load_config(path)


def test_snp_defaults_to_configfs_tsm(tmp_path: Path) -> None:
    config = _load(tmp_path, "")
    assert config.snp_evidence == "tsm"
    assert config.snp_simulator is None
    assert config.snp_tsm_dir == DEFAULT_SNP_TSM_DIR == Path("/sys/kernel/config/tsm/report")
    assert AgentConfig.snp_evidence == "tsm"  # the dataclass default agrees with the loader


def test_snp_settings_are_read(tmp_path: Path) -> None:
    config = _load(
        tmp_path, 'snp_evidence = "simulator"\nsnp_simulator = "snp-host"\nsnp_tsm_dir = "tsm"\n'
    )
    assert config.snp_evidence == "simulator"
    assert config.snp_simulator == tmp_path.resolve() / "snp-host"
    assert config.snp_tsm_dir == tmp_path.resolve() / "tsm"


def test_snp_off(tmp_path: Path) -> None:
    assert _load(tmp_path, 'snp_evidence = "off"\n').snp_evidence == "off"


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
    ],
)  # fmt: skip
def test_bad_snp_settings_are_located(tmp_path: Path, keys: str, where: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, keys + "\n")
    assert where in str(e.value), str(e.value)


def test_gpu_and_snp_simulators_are_independent(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        'gpu_evidence = "simulator"\ngpu_simulator = "fleet"\n'
        'snp_evidence = "simulator"\nsnp_simulator = "host"\n',
    )
    assert config.gpu_simulator == tmp_path.resolve() / "fleet"
    assert config.snp_simulator == tmp_path.resolve() / "host"


def test_gpu_timeout_still_read(tmp_path: Path) -> None:
    assert _load(tmp_path, "gpu_timeout_seconds = 5\n").gpu_timeout_seconds == 5.0
    with pytest.raises(ConfigError, match=":7: \\[agent\\] gpu_timeout_seconds: expected a pos"):
        _load(tmp_path, "gpu_timeout_seconds = 0\n")
