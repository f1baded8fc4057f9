"""AMD's revocation lists: which ASKs/ASVKs an ARK has revoked, checked against a chain.

AMD KDS publishes a CRL per product line and key kind (``/vcek/v1/<line>/crl``,
``/vlek/v1/<line>/crl``), a DER X.509 CRL issued and signed by that line's ARK
(RSASSA-PSS SHA-384) that lists revoked ASK/ASVK serial numbers. The verifier
never fetches one: CRLs are inputs (``evidence verify snp --crl``,
``[verifier.snp] crl_dir``), parsed here (:func:`load_crl`, ParseError only:
the bytes are untrusted) and weighed by :func:`check_revocation`.

A CRL counts for a chain only when, in this order:

1. its issuer is the chain's ARK, the one pinned for the certificate's product
   line (a CRL of another line or issuer is ignored: it says nothing here);
2. that ARK's key made its signature with AMD's parameters (chain.crl_signed_by);
3. it has no critical extension: RFC 5280 5.2 forbids using a CRL with a critical
   extension the verifier does not process, and the ones that exist (issuing
   distribution point, delta CRL indicator) would narrow what absence proves.

Such a CRL is authentic. An authentic CRL that lists the ASK/ASVK serial revokes
the chain whatever its dates: revocation is not undone. Only the ASK/ASVK is
looked up: a CRL speaks for the certificates its issuer issued (RFC 5280 5), and
the ASK/ASVK, not the ARK, issued the VCEK/VLEK, whose serial (0 for every KDS
VCEK/VLEK) means nothing in the ARK's serial space.
Absence from the lists proves something only when an authentic CRL is current at
the verification time: thisUpdate <= at <= nextUpdate (one without nextUpdate
never is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import NameOID

from verifier.evidence.errors import ParseError
from verifier.evidence.snp.chain import VerifiedChain, crl_signed_by
from verifier.verdict import Reason, VerificationError

__all__ = [
    "CHECK_REVOCATION",
    "MAX_CRL_BYTES",
    "NOT_CHECKED",
    "AmdCrl",
    "check_revocation",
    "load_crl",
]

CHECK_REVOCATION = "snp.revocation"
# Why the check did not run, for reports and claims (no CRL was configured).
NOT_CHECKED = "no CRL given: revocation of the ASK/ASVK was not checked"

# AMD's CRLs list the few ASKs/ASVKs ever revoked: about 1 KB with the 512-byte
# signature. 256 KiB still holds thousands of entries and bounds a wrong file.
MAX_CRL_BYTES = 256 * 1024
_PARSE_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension)


@dataclass(frozen=True, slots=True)
class AmdCrl:
    """A CRL that parsed (nothing about it is trusted yet) and where it came from."""

    source: str  # the file, for messages
    crl: x509.CertificateRevocationList


def _name(name: x509.Name) -> str:
    common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if len(common) == 1 else name.rfc4514_string()


def load_crl(data: bytes, source: str = "CRL") -> AmdCrl:
    """A CRL in DER (as KDS serves it) or PEM; ParseError only, never anything else.

    Every field the checks read is decoded here (issuer, dates, extensions, the
    signature algorithm, every entry's serial), so that a malformed one fails now
    and not in the middle of a verification.
    """
    if len(data) > MAX_CRL_BYTES:
        raise ParseError(f"larger than {MAX_CRL_BYTES} bytes", code="too_large")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        _ = (crl.issuer.rfc4514_string(), crl.last_update_utc, crl.next_update_utc)
        _ = [(e.oid, e.critical) for e in crl.extensions]
        _ = (crl.signature_algorithm_oid, crl.signature_hash_algorithm, crl.signature)
        _ = crl.tbs_certlist_bytes
        _ = [(entry.serial_number, entry.revocation_date_utc) for entry in crl]
    except (*_PARSE_ERRORS, x509.InvalidVersion) as exc:
        raise ParseError(f"not an X.509 CRL: {exc}", code="crl_malformed") from None
    return AmdCrl(source=source, crl=crl)


def _fail(code: str, detail: str) -> VerificationError:
    return VerificationError(Reason(code, detail), ())


def _window(crl: x509.CertificateRevocationList) -> str:
    until = crl.next_update_utc
    end = "no nextUpdate" if until is None else f"{until:%Y-%m-%d %H:%M}"
    return f"{crl.last_update_utc:%Y-%m-%d %H:%M}..{end}"


def _current(crl: x509.CertificateRevocationList, at: datetime) -> bool:
    next_update = crl.next_update_utc
    return next_update is not None and crl.last_update_utc <= at <= next_update


def _critical(crl: x509.CertificateRevocationList) -> list[str]:
    return [e.oid.dotted_string for e in crl.extensions if e.critical]


def _check_listed(chain: VerifiedChain, given: AmdCrl) -> None:
    certificate = chain.intermediate
    entry = given.crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
    if entry is not None:
        raise _fail(
            "snp.cert.revoked",
            f"ASK/ASVK {_name(certificate.subject)} (serial {certificate.serial_number:#x}) "
            f"was revoked {entry.revocation_date_utc:%Y-%m-%d} by {_name(given.crl.issuer)} "
            f"({given.source})",
        )


def check_revocation(chain: VerifiedChain, crls: Sequence[AmdCrl], *, at: datetime) -> str:
    """Check ``chain`` against ``crls`` at ``at``; return what covered it (a detail).

    Raises VerificationError, in this order of precedence:

    * ``snp.cert.revoked``: an authentic CRL (module docstring) lists the ASK/ASVK,
      naming the certificate and the CRL;
    * ``snp.crl.stale``: authentic CRLs of the line exist but none is current at ``at``;
    * ``snp.crl.untrusted``: CRLs name the line's ARK as issuer but none is authentic
      (another signer, other PSS parameters, a critical extension);
    * ``snp.crl.missing``: no CRL given names the line's ARK as issuer.
    """
    ark = chain.ark
    ark_name = _name(ark.subject)
    authentic: list[AmdCrl] = []
    refused: list[str] = []
    for given in crls:
        if given.crl.issuer != ark.subject:
            continue  # another product line's (or nobody's) CRL: it says nothing here
        if not crl_signed_by(given.crl, ark):
            refused.append(f"{given.source}: not signed by {ark_name} (RSASSA-PSS SHA-384)")
        elif critical := _critical(given.crl):
            refused.append(f"{given.source}: critical extension {', '.join(critical)} unprocessed")
        else:
            authentic.append(given)
    for given in authentic:
        _check_listed(chain, given)
    current = [given.source for given in authentic if _current(given.crl, at)]
    if current:
        return f"{ark_name} CRL {', '.join(current)}: the ASK/ASVK is not listed"
    if authentic:
        windows = "; ".join(f"{g.source} valid {_window(g.crl)}" for g in authentic)
        when = f"{at:%Y-%m-%d %H:%M}"
        raise _fail("snp.crl.stale", f"no {ark_name} CRL is current at {when}: {windows}")
    if refused:
        raise _fail("snp.crl.untrusted", f"no authentic {ark_name} CRL: " + "; ".join(refused))
    issuers = sorted({_name(given.crl.issuer) for given in crls})
    others = f" (only {', '.join(issuers)})" if issuers else " (none given)"
    raise _fail("snp.crl.missing", f"no CRL issued by {ark_name}{others}")
