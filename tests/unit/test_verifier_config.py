from pathlib import Path

import pytest

from verifier.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "verifier.toml"
    path.write_text(text)
    return path


def test_good_config(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            '[verifier]\nlisten = "127.0.0.1:9"\ninsecure = true\nrequire_ek_certificate = false\n'
            "pcr_selection = { sha256 = [7, 0, 0] }\n",
        )
    )
    assert config.listen == "127.0.0.1:9"
    assert config.pcr_selection == {"sha256": (0, 7)}
    assert config.database_url.startswith("sqlite:///")


def test_wrong_type_names_line_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[verifier]\ninsecure = true\nrequire_ek_certificate = false\n"
        'attestation_interval_seconds = "soon"\n',
    )
    with pytest.raises(ConfigError, match=r"verifier.toml:4: \[verifier\] attestation_interval"):
        load_config(path)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[verifier]\ninsecure = true\nlistne = 1\n")
    with pytest.raises(ConfigError, match=r":3: \[verifier\] listne: unknown key"):
        load_config(path)


def test_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[verifier]\ninsecure = = true\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_config(path)


def test_tls_is_required_unless_insecure(tmp_path: Path) -> None:
    path = write(tmp_path, "[verifier]\nrequire_ek_certificate = false\n")
    with pytest.raises(ConfigError, match=r"\[verifier.tls\] is required"):
        load_config(path)


def test_readable_private_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "server.key"
    key.write_text("not really a key")
    key.chmod(0o644)
    path = write(
        tmp_path,
        "[verifier]\nrequire_ek_certificate = false\n[verifier.tls]\n"
        'certificate = "c.pem"\nprivate_key = "server.key"\nclient_ca = "ca.pem"\n',
    )
    with pytest.raises(ConfigError, match=r":5: \[verifier.tls\] private_key: .*chmod 600"):
        load_config(path)


def test_ek_certificates_required_without_cas(tmp_path: Path) -> None:
    path = write(tmp_path, "[verifier]\ninsecure = true\n")
    with pytest.raises(ConfigError, match="no EK CA certificates"):
        load_config(path)
