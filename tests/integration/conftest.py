"""Store fixtures shared by the store and audit tests: every test runs on SQLite and,
where WEIGHTGATE_TEST_POSTGRES_URL is set, on PostgreSQL (else skipped, saying why)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store_fixtures import BACKEND_PARAMS, Backend, backend_for
from verifier.store import Store


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from backend_for(request.param, tmp_path)


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = backend.open()
    yield s
    s.close()
