"""Parse TPM 2.0 quote evidence (untrusted bytes) into frozen dataclasses.

TPMT_PUBLIC (and, in ``certify``, TPMS_ATTEST of other types) is unmarshalled with
tpm2-pytss (the TSS reference marshalling code); this module adds what the TSS does
not: the TPM_GENERATED magic and attestation type checks, a size bound on every
input, rejection of trailing bytes, rejection of non-canonical encodings (the value
must re-marshal to exactly the bytes received, so that what we read is exactly what
was signed or hashed), and a translation of every failure into
:class:`~verifier.evidence.errors.ParseError`.

The two per-quote structures, TPMS_ATTEST of type quote and TPMT_SIGNATURE, are
framed instead by the strict hand-written readers of :mod:`.wire`, which are about
30 times faster than going through pytss; pytss remains their test oracle (see the
``wire`` docstring for the measurements and the differential test).

Nothing here is authenticated: the results are claims, to be checked by
``authenticate``.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss.types import TPMS_ATTEST, TPMT_PUBLIC

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import wire

__all__ = [
    "HASH_SIZES",
    "ClockInfo",
    "PcrSelection",
    "QuoteInfo",
    "TpmPublic",
    "TpmSignature",
    "parse_quote_attest",
    "parse_signature",
    "parse_tpm2b_public",
    "parse_tpmt_public",
]

# Size bounds, checked before any byte reaches the TSS. The largest legal quote
# (16 banks selected, 64-byte names, extraData and digest) is under 400 bytes; an
# RSA-4096 TPMT_SIGNATURE is 518 bytes; an RSA-4096 TPMT_PUBLIC with a SHA-512
# policy is under 700 bytes. Anything bigger is not evidence we can use.
MAX_ATTEST_SIZE = 1024
MAX_SIGNATURE_SIZE = 1024
MAX_PUBLIC_SIZE = 2048

TPM_GENERATED_VALUE = 0xFF544347
_ATTEST_HEADER = struct.Struct(">IH")  # magic, type
TPM_ST_ATTEST_QUOTE = 0x8018
_QUOTE_HEADER = _ATTEST_HEADER.pack(TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE)

# TPM_ALG_ID -> hashlib name, for the hashes this verifier can recompute.
_HASH_ALGS = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}
HASH_IDS = {name: alg_id for alg_id, name in _HASH_ALGS.items()}
HASH_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

_ALG_NULL = 0x0010
_ALG_RSA = 0x0001
_ALG_ECC = 0x0023
_ALG_RSAES = 0x0015
_SIG_SCHEMES = {0x0014: "rsassa", 0x0016: "rsapss", 0x0018: "ecdsa"}
# Every asymmetric scheme a TPMT_PUBLIC may name; an AK is later required to use a
# signing one compatible with its signatures, but parsing only records it.
_ASYM_SCHEMES = {
    **_SIG_SCHEMES,
    0x0015: "rsaes",
    0x0017: "oaep",
    0x0019: "ecdh",
    0x001A: "ecdaa",
    0x001B: "sm2",
    0x001C: "ecschnorr",
    0x001D: "ecmqv",
}
# TPM_ECC_CURVE -> (our name, coordinate size in bytes)
_CURVES = {0x0003: ("p256", 32), 0x0004: ("p384", 48), 0x0005: ("p521", 66)}


@dataclass(frozen=True, slots=True)
class ClockInfo:
    """TPMS_CLOCK_INFO. Obfuscated by the TPM when the signing key is outside the
    endorsement and platform hierarchies, so only comparable across one AK."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True, slots=True)
class PcrSelection:
    """One TPMS_PCR_SELECTION: a bank and the PCR indices selected, ascending.

    ``pcr_set`` holds the same indices, for membership tests (derived, not compared).
    """

    hash_algorithm: str
    pcrs: tuple[int, ...]
    pcr_set: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pcr_set", frozenset(self.pcrs))


@dataclass(frozen=True, slots=True)
class QuoteInfo:
    """The fields of a TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE."""

    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_selection: tuple[PcrSelection, ...]
    pcr_digest: bytes


@dataclass(frozen=True, slots=True)
class TpmSignature:
    """A TPMT_SIGNATURE. For ECDSA, ``signature`` is the DER encoding of (r, s),
    which is what ``cryptography`` verifies."""

    scheme: str
    hash_algorithm: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class TpmPublic:
    """An RSA or ECC TPMT_PUBLIC.

    ``public_area`` keeps the marshalled bytes exactly as received: the TPM name is
    a hash over them. RSA keys fill the ``rsa_*`` fields, ECC keys the ``ecc_*`` ones.
    """

    key_type: str
    name_algorithm: str
    attributes: int
    auth_policy: bytes
    scheme: str | None
    scheme_hash: str | None
    public_area: bytes
    key_bits: int
    rsa_exponent: int | None = None
    rsa_modulus: bytes | None = None
    ecc_curve: str | None = None
    ecc_x: bytes | None = None
    ecc_y: bytes | None = None

    @property
    def name(self) -> bytes:
        """TPM name: nameAlg (2 bytes, big-endian) || H_nameAlg(public_area)."""
        alg_id = HASH_IDS[self.name_algorithm]
        digest = hashlib.new(self.name_algorithm, self.public_area).digest()
        return alg_id.to_bytes(2, "big") + digest


