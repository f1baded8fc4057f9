"""atheris harness for the AMD CRL parser and its check (untrusted bytes: ``--crl``, ``crl_dir``).

Run: ``python tests/fuzz/fuzz_snp_crl.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one from CRLs a devsim.snp TEST
ARK issues in memory (empty, listing serials, with CRL extensions, one critical;
DER and PEM). The property: :func:`load_crl` either returns a CRL whose every
field the check reads is decoded, or raises ParseError; and
:func:`check_revocation` of that CRL against the TEST chain either passes or
raises VerificationError with an ``snp.crl.*`` / ``snp.cert.revoked`` code;
anything else is a bug. ``fuzz_one`` is importable so that the unit suite runs
the same property without atheris (tests/unit/test_fuzz_smoke_snp_crl.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from verifier.evidence.errors import ParseError
from verifier.evidence.snp.certs import read_key_cert
from verifier.evidence.snp.chain import VerifiedChain
from verifier.evidence.snp.crl import check_revocation, load_crl
from verifier.verdict import VerificationError

AT = datetime(2025, 6, 1, tzinfo=UTC)
CODES = ("snp.crl.missing", "snp.crl.stale", "snp.crl.untrusted", "snp.cert.revoked")


@cache
def _test_line() -> tuple[VerifiedChain, Any]:
    """A TEST Milan chain (taken as verified: only the CRL is under test) and its ARK."""
    from devsim.snp.model import PRODUCTS  # noqa: PLC0415 - path set up by main()
    from devsim.snp.pki import Validity, make_hierarchy_with_ark  # noqa: PLC0415

    validity = Validity.starting(AT - timedelta(days=1), 30)
    hierarchy, ark = make_hierarchy_with_ark(
        "Milan", PRODUCTS["Milan"].spls, bytes(range(64)), validity
    )
    chain = VerifiedChain(
        key=read_key_cert(hierarchy.vcek),
        intermediate=hierarchy.ask,
        ark=hierarchy.ark,
        verified_at=AT,
    )
    return chain, ark


def fuzz_one(data: bytes) -> None:
    """One fuzz input: the bytes of one CRL file."""
    try:
        given = load_crl(data, "fuzz.crl")
    except ParseError:
        return
    assert given.source == "fuzz.crl"
    chain, _ = _test_line()
    try:
        detail = check_revocation(chain, [given], at=AT)
    except VerificationError as exc:
        assert exc.reason.code in CODES, exc.reason
        return
    assert "fuzz.crl" in detail


def seed_inputs() -> Iterator[bytes]:
    """CRLs of the TEST ARK: a current empty one, listings, extensions, PEM, a stale one."""
    chain, ark = _test_line()
    window = {"this_update": AT - timedelta(hours=1), "next_update": AT + timedelta(days=7)}
    number = (x509.CRLNumber(7), False)
    key_id = (x509.AuthorityKeyIdentifier.from_issuer_public_key(ark.key.public_key()), False)
    scope = x509.IssuingDistributionPoint(
        full_name=None,
        relative_name=None,
        only_contains_user_certs=False,
        only_contains_ca_certs=True,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )
    yield ark.crl(**window)
    yield ark.crl(**window, revoked=[1, 2**64 + 3])
    yield ark.crl(**window, revoked=[chain.intermediate.serial_number])
    yield ark.crl(**window, extensions=[number, key_id])
    yield ark.crl(**window, extensions=[(scope, True)])
    yield ark.crl(this_update=AT - timedelta(days=9), next_update=AT - timedelta(days=2))
    crl = x509.load_der_x509_crl(ark.crl(**window, revoked=[5]))
    yield crl.public_bytes(serialization.Encoding.PEM)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("snp_crl", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
