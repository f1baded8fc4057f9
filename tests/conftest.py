"""Shared fixtures: a private software TPM per test session, and factories for more."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from verifier.demo.swtpm import SwtpmProcess, start_swtpm

SwtpmFactory = Callable[..., SwtpmProcess]


def _require_swtpm() -> None:
    missing = [t for t in ("swtpm", "swtpm_setup", "swtpm_localca") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install swtpm swtpm-tools)")


def _factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwtpmFactory]:
    _require_swtpm()
    started: list[SwtpmProcess] = []

    def start(
        *, with_ek_certificate: bool = True, pcr_banks: tuple[str, ...] = ("sha256",)
    ) -> SwtpmProcess:
        tpm = start_swtpm(
            tmp_path_factory.mktemp("swtpm"),
            with_ek_certificate=with_ek_certificate,
            pcr_banks=pcr_banks,
        )
        started.append(tpm)
        return tpm

    try:
        yield start
    finally:
        for tpm in started:
            tpm.stop()


@pytest.fixture(scope="session")
def swtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwtpmProcess]:
    """One swtpm with an EK certificate from a local CA, shared by the session."""
    _require_swtpm()
    with start_swtpm(tmp_path_factory.mktemp("swtpm")) as tpm:
        yield tpm


@pytest.fixture
def swtpm_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwtpmFactory]:
    """Start extra TPMs: ``swtpm_factory(with_ek_certificate=False)``; stopped at teardown."""
    yield from _factory(tmp_path_factory)


@pytest.fixture(scope="module")
def swtpm_factory_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwtpmFactory]:
    """Like ``swtpm_factory``, but the TPMs live until the end of the test module."""
    yield from _factory(tmp_path_factory)
