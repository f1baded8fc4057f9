"""Authenticate an SNP report: its key's chain, its signature, and what binds them.

Only :func:`authenticate_report` builds an :class:`AuthenticatedReport`, and
appraisal accepts nothing else (STYLE.md, "Verifying evidence" 2).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from verifier.evidence.snp.certs import AmdKeyCert, KeyKind, read_key_cert
from verifier.evidence.snp.chain import CHECK_CHAIN, AmdRoots, verify_key_chain
from verifier.evidence.snp.chain_cache import lookup_chain, remember_chain
from verifier.evidence.snp.crl import CHECK_REVOCATION, AmdCrl, check_revocation
from verifier.evidence.snp.report import AttestationReport, SigningKey
from verifier.evidence.snp.tcb import (
    TCB_LAYOUT,
    ProductLine,
    TcbVersion,
    decode_tcb,
    product_from_cpuid,
)
from verifier.verdict import Reason, VerificationError

__all__ = [
    "AUTHENTICATION_CHECKS",
    "CHECK_REVOCATION",
    "AuthenticatedReport",
    "authenticate_report",
]

CHECK_KEY_CERT = "snp.key.parse"
CHECK_SIGNING_KEY = "snp.report.signing_key"
CHECK_SIGNATURE = "snp.report.signature"
CHECK_PRODUCT = "snp.report.product"
CHECK_TCB = "snp.tcb"
CHECK_CHIP_ID = "snp.chip_id"
# In pipeline order. CHECK_REVOCATION runs only when CRLs are given (crls=...).
AUTHENTICATION_CHECKS = (
    CHECK_KEY_CERT,
    CHECK_CHAIN,
    CHECK_REVOCATION,
    CHECK_SIGNING_KEY,
    CHECK_SIGNATURE,
    CHECK_PRODUCT,
    CHECK_TCB,
    CHECK_CHIP_ID,
)

ECDSA_P384_SHA384 = 1  # SIGNATURE_ALGO (ABI, "Signature algorithm encodings")
TURIN_HWID_SIZE = 8
RESERVED_SPLS = frozenset({"spl4", "spl5", "spl6", "spl7"})  # absent from a certificate: 0


@dataclass(frozen=True, slots=True)
class AuthenticatedReport:
    """A report whose signature verified under a VCEK/VLEK that chains to a pinned ARK,
    with TCBs decoded in the certificate's product-line layout."""

    report: AttestationReport
    key: AmdKeyCert
    intermediate: x509.Certificate
    ark: x509.Certificate
    product: ProductLine
    current_tcb: TcbVersion
    reported_tcb: TcbVersion
    committed_tcb: TcbVersion
    launch_tcb: TcbVersion
    chip_id_checked: bool  # False for a VLEK or a masked CHIP_ID (see authenticate_report)
    # Which CRL showed the chain unrevoked (crl.check_revocation); None: no CRLs given.
    revocation: str | None
    verified_at: datetime
    checks_run: frozenset[str]

    def __post_init__(self) -> None:
        # Every construction through __init__ fails, dataclasses.replace included:
        # only _sealed (below) makes one, without calling __init__.
        raise TypeError("AuthenticatedReport is built only by authenticate_report()")


def _sealed(**values: object) -> AuthenticatedReport:
    names = {f.name for f in fields(AuthenticatedReport)}
    if values.keys() != names:
        raise TypeError(f"AuthenticatedReport fields: {sorted(names ^ values.keys())}")
    auth: AuthenticatedReport = object.__new__(AuthenticatedReport)
    for name, value in values.items():
        object.__setattr__(auth, name, value)
    return auth


def _fail(code: str, detail: str, done: list[str]) -> VerificationError:
    return VerificationError(Reason(code, detail), done)


def _check_signature(report: AttestationReport, key: AmdKeyCert, done: list[str]) -> None:
    if report.signature_algo != ECDSA_P384_SHA384:
        raise _fail(
            "snp.report.signature_algo_unsupported",
            f"SIGNATURE_ALGO {report.signature_algo} (only 1, ECDSA P-384 SHA-384, exists)",
            done,
        )
    public_key = key.certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP384R1
    ):
        raise _fail("snp.report.signature_invalid", f"{key.kind.value} key is not P-384", done)
    try:
        public_key.verify(
            encode_dss_signature(report.r, report.s),
            report.signed_bytes,
            ec.ECDSA(hashes.SHA384()),
        )
    except (InvalidSignature, ValueError):
        # By type, never by message: InvalidSignature's message is empty. ValueError:
        # r or s out of range for the encoder.
        raise _fail(
            "snp.report.signature_invalid", "report signature does not verify", done
        ) from None