_T = TypeVar("_T")


def _slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Callable[[Any, Any], None], ...]:
    """The slot setters of a frozen slots dataclass, for a builder on the per-quote path.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``;
    setting the slots directly takes half the time. The builders must set every
    field and the class must have no ``__post_init__``: both are checked here, at
    import, so that a field added later cannot be left unset.
    """
    if tuple(f.name for f in fields(cls)) != names or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: the fast builder no longer matches its fields")
    return tuple(cls.__dict__[name].__set__ for name in names)


_CLOCK_CLOCK, _CLOCK_RESET, _CLOCK_RESTART, _CLOCK_SAFE = _slot_setters(
    ClockInfo, ("clock", "reset_count", "restart_count", "safe")
)
_QUOTE_SIGNER, _QUOTE_EXTRA, _QUOTE_CLOCK, _QUOTE_FIRMWARE, _QUOTE_SELECTION, _QUOTE_DIGEST = (
    _slot_setters(
        QuoteInfo,
        (
            "qualified_signer",
            "extra_data",
            "clock_info",
            "firmware_version",
            "pcr_selection",
            "pcr_digest",
        ),
    )
)
_SIG_SCHEME, _SIG_HASH, _SIG_VALUE = _slot_setters(
    TpmSignature, ("scheme", "hash_algorithm", "signature")
)


def _new_signature(scheme: str, hash_algorithm: str, signature: bytes) -> TpmSignature:
    """``TpmSignature(scheme, hash_algorithm, signature)``, slot by slot (_slot_setters)."""
    sig: TpmSignature = object.__new__(TpmSignature)
    _SIG_SCHEME(sig, scheme)
    _SIG_HASH(sig, hash_algorithm)
    _SIG_VALUE(sig, signature)
    return sig


def as_bytes(data: bytes, *, what: str, limit: int) -> bytes:
    if type(data) is bytes:  # the common case, without the copy or the isinstance
        raw = data
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
    if len(raw) > limit:
        raise ParseError(f"{what}: {len(raw)} bytes exceeds the {limit}-byte bound")
    return raw


def unmarshal_exact(cls: Any, raw: bytes, *, what: str) -> Any:
    """Unmarshal exactly ``raw`` into a pytss ``cls`` and prove the encoding canonical."""
    try:
        obj, offset = cls.unmarshal(raw)
    # The TSS is a C library behind cffi: any failure on untrusted bytes, whatever
    # its Python type, means "does not parse", never a crash of the verifier.
    except Exception as exc:
        raise ParseError(f"{what}: cannot unmarshal ({exc})") from exc
    if offset != len(raw):
        raise ParseError(f"{what}: {len(raw) - offset} trailing bytes")
    try:
        canonical = bytes(obj.marshal())
    except Exception as exc:
        raise ParseError(f"{what}: cannot re-marshal ({exc})") from exc
    if canonical != raw:
        # e.g. bytes after sizeofSelect or a union member the TSS ignores: what we
        # would read is not what the TPM signed, so refuse it.
        raise ParseError(f"{what}: non-canonical encoding")
    return obj


def read_field(what: str, getter: Callable[[], _T]) -> _T:
    """Read a field off a pytss object, turning any error into a ParseError."""
    try:
        return getter()
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"{what}: {exc}") from exc


def _hash_name(alg_id: int, *, what: str) -> str:
    try:
        return _HASH_ALGS[alg_id]
    except KeyError:
        raise ParseError(f"{what}: unsupported hash algorithm 0x{alg_id:04x}") from None


# _PCRS_SET[i][b]: the PCR indices that byte b at position i of a pcrSelect bitmap
# selects, ascending (a static table: 4 positions x 256 values).
_PCRS_SET: tuple[tuple[tuple[int, ...], ...], ...] = tuple(
    tuple(tuple(i * 8 + bit for bit in range(8) if value >> bit & 1) for value in range(256))
    for i in range(wire.PCR_SELECT_MAX)
)


# Distinct TPML_PCR_SELECTION encodings whose decoding is kept: a host quotes the
# same selection every time, and a fleet uses a handful; a bound keeps untrusted
# input from growing the cache.
SELECTION_CACHE_SIZE = 256


