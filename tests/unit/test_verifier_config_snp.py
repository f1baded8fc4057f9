"""[verifier.snp]: AMD's ARKs pinned in code, a test ARK only by an explicit key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.vectors import vectors_dir
from verifier.config import ConfigError, load_config
from verifier.evidence.snp.tcb import ProductLine

HEAD = "[verifier]\ninsecure = true\nrequire_ek_certificate = false\n\n[verifier.snp]\n"


def _load(tmp_path: Path, body: str) -> object:
    path = tmp_path / "verifier.toml"
    path.write_text(HEAD + body)
    return load_config(path).snp


def _amd_roots(tmp_path: Path) -> Path:
    trust = tmp_path / "amd"
    trust.mkdir()
    for name in ("amd_milan_ask_ark.pem", "amd_genoa_ask_ark.pem", "amd_turin_asvk_ark.pem"):
        shutil.copy(vectors_dir("snp") / name, trust / name)
    return trust


def test_amd_arks_load_from_the_trust_dir(tmp_path: Path) -> None:
    _amd_roots(tmp_path)
    config = _load(tmp_path, 'trust_dir = "amd"\n')
    assert config is not None
    assert set(config.roots.arks) == {  # type: ignore[attr-defined]
        ProductLine.MILAN,
        ProductLine.GENOA,
        ProductLine.TURIN,
    }
    assert not config.test_roots_trusted  # type: ignore[attr-defined]
    # The ASKs/ASVK beside the ARKs are kept as intermediates, never as anchors.
    assert len(config.intermediates) == 3  # type: ignore[attr-defined]
    assert config.vcek_dir is None  # type: ignore[attr-defined]


def test_absent_table_means_no_snp_verification(tmp_path: Path) -> None:
    path = tmp_path / "verifier.toml"
    path.write_text(HEAD.replace("\n[verifier.snp]\n", ""))
    assert load_config(path).snp is None


def test_a_foreign_self_signed_root_is_refused_naming_the_file(tmp_path: Path) -> None:
    trust = _amd_roots(tmp_path)
    # NVIDIA's device root is self-signed but no AMD ARK.
    shutil.copy(vectors_dir("nvidia", "roots") / "verifier_device_root.pem", trust / "x.pem")
    with pytest.raises(ConfigError, match=r"toml:6: \[verifier.snp\] trust_dir: .*x.pem"):
        _load(tmp_path, 'trust_dir = "amd"\n')


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('trust_dir = "missing"\n', "trust_dir: .* is not a directory"),
        ("", "trust_dir: missing"),
        ('trust_dir = "amd"\nroots = 1\n', "roots: unknown key"),
        ('trust_dir = "amd"\ninsecure_test_roots = "ark.pem"\n', "expected a list"),
        ('trust_dir = "amd"\ninsecure_test_roots = ["nope.pem"]\n', "cannot read"),
        ('trust_dir = "amd"\nvcek_dir = "nowhere"\n', "vcek_dir: .* is not a directory"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, body: str, message: str) -> None:
    _amd_roots(tmp_path)
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, body)


def test_an_empty_trust_dir_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "amd").mkdir()
    with pytest.raises(ConfigError, match="no AMD ARK"):
        _load(tmp_path, 'trust_dir = "amd"\n')