def _check_tcb(reported: TcbVersion, key: AmdKeyCert, done: list[str]) -> None:
    # The VCEK/VLEK is derived from the TCB it certifies: a report whose REPORTED_TCB
    # differs was not signed by a key for that TCB (or names another one). All 64
    # bits are compared: the certificate's SPLs, reserved spl4-7 included (absent:
    # 0), placed in the product line's layout (tcb.TCB_LAYOUT).
    layout = TCB_LAYOUT[key.product]
    missing = sorted(n for n in layout if n not in RESERVED_SPLS and n not in key.spls)
    if missing:
        raise _fail("snp.tcb.mismatch", f"{key.kind.value} certifies no {missing} SPL", done)
    certified = {**key.reserved_spls, **key.spls}
    # An SPL the layout has no byte for (spl4 on Turin, fmc on Milan/Genoa) can only
    # be 0: otherwise the certificate names a TCB this report cannot state.
    stray = sorted(f"{n} {v}" for n, v in certified.items() if n not in layout and v)
    if stray:
        raise _fail(
            "snp.tcb.mismatch",
            f"{key.kind.value} certifies {stray}, which a {key.product.value} TCB has no byte for",
            done,
        )
    expected = bytes(certified.get(name, 0) for name in layout)
    got = reported.raw.to_bytes(8, "little")
    differ = [
        f"byte {i} ({name}) {got[i]} != {expected[i]}"
        for i, name in enumerate(layout)
        if got[i] != expected[i]
    ]
    if differ:
        raise _fail(
            "snp.tcb.mismatch",
            f"REPORTED_TCB 0x{reported.raw:016x} vs {key.kind.value} "
            f"0x{int.from_bytes(expected, 'little'):016x}: " + ", ".join(differ),
            done,
        )


def _check_chip_id(report: AttestationReport, key: AmdKeyCert, done: list[str]) -> bool:
    """Whether the CHIP_ID was compared (raises if it differs)."""
    if report.mask_chip_id:
        # The firmware zeroes a masked CHIP_ID: anything else in it is not what
        # the firmware wrote, so it is refused rather than left unexamined.
        if any(report.chip_id):
            raise _fail(
                "snp.chip_id.masked_not_zero", "MASK_CHIP_ID is set but CHIP_ID is not zero", done
            )
        return False
    if key.kind is KeyKind.VLEK:
        # A VLEK is per cloud provider and carries no hwID. (A VCEK is chip-unique,
        # so with a masked CHIP_ID its signature still binds the chip.)
        return False
    if key.hwid is None:
        raise _fail("snp.chip_id.mismatch", "the VCEK carries no hwID extension", done)
    # Turin's hwID is 8 bytes: the chip id's first 8 bytes.
    reported = (
        report.chip_id[: len(key.hwid)] if key.product is ProductLine.TURIN else report.chip_id
    )
    if len(key.hwid) != len(reported) or not hmac.compare_digest(key.hwid, reported):
        raise _fail("snp.chip_id.mismatch", "CHIP_ID differs from the VCEK's hwID", done)
    return True


