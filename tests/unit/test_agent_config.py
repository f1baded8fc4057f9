from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent.config import AgentConfig, ConfigError, load_config


@pytest.fixture
def tls_files(tmp_path: Path) -> Path:
    for name in ("ca.pem", "agent.pem"):
        (tmp_path / name).write_text("pem\n")
    key = tmp_path / "agent.key"
    key.write_text("key\n")
    key.chmod(0o600)
    return tmp_path


def _write(directory: Path, text: str) -> Path:
    path = directory / "agent.toml"
    path.write_text(text)
    return path


GOOD = """\
[agent]
host_id = "node-1"
verifier = "verifier.example:8443"
tcti = "swtpm:host=127.0.0.1,port=2321"
state_dir = "state"
ak_handle = 0x81010003
reconnect_initial_seconds = 0.5
reconnect_max_seconds = 30

[agent.tls]
ca_certificate = "ca.pem"
certificate = "agent.pem"
private_key = "agent.key"
"""


def test_good_config(tls_files: Path) -> None:
    config = load_config(_write(tls_files, GOOD))
    assert isinstance(config, AgentConfig)
    assert config.host_id == "node-1"
    assert config.verifier == "verifier.example:8443"
    assert config.tcti == "swtpm:host=127.0.0.1,port=2321"
    assert config.state_dir == tls_files.resolve() / "state"
    assert config.ak_handle == 0x81010003
    assert config.insecure is False
    assert config.reconnect_initial_seconds == 0.5
    assert config.reconnect_max_seconds == 30.0
    assert config.tls is not None
    assert config.tls.private_key == tls_files.resolve() / "agent.key"
    with pytest.raises(AttributeError):
        config.tcti = "x"  # type: ignore[misc]


def test_defaults_with_insecure(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[agent]\nverifier = "127.0.0.1:5000"\ntcti = "tabrmd"\nstate_dir = "/var/x"\n'
        "insecure = true\n",
    )
    config = load_config(path)
    assert config.host_id == socket.gethostname()
    assert config.ak_handle == 0x81010002
    assert config.insecure is True
    assert config.tls is None
    assert (config.reconnect_initial_seconds, config.reconnect_max_seconds) == (1.0, 60.0)


def test_missing_key_names_line(tls_files: Path) -> None:
    path = _write(tls_files, GOOD.replace('tcti = "swtpm:host=127.0.0.1,port=2321"\n', ""))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    # Reported at the [agent] header: the table where the key belongs.
    assert str(e.value).startswith(f"{path}:1: [agent] tcti: required key missing")


def test_bad_type_names_line_and_key(tls_files: Path) -> None:
    path = _write(tls_files, GOOD.replace('tcti = "swtpm:host=127.0.0.1,port=2321"', "tcti = 5"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == (
        f'{path}:4: [agent] tcti: expected a string like "swtpm:host=127.0.0.1,port=2321"'
    )


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("ak_handle = 0x81010003", "ak_handle = 0x01c00002", ":6: [agent] ak_handle"),
        ("ak_handle = 0x81010003", "ak_handle = true", ":6: [agent] ak_handle"),
        ('"verifier.example:8443"', '"no-port"', ":3: [agent] verifier"),
        ("reconnect_max_seconds = 30", "reconnect_max_seconds = 0.1", ":8: [agent]"),
        ('private_key = "agent.key"', 'private_key = "nope.key"', ":13: [agent.tls] private_key"),
        ('host_id = "node-1"', 'hostid = "node-1"', ":2: [agent] hostid: unknown key"),
    ],
)
def test_semantic_errors_are_located(tls_files: Path, old: str, new: str, where: str) -> None:
    path = _write(tls_files, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}{where}")


def test_syntax_error_has_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "[agent]\ntcti = \n")
    with pytest.raises(ConfigError, match=r"line 2"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_secure_without_tls_is_an_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[agent]\nverifier = "127.0.0.1:5000"\ntcti = "tabrmd"\nstate_dir = "s"\n',
    )
    with pytest.raises(ConfigError, match=r":1: \[agent\] tls: required unless insecure"):
        load_config(path)
    explicit = _write(tmp_path, path.read_text() + "insecure = false\n")
    with pytest.raises(ConfigError, match="required unless insecure"):
        load_config(explicit)


def test_insecure_must_be_bool(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[agent]\nverifier = "h:1"\ntcti = "tabrmd"\nstate_dir = "s"\ninsecure = "yes"\n',
    )
    with pytest.raises(ConfigError, match=r":5: \[agent\] insecure: expected true or false"):
        load_config(path)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_readable_private_key_is_refused(tls_files: Path, mode: int) -> None:
    (tls_files / "agent.key").chmod(mode)
    path = _write(tls_files, GOOD)
    with pytest.raises(ConfigError, match=r":13: \[agent.tls\] private_key: .*group or others"):
        load_config(path)


def test_gpu_evidence_defaults_to_nvml(tls_files: Path) -> None:
    config = load_config(_write(tls_files, GOOD))
    assert config.gpu_evidence == "nvml"
    assert config.gpu_simulator is None


def test_gpu_simulator_is_explicit(tls_files: Path) -> None:
    text = GOOD.replace(
        "reconnect_max_seconds = 30\n",
        'reconnect_max_seconds = 30\ngpu_evidence = "simulator"\ngpu_simulator = "fleet"\n',
    )
    config = load_config(_write(tls_files, text))
    assert config.gpu_evidence == "simulator"
    assert config.gpu_simulator == tls_files.resolve() / "fleet"


@pytest.mark.parametrize(
    ("keys", "where"),
    [
        ('gpu_evidence = "nvidia"', ":9: [agent] gpu_evidence"),
        ('gpu_evidence = "simulator"', "[agent] gpu_simulator: a devsim fleet directory"),
        ('gpu_simulator = "fleet"', ":9: [agent] gpu_simulator: a devsim fleet directory"),
    ],
)
def test_bad_gpu_settings_are_located(tls_files: Path, keys: str, where: str) -> None:
    path = _write(
        tls_files,
        GOOD.replace("reconnect_max_seconds = 30\n", f"reconnect_max_seconds = 30\n{keys}\n"),
    )
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert where in str(e.value), str(e.value)
