"""Shared pieces of the store tests: backends, fixed times, and small builders.

Set WEIGHTGATE_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)
to run every store test on PostgreSQL too; each test gets its own throwaway schema.

A test module defines its own two-line ``backend`` and ``store`` fixtures on
top of :func:`backend_for` and :data:`BACKEND_PARAMS` (fixtures imported from
another module would hide from linters as unused imports).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from verifier.store import ModelVersionRecord, Store
from verifier.verdict import Reason, Verdict

POSTGRES_ENV = "WEIGHTGATE_TEST_POSTGRES_URL"
# Ahead of the wall clock that stamps registrations, so that events sort as in life.
T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
DIGEST = bytes(range(32))
NONCE_MISMATCH = Reason("tpm.quote.nonce_mismatch", "extraData differs")
PCR_MISMATCH = Reason("tpm.pcr.mismatch", "PCR 7")
BACKEND_PARAMS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@dataclass(frozen=True)
class Backend:
    url: str
    schema: str | None

    def open(self) -> Store:
        return Store.open(self.url, schema=self.schema)


def backend_for(param: str, tmp_path: Path) -> Iterator[Backend]:
    """The body of a ``backend`` fixture parametrized over :data:`BACKEND_PARAMS`."""
    if param == "sqlite":
        # A missing parent directory: Store.open must create it.
        yield Backend(f"sqlite:///{tmp_path}/state/verifier.db", None)
        return
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} not set")
    schema = f"wg_test_{secrets.token_hex(6)}"
    yield Backend(url, schema)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


def affirming() -> Verdict:
    return Verdict.affirming({"tpm.quote.signature", "tpm.pcr.policy"})


def contraindicated(*reasons: Reason) -> Verdict:
    return Verdict.contraindicated(reasons, {"tpm.quote.signature"})


def enroll_kwargs(
    host_id: str, *, expires_at: datetime = T0 + timedelta(minutes=5)
) -> dict[str, Any]:
    return {
        "host_id": host_id,
        "ek_public": b"ek-pub-" + host_id.encode(),
        "ek_certificate": b"ek-cert",
        "ak_public": b"ak-pub-" + host_id.encode(),
        "ak_name": b"\x00\x0b" + DIGEST,
        "secret_digest": DIGEST,
        "expires_at": expires_at,
    }


def enrolled(store: Store, host_id: str = "h1") -> None:
    store.register_host(host_id, "gpu-a")
    eid = store.create_enrollment(**enroll_kwargs(host_id))
    store.finish_enrollment(eid, succeeded=True, now=T0)


def attest(
    store: Store, at: datetime, verdict: Verdict, *, host_id: str = "h1", **kw: object
) -> None:
    kwargs: dict[str, Any] = {"clock": None, "boot_event": None, **kw}
    store.record_attestation(
        host_id=host_id,
        challenge_id=f"c-{at.isoformat()}",
        verdict=verdict,
        appraised_at=at,
        **kwargs,
    )


def is_utc(value: datetime | None) -> bool:
    return value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def file_id(i: int) -> str:
    return f"{i:032x}"


def model_kwargs(
    name: str = "frontier", version: str = "1.0", *, risk_tier: str = "high", files: int = 2
) -> dict[str, Any]:
    """Arguments for ``add_model_version``; the manifest (and digest) follow name and version."""
    manifest = f'{{"name":"{name}","version":"{version}"}}'.encode()
    return {
        "manifest": manifest,
        "manifest_signature": b"sig-" + manifest,
        "manifest_digest": hashlib.sha256(manifest).digest(),
        "name": name,
        "version": version,
        "risk_tier": risk_tier,
        "file_count": files,
        "plaintext_bytes": 1000 * files,
        "wrapped_data_keys": {file_id(i): b"wrapped-%d" % i for i in range(files)},
        "now": T0,
    }


def add_model(store: Store, name: str = "frontier", version: str = "1.0") -> ModelVersionRecord:
    return store.add_model_version(**model_kwargs(name, version))