def authenticate_report(
    report: AttestationReport,
    *,
    key_certificate: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: AmdRoots,
    at: datetime,
    crls: Sequence[AmdCrl] | None = None,
) -> AuthenticatedReport:
    """Authenticate ``report``; raise VerificationError on the first failure.

    Checks, in order:

    1. ``snp.key.parse``: the certificate is a VCEK/VLEK whose AMD extensions decode
       (ParseError);
    2. ``snp.chain``: VCEK -> ASK or VLEK -> ASVK -> the ARK pinned for the
       certificate's product line, at ``at`` (``snp.chain.*``, see chain.py);
    2a. ``snp.revocation``, only when ``crls`` is given (None: not checked, and
       ``snp.revocation`` is absent from ``checks_run``): an authentic CRL of that
       line's ARK is current at ``at`` and none lists the ASK/ASVK
       (``snp.cert.revoked``, ``snp.crl.stale``, ``untrusted``, ``missing``; crl.py);
    3. ``snp.report.signing_key``: the report's SIGNING_KEY names that kind of key
       (``snp.report.unsigned`` for "none", ``snp.chain.key_kind_mismatch``);
    4. ``snp.report.signature``: SIGNATURE_ALGO is ECDSA P-384 SHA-384 and the
       signature verifies over bytes 0x000..0x29F (``snp.report.signature_invalid``,
       ``signature_algo_unsupported``);
    5. ``snp.report.product``: a v3+ report's CPUID family/model, when our table
       knows it, names the certificate's product line (``snp.chain.product_mismatch``);
    6. ``snp.tcb``: REPORTED_TCB equals, all 64 bits, the TCB_VERSION the
       certificate's SPLs make in that line's layout, reserved spl4-7 included
       (a missing one is 0) (``snp.tcb.mismatch``, naming the differing bytes);
    7. ``snp.chip_id``: a masked CHIP_ID is all zero (``snp.chip_id.masked_not_zero``);
       for a VCEK with unmasked CHIP_ID, CHIP_ID equals the hwID extension (8 bytes
       on Turin) (``snp.chip_id.mismatch``).

    Steps 1 and 2 are taken from an earlier success for byte-identical key
    certificate, intermediates and pinned ARKs when ``at`` is inside that path's
    validity window (``chain_cache.py``); step 2a and steps 3-7 run on every call,
    so a cached chain is never exempt from the CRLs of this call.
    """
    done: list[str] = []
    # Steps 1-2 from an earlier success for identical certificates and roots, when
    # ``at`` is inside that path's validity window (chain_cache.py).
    chain = lookup_chain(key_certificate, intermediates, roots, at)
    if chain is not None:
        key = chain.key
        done.append(CHECK_KEY_CERT)
    else:
        key = read_key_cert(key_certificate)
        done.append(CHECK_KEY_CERT)
        try:
            chain = verify_key_chain(key, intermediates, roots, at=at)
        except VerificationError as exc:
            raise VerificationError(exc.reason, done) from None
        remember_chain(key_certificate, intermediates, roots, chain)
    done.append(CHECK_CHAIN)
    revocation = None
    if crls is not None:
        # After the cache, never inside it: the CRLs can change between calls.
        try:
            revocation = check_revocation(chain, crls, at=at)
        except VerificationError as exc:
            raise VerificationError(exc.reason, done) from None
        done.append(CHECK_REVOCATION)
    if report.signing_key == SigningKey.NONE:
        raise _fail("snp.report.unsigned", "SIGNING_KEY says the report is not signed", done)
    expected = SigningKey.VCEK if key.kind is KeyKind.VCEK else SigningKey.VLEK
    if report.signing_key != expected:
        raise _fail(
            "snp.chain.key_kind_mismatch",
            f"report SIGNING_KEY {report.signing_key}, certificate is a {key.kind.value}",
            done,
        )
    done.append(CHECK_SIGNING_KEY)
    _check_signature(report, key, done)
    done.append(CHECK_SIGNATURE)
    if report.cpuid_family is not None and report.cpuid_model is not None:
        claimed = product_from_cpuid(report.cpuid_family, report.cpuid_model)
        if claimed is not None and claimed is not key.product:
            raise _fail(
                "snp.chain.product_mismatch",
                f"report CPUID {report.cpuid_family:#x}/{report.cpuid_model:#x} is "
                f"{claimed.value}, the {key.kind.value} is {key.product.value}",
                done,
            )
    done.append(CHECK_PRODUCT)
    reported = decode_tcb(report.reported_tcb, key.product)
    _check_tcb(reported, key, done)
    done.append(CHECK_TCB)
    chip_checked = _check_chip_id(report, key, done)
    done.append(CHECK_CHIP_ID)
    return _sealed(
        report=report,
        key=key,
        intermediate=chain.intermediate,
        ark=chain.ark,
        product=key.product,
        current_tcb=decode_tcb(report.current_tcb, key.product),
        reported_tcb=reported,
        committed_tcb=decode_tcb(report.committed_tcb, key.product),
        launch_tcb=decode_tcb(report.launch_tcb, key.product),
        chip_id_checked=chip_checked,
        revocation=revocation,
        verified_at=at,
        checks_run=frozenset(done),
    )
