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
    assert config.allow_shared_tpm is False  # one TPM, one host, unless a test rig says so


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


_BASE = "[verifier]\ninsecure = true\nrequire_ek_certificate = false\n"


def test_two_approvals_by_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, _BASE))
    assert dict(config.approvals.required) == {
        "reference_values": 2,
        "site": 2,
        "host_site": 2,
        "review": 2,
        "trust_anchor": 2,
        "break_glass": 3,  # it waives the site clearance and the review
        "boot_reference": 2,
        "ima_policy": 2,
        "gpu_policy": 2,
        "snp_policy": 2,
        "tdx_policy": 2,
    }
    assert config.approvals.ttl_seconds == 72 * 3600


def test_approvals_per_kind(tmp_path: Path) -> None:
    text = _BASE + "\n[verifier.approvals]\nreview = 3\nsite = 1\nproposal_ttl_hours = 24\n"
    config = load_config(write(tmp_path, text))
    assert config.approvals.required["review"] == 3
    assert config.approvals.required["site"] == 1
    assert config.approvals.required["reference_values"] == 2
    assert config.approvals.ttl_seconds == 24 * 3600


def test_switching_the_two_person_rule_off_must_be_explicit(tmp_path: Path) -> None:
    text = _BASE + "\n[verifier.approvals]\nreference_values = 0\n"
    with pytest.raises(ConfigError, match=r":6: \[verifier.approvals\] reference_values: 0 appr"):
        load_config(write(tmp_path, text))
    allowed = text + "allow_without_approval = true\n"
    assert load_config(write(tmp_path, allowed)).approvals.required["reference_values"] == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("reviews = 2", "reviews: unknown key"),
        ("site = -1", "site: expected 1 to 16"),
        ("site = true", "site: expected a number"),
        ("proposal_ttl_hours = 0", "proposal_ttl_hours: expected more than 0"),
    ],
)
def test_bad_approval_settings_name_line_and_key(tmp_path: Path, line: str, message: str) -> None:
    text = _BASE + f"\n[verifier.approvals]\n{line}\n"
    with pytest.raises(ConfigError, match=rf":6: \[verifier.approvals\] {message}"):
        load_config(write(tmp_path, text))
