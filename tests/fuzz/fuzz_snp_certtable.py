"""atheris harness for the agent's GHCB certificate table parser (bytes from the host).

Run: ``python tests/fuzz/fuzz_snp_certtable.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one from the tables a simulated SNP
host hands out (devsim.snp: VCEK, ASK, ARK) and from tables built around the shared
vectors' SNP certificates (with a VLEK entry, an unknown entry, PEM payloads). The
property: :func:`parse_cert_table` either returns certificates that are non-empty
slices of the input lying after the table, or raises CertTableError; anything else
is a bug. ``fuzz_one`` is importable so that the unit suite runs the same property
without atheris (tests/unit/test_fuzz_smoke_snp_certtable.py).
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from agent.collectors.snp_certtable import (
    MAX_CERT_TABLE_BYTES,
    CertTableError,
    der_to_pem,
    parse_cert_table,
)

_ENTRY_SIZE = 24


def fuzz_one(data: bytes) -> None:
    """One fuzz input: a whole certificate table (the configfs-tsm auxblob)."""
    try:
        table = parse_cert_table(data)
    except CertTableError:
        return
    assert len(data) <= MAX_CERT_TABLE_BYTES
    end = 0
    while data[end : end + _ENTRY_SIZE] != bytes(_ENTRY_SIZE):
        end += _ENTRY_SIZE
        assert end < len(data)
    after = data[end + _ENTRY_SIZE :]  # certificates lie past the terminator
    for certificate in (table.vcek, table.vlek, table.ask, table.ark):
        if certificate is None:
            continue
        assert certificate and certificate in after
        assert der_to_pem(certificate).endswith(b"\n")


def _vector_certificate(name: str) -> bytes | None:
    """A certificate file of the shared SNP vectors, as is (None without them)."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    path = testvectors_root() / "snp" / name
    return path.read_bytes() if path.exists() else None


def seed_inputs() -> Iterator[bytes]:
    """devsim.snp hosts' tables (Genoa, Milan), then tables of the vectors' certificates."""
    from devsim.snp import create_snp_host  # noqa: PLC0415
    from devsim.snp.certtable import (  # noqa: PLC0415
        ARK_GUID,
        ASK_GUID,
        VCEK_GUID,
        VLEK_GUID,
        certificate_table,
    )

    with tempfile.TemporaryDirectory(prefix="fuzz_snp_certtable_") as tmp:
        for product in ("Genoa", "Milan"):
            yield create_snp_host(Path(tmp) / product, product=product).certificate_table()
    vcek = _vector_certificate("trustee_milan_vcek.der")
    vlek = _vector_certificate("trustee_milan_vlek.der")
    ask_ark = _vector_certificate("amd_milan_ask_ark.pem")  # PEM, as some hosts ship it
    if vcek is not None and vlek is not None and ask_ark is not None:
        crl = uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea")
        yield certificate_table([(VCEK_GUID, vcek), (ASK_GUID, ask_ark), (ARK_GUID, ask_ark)])
        yield certificate_table([(VLEK_GUID, vlek), (ASK_GUID, ask_ark), (crl, b"CRL")])
        yield certificate_table([(crl, b"CRL"), (VCEK_GUID, vcek), (VLEK_GUID, vlek)])
    yield certificate_table([])
    yield certificate_table([(VCEK_GUID, b"V"), (VLEK_GUID, b"L"), (ASK_GUID, b"S")])


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("snp_certtable", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
