"""``[verifier.snp]``: the AMD roots SEV-SNP reports on the stream are verified against.

AMD's ARKs (Milan, Genoa, Turin) are pinned in code by SHA-256
(verifier/evidence/snp/chain.py). ``trust_dir`` holds their certificates (as KDS
serves them: the ``ask_ark`` / ``asvk_ark`` PEM files); every certificate in it
must be a pinned ARK or an ASK/ASVK, or loading fails naming the file. The one way
to trust another root is the loudly named ``insecure_test_roots``: the TEST ARK of a
simulator (devsim), for tests and demos only; it replaces AMD's ARK for the product
line its name gives, so a test config never mixes the two::

    [verifier.snp]
    trust_dir = "amd-roots"            # ask_ark_milan.pem, ask_ark_genoa.pem, ...
    vcek_dir = "vceks"                 # optional: <CHIP_ID hex>-<REPORTED_TCB 16 hex>.der
    crl_dir = "amd-crls"               # optional: AMD KDS CRLs, *.crl / *.der
    insecure_test_roots = []           # TEST ONLY: a simulator's ARK

The ASKs/ASVKs in those files are kept as intermediates for hosts that send a bare
VCEK, and ``vcek_dir`` holds VCEKs fetched from AMD KDS elsewhere (it rate-limits,
and the verifier never fetches) for hosts whose firmware holds no certificates.
Neither can make anything trusted: the chain must still end at a pinned ARK.

``crl_dir`` holds AMD's CRLs (KDS ``/vcek/v1/<line>/crl`` and ``/vlek/v1/<line>/crl``,
fetched elsewhere). Given, every SNP report must be covered by a current CRL signed
by its product line's pinned ARK that does not list its ASK/ASVK
(verifier/evidence/snp/crl.py); the directory is read once here (a file that does
not parse fails loading, naming it) and again every round, so newer CRLs copied in
take effect without a restart. Without it, revocation is not checked, and every
round's checks say so (no ``snp.revocation``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from verifier.config_reader import Reader, table_reader
from verifier.evidence.bounded_file import MAX_ROOT_FILE_BYTES, read_bounded
from verifier.evidence.errors import ParseError
from verifier.evidence.snp.certs import load_certificates
from verifier.evidence.snp.chain import ARK_SHA256, AmdRoots, RootError, load_amd_roots
from verifier.evidence.snp.crl_files import CrlFilesError, read_crl_dir
from verifier.evidence.snp.tcb import ProductLine, product_from_name

__all__ = ["SnpConfig", "snp_config"]

log = logging.getLogger(__name__)

_KEYS = {"trust_dir", "insecure_test_roots", "vcek_dir", "crl_dir"}


@dataclass(frozen=True, slots=True)
class SnpConfig:
    roots: AmdRoots
    test_roots_trusted: bool  # insecure_test_roots named a root
    # ASKs/ASVKs shipped beside the ARKs: offered as intermediates when a host sends
    # its VCEK without them (an anchor is still only a pinned ARK).
    intermediates: tuple[x509.Certificate, ...] = ()
    # VCEKs fetched from AMD KDS elsewhere, for hosts whose firmware holds no
    # certificates: <CHIP_ID hex>-<REPORTED_TCB as 16 hex digits>.der
    vcek_dir: Path | None = None
    # AMD CRLs (*.crl, *.der), re-read every round; None: revocation not checked.
    crl_dir: Path | None = None


def _crl_dir(reader: Reader, base: Path) -> Path:
    directory = reader.directory("crl_dir", base)
    try:
        crls = read_crl_dir(directory)
    except CrlFilesError as exc:
        raise reader.fail("crl_dir", str(exc)) from None
    if not crls:
        # Every round would fail snp.crl.missing: say so now.
        raise reader.fail("crl_dir", f"{directory} holds no CRL (*.crl or *.der from AMD KDS)")
    return directory


def _read(reader: Reader, key: str, path: Path) -> list[x509.Certificate]:
    data = read_bounded(path, MAX_ROOT_FILE_BYTES, lambda message: reader.fail(key, message))
    try:
        return load_certificates(data, str(path))
    except ParseError as exc:
        raise reader.fail(key, f"{path}: {exc}") from None


def _self_signed(certificate: x509.Certificate) -> bool:
    return certificate.issuer == certificate.subject


def _test_product(reader: Reader, path: Path, certificate: x509.Certificate) -> ProductLine:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if names else ""
    for word in name.replace("(", " ").replace(")", " ").split():
        product = product_from_name(word.removeprefix("ARK-"))
        if product is not None:
            return product
    raise reader.fail(
        "insecure_test_roots", f"{path}: {name!r} names no product line (Milan, Genoa, Turin)"
    )


def snp_config(path: Path, text: str, raw: Any, base: Path) -> SnpConfig | None:
    """The ``[verifier.snp]`` table, validated and with its roots loaded; None if absent."""
    reader = table_reader(path, text, raw, "verifier.snp", _KEYS)
    if reader is None:
        return None
    arks: list[x509.Certificate] = []
    intermediates: list[x509.Certificate] = []
    pins = dict(ARK_SHA256)
    directory = reader.trust_dir(base)
    if directory is not None:
        for file in sorted(directory.glob("*.pem")):
            certificates = _read(reader, "trust_dir", file)
            intermediates += [c for c in certificates if not _self_signed(c)]
            for certificate in filter(_self_signed, certificates):
                try:
                    load_amd_roots([certificate])  # names the file of a foreign root
                except RootError as exc:
                    raise reader.fail("trust_dir", f"{file}: {exc}") from None
                arks.append(certificate)
    test_files = reader.file_names("insecure_test_roots")
    for name in test_files:
        file = base / name
        certificates = _read(reader, "insecure_test_roots", file)
        intermediates += [c for c in certificates if not _self_signed(c)]
        for certificate in filter(_self_signed, certificates):
            product = _test_product(reader, file, certificate)
            pins[product] = certificate.fingerprint(hashes.SHA256())
            arks = [a for a in arks if a.fingerprint(hashes.SHA256()) != ARK_SHA256[product]]
            arks.append(certificate)
            log.warning(
                "[verifier.snp] insecure_test_roots: %s reports are verified against a TEST "
                "ARK (%s), not AMD's (tests and demos only)",
                product.value,
                file,
            )
    if not arks:
        raise reader.fail("trust_dir", "no AMD ARK (ask_ark_<product>.pem from AMD KDS)")
    try:
        roots = load_amd_roots(arks, pins=pins)
    except RootError as exc:
        raise reader.fail("insecure_test_roots" if test_files else "trust_dir", str(exc)) from None
    vcek_dir = reader.directory("vcek_dir", base) if "vcek_dir" in raw else None
    return SnpConfig(
        roots=roots,
        test_roots_trusted=bool(test_files),
        intermediates=tuple(intermediates),
        vcek_dir=vcek_dir,
        crl_dir=_crl_dir(reader, base) if "crl_dir" in raw else None,
    )