@functools.lru_cache(maxsize=SELECTION_CACHE_SIZE)
def _pcr_selection(selection: bytes) -> tuple[PcrSelection, ...]:
    """Decode a framed TPML_PCR_SELECTION. A pure function of its bytes, and its
    result is immutable, so equal encodings share one decoded value (failures, which
    raise, are not cached)."""
    result: list[PcrSelection] = []
    seen: set[str] = set()
    for alg_id, bitmap in wire.read_pcr_selection(selection):
        bank = _hash_name(alg_id, what="PCR selection")
        if bank in seen:
            # A bank listed twice would make "the value of sha256 PCR n" ambiguous
            # when mapping reported values onto the digest.
            raise ParseError(f"PCR selection: bank {bank} selected twice")
        seen.add(bank)
        pcrs: tuple[int, ...] = ()
        for byte_index, byte in enumerate(bitmap):
            pcrs += _PCRS_SET[byte_index][byte]
        result.append(PcrSelection(bank, pcrs))
    return tuple(result)


def unmarshal_attest(data: bytes, *, expected_type: int, type_name: str, type_code: str) -> Any:
    """Bound, check magic and type, then unmarshal a TPMS_ATTEST (exact, canonical).

    Magic and type are checked on the raw header, before the TSS, because the TSS
    does not check the magic and fails on unknown types with a generic error.
    """
    raw = attest_header(data, expected_type=expected_type, type_name=type_name, type_code=type_code)
    return unmarshal_exact(TPMS_ATTEST, raw, what="TPMS_ATTEST")


def attest_header(data: bytes, *, expected_type: int, type_name: str, type_code: str) -> bytes:
    """Bound a TPMS_ATTEST and check its magic and type; return it as bytes."""
    raw = as_bytes(data, what="TPMS_ATTEST", limit=MAX_ATTEST_SIZE)
    if len(raw) < 6:
        raise ParseError("TPMS_ATTEST: truncated header")
    magic, st = _ATTEST_HEADER.unpack_from(raw)
    if magic != TPM_GENERATED_VALUE:
        raise ParseError(f"TPMS_ATTEST: bad magic 0x{magic:08x}", code="bad_magic")
    if st != expected_type:
        raise ParseError(f"TPMS_ATTEST: type 0x{st:04x} is not a {type_name}", code=type_code)
    return raw


def read_clock_info(attest: Any) -> ClockInfo:
    """TPMS_CLOCK_INFO of an unmarshalled TPMS_ATTEST (``safe`` must be 0 or 1)."""
    clock = attest.clockInfo
    safe = int(clock.safe)
    if safe not in (0, 1):
        raise ParseError(f"TPMS_ATTEST: clockInfo.safe is {safe}, not a TPMI_YES_NO")
    return ClockInfo(
        clock=int(clock.clock),
        reset_count=int(clock.resetCount),
        restart_count=int(clock.restartCount),
        safe=safe == 1,
    )


def parse_quote_attest(data: bytes) -> QuoteInfo:
    """Parse a marshalled TPMS_ATTEST that must be a quote.

    ParseError codes: ``bad_magic`` (not TPM_GENERATED_VALUE: not produced by a
    TPM), ``not_a_quote`` (another attestation type), ``malformed`` otherwise.
    """
    raw = as_bytes(data, what="TPMS_ATTEST", limit=MAX_ATTEST_SIZE)
    if raw[:6] != _QUOTE_HEADER:
        # Truncated, bad magic or not a quote: attest_header raises the precise error.
        attest_header(
            raw, expected_type=TPM_ST_ATTEST_QUOTE, type_name="quote", type_code="not_a_quote"
        )
    signer, extra, clock, reset, restart, safe, firmware, selection, digest = wire.read_quote_body(
        raw
    )
    if safe not in (0, 1):
        raise ParseError(f"TPMS_ATTEST: clockInfo.safe is {safe}, not a TPMI_YES_NO")
    # QuoteInfo(signer, extra, ClockInfo(...), ...), slot by slot (_slot_setters).
    clock_info: ClockInfo = object.__new__(ClockInfo)
    _CLOCK_CLOCK(clock_info, clock)
    _CLOCK_RESET(clock_info, reset)
    _CLOCK_RESTART(clock_info, restart)
    _CLOCK_SAFE(clock_info, safe == 1)
    info: QuoteInfo = object.__new__(QuoteInfo)
    _QUOTE_SIGNER(info, signer)
    _QUOTE_EXTRA(info, extra)
    _QUOTE_CLOCK(info, clock_info)
    _QUOTE_FIRMWARE(info, firmware)
    _QUOTE_SELECTION(info, _pcr_selection(selection))
    _QUOTE_DIGEST(info, digest)
    return info


