"""The agent's TDX evidence keys: tdx_evidence, tdx_simulator (configfs-tsm dir: snp_tsm_dir)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, ConfigError, load_config

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


def test_tdx_defaults_to_configfs_tsm(tmp_path: Path) -> None:
    config = _load(tmp_path, "")
    assert config.tdx_evidence == "tsm"
    assert config.tdx_simulator is None
    assert AgentConfig.tdx_evidence == "tsm"  # the dataclass default agrees with the loader


def test_tdx_settings_are_read(tmp_path: Path) -> None:
    config = _load(
        tmp_path, 'tdx_evidence = "simulator"\ntdx_simulator = "tdx-guest"\nsnp_tsm_dir = "tsm"\n'
    )
    assert config.tdx_evidence == "simulator"
    assert config.tdx_simulator == tmp_path.resolve() / "tdx-guest"
    assert config.snp_tsm_dir == tmp_path.resolve() / "tsm"  # configfs-tsm: SNP and TDX alike


def test_tdx_off(tmp_path: Path) -> None:
    assert _load(tmp_path, 'tdx_evidence = "off"\n').tdx_evidence == "off"


@pytest.mark.parametrize(
    ("keys", "where"),
    [
        ('tdx_evidence = "dcap"', ':7: [agent] tdx_evidence: expected "tsm", "off" or "simulator"'),
        ('tdx_evidence = "simulator"', "[agent] tdx_simulator: a devsim.tdx guest directory, set"),
        ('tdx_simulator = "g"', ':7: [agent] tdx_simulator: a devsim.tdx guest directory, set '
         'exactly when tdx_evidence = "simulator"'),
        ('tdx_evidence = "tsm"\ntdx_simulator = "g"', ":8: [agent] tdx_simulator"),
        ("tdx_simulator = 3", ":7: [agent] tdx_simulator: expected a string"),
        ("tdx_evidence = true", ":7: [agent] tdx_evidence"),
    ],
)  # fmt: skip
def test_bad_tdx_settings_are_located(tmp_path: Path, keys: str, where: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, keys + "\n")
    assert where in str(e.value), str(e.value)


def test_snp_and_tdx_simulators_are_independent(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        'snp_evidence = "simulator"\nsnp_simulator = "host"\n'
        'tdx_evidence = "simulator"\ntdx_simulator = "guest"\n',
    )
    assert config.snp_simulator == tmp_path.resolve() / "host"
    assert config.tdx_simulator == tmp_path.resolve() / "guest"
