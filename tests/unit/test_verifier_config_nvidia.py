"""[verifier.nvidia]: NVIDIA's roots pinned in code, test roots only by an explicit key."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.vectors import vectors_dir
from verifier.config import ConfigError, load_config
from verifier.evidence.nvidia.chain import DEVICE_ROOT_SPKI_SHA256, spki_sha256

HEAD = "[verifier]\ninsecure = true\nrequire_ek_certificate = false\n\n[verifier.nvidia]\n"


def _root(name: str, *, ca: bool = True) -> bytes:
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _dirs(tmp_path: Path, *, nvidia_roots: bool = True) -> None:
    for name in ("trust", "rims", "ocsp"):
        (tmp_path / name).mkdir(mode=0o700)
    if nvidia_roots:
        for pem in vectors_dir("nvidia", "roots").glob("*.pem"):
            shutil.copy(pem, tmp_path / "trust" / pem.name)


def _load(tmp_path: Path, body: str) -> object:
    path = tmp_path / "verifier.toml"
    path.write_text(HEAD + body)
    return load_config(path).nvidia


BODY = 'trust_dir = "trust"\nrim_store = "rims"\nocsp_dir = "ocsp"\n'


def test_nvidia_roots_load_from_the_trust_dir(tmp_path: Path) -> None:
    _dirs(tmp_path)
    config = _load(tmp_path, BODY)
    assert config is not None
    assert config.device_spki_pins == frozenset({DEVICE_ROOT_SPKI_SHA256})  # type: ignore[attr-defined]
    assert len(config.rim_roots) == 1  # type: ignore[attr-defined]
    assert not config.test_roots_trusted  # type: ignore[attr-defined]
    assert config.ocsp_max_age == dt.timedelta(hours=168)  # type: ignore[attr-defined]


def test_absent_table_means_no_gpu_verification(tmp_path: Path) -> None:
    path = tmp_path / "verifier.toml"
    path.write_text(HEAD.replace("\n[verifier.nvidia]\n", ""))
    assert load_config(path).nvidia is None


def test_a_foreign_root_in_the_trust_dir_is_refused_naming_it(tmp_path: Path) -> None:
    _dirs(tmp_path)
    (tmp_path / "trust" / "extra.pem").write_bytes(_root("Look-alike NVIDIA Device Identity CA"))
    with pytest.raises(ConfigError, match=r"toml:6: \[verifier.nvidia\] trust_dir: .*extra"):
        _load(tmp_path, BODY)


def test_test_roots_only_through_the_insecure_key(tmp_path: Path) -> None:
    _dirs(tmp_path, nvidia_roots=False)
    (tmp_path / "sim-device.pem").write_bytes(_root("TEST Device Identity CA (simulator)"))
    (tmp_path / "sim-rim.pem").write_bytes(_root("TEST RIM root (simulator)"))
    body = (
        'rim_store = "rims"\nocsp_dir = "ocsp"\n'
        'insecure_test_roots = ["sim-device.pem", "sim-rim.pem"]\n'
    )
    config = _load(tmp_path, body)
    assert config is not None
    assert config.test_roots_trusted  # type: ignore[attr-defined]
    device = x509.load_pem_x509_certificate((tmp_path / "sim-device.pem").read_bytes())
    assert config.device_spki_pins == frozenset({spki_sha256(device)})  # type: ignore[attr-defined]
    assert DEVICE_ROOT_SPKI_SHA256 not in config.device_spki_pins  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'trust_dir = "missing"\nrim_store = "rims"\nocsp_dir = "ocsp"\n',
            "trust_dir: .* is not a directory",
        ),
        ('trust_dir = "trust"\nocsp_dir = "ocsp"\n', "rim_store: missing"),
        (BODY + "ocsp_max_age_hours = 0\n", "ocsp_max_age_hours: expected more than 0"),
        (BODY + "ocsp_stale_grace_hours = -1\n", "ocsp_stale_grace_hours"),
        (BODY + "ocsp = 1\n", "ocsp: unknown key"),
        (BODY + 'insecure_test_roots = ["leaf.pem"]\n', "not a CA certificate"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, body: str, message: str) -> None:
    _dirs(tmp_path)
    (tmp_path / "leaf.pem").write_bytes(_root("a leaf", ca=False))
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, body)


def test_an_empty_trust_dir_names_what_is_missing(tmp_path: Path) -> None:
    _dirs(tmp_path, nvidia_roots=False)
    with pytest.raises(ConfigError, match="no NVIDIA Device Identity CA"):
        _load(tmp_path, BODY)