def parse_signature(data: bytes) -> TpmSignature:
    """Parse a marshalled TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA)."""
    raw = as_bytes(data, what="TPMT_SIGNATURE", limit=MAX_SIGNATURE_SIZE)
    alg, hash_alg, parts = wire.read_signature(raw)
    scheme = _SIG_SCHEMES[alg]
    if scheme == "ecdsa":
        r, s = parts
        if not r or not s:
            raise ParseError("TPMT_SIGNATURE: empty ECDSA r or s")
        der = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
        return _new_signature(scheme, _hash_name(hash_alg, what="ECDSA"), der)
    (value,) = parts
    if not value:
        raise ParseError("TPMT_SIGNATURE: empty RSA signature")
    return _new_signature(scheme, _hash_name(hash_alg, what=scheme), value)


def parse_tpm2b_public(data: bytes) -> TpmPublic:
    """Parse a TPM2B_PUBLIC: a 2-byte big-endian size, then exactly that TPMT_PUBLIC."""
    raw = as_bytes(data, what="TPM2B_PUBLIC", limit=MAX_PUBLIC_SIZE + 2)
    if len(raw) < 2:
        raise ParseError("TPM2B_PUBLIC: truncated size")
    size = int.from_bytes(raw[:2], "big")
    if size != len(raw) - 2:
        raise ParseError(f"TPM2B_PUBLIC: size {size} but {len(raw) - 2} bytes follow")
    return parse_tpmt_public(raw[2:])


def _scheme(detail: Any) -> tuple[str | None, str | None]:
    alg = int(detail.scheme.scheme)
    if alg == _ALG_NULL:
        return None, None
    name = _ASYM_SCHEMES.get(alg)
    if name is None:
        raise ParseError(f"TPMT_PUBLIC: unsupported scheme 0x{alg:04x}")
    if alg == _ALG_RSAES:  # the only asymmetric scheme without a hash
        return name, None
    hash_alg = _hash_name(int(detail.scheme.details.anySig.hashAlg), what="TPMT_PUBLIC scheme")
    return name, hash_alg


def parse_tpmt_public(data: bytes) -> TpmPublic:
    """Parse a marshalled TPMT_PUBLIC of an RSA or ECC key."""
    raw = as_bytes(data, what="TPMT_PUBLIC", limit=MAX_PUBLIC_SIZE)
    pub = unmarshal_exact(TPMT_PUBLIC, raw, what="TPMT_PUBLIC")

    def build() -> TpmPublic:
        name_alg = int(pub.nameAlg)
        if name_alg not in _HASH_ALGS:
            # Without a hash there is no name, and the name is how a TPM object is bound.
            raise ParseError(f"TPMT_PUBLIC: unsupported nameAlg 0x{name_alg:04x}")
        common: dict[str, Any] = {
            "name_algorithm": _HASH_ALGS[name_alg],
            "attributes": int(pub.objectAttributes),
            "auth_policy": bytes(pub.authPolicy),
            "public_area": raw,
        }
        key_type = int(pub.type)
        if key_type == _ALG_RSA:
            detail = pub.parameters.rsaDetail
            bits = int(detail.keyBits)
            modulus = bytes(pub.unique.rsa)
            if bits == 0 or bits % 8 or len(modulus) != bits // 8:
                raise ParseError(f"TPMT_PUBLIC: {len(modulus)}-byte modulus for {bits} bits")
            scheme, scheme_hash = _scheme(detail)
            return TpmPublic(
                key_type="rsa",
                scheme=scheme,
                scheme_hash=scheme_hash,
                key_bits=bits,
                rsa_exponent=int(detail.exponent),
                rsa_modulus=modulus,
                **common,
            )
        if key_type == _ALG_ECC:
            detail = pub.parameters.eccDetail
            curve_id = int(detail.curveID)
            if curve_id not in _CURVES:
                raise ParseError(f"TPMT_PUBLIC: unsupported curve 0x{curve_id:04x}")
            curve, size = _CURVES[curve_id]
            x, y = bytes(pub.unique.ecc.x), bytes(pub.unique.ecc.y)
            if not 0 < len(x) <= size or not 0 < len(y) <= size:
                raise ParseError(f"TPMT_PUBLIC: bad point coordinate size for {curve}")
            scheme, scheme_hash = _scheme(detail)
            return TpmPublic(
                key_type="ecc",
                scheme=scheme,
                scheme_hash=scheme_hash,
                key_bits=size * 8 if curve != "p521" else 521,
                ecc_curve=curve,
                ecc_x=x,
                ecc_y=y,
                **common,
            )
        raise ParseError(f"TPMT_PUBLIC: unsupported key type 0x{key_type:04x}")

    return read_field("TPMT_PUBLIC", build)
