"""The C hot path of IMA parsing and replay (``native/*.c``, module ``_ima_native``), where built.

Parsing an IMA list and replaying it are a few hashes and a dozen small objects per
entry; through CPython each hash call costs more than the hash, so a full check of a
2,000-entry list spent most of its time there (``bench/tpm_verify.py``). The C module
does the same work for the common case and nothing else:

- :func:`ascii_entries` parses a whole ASCII list whose every line is a well-formed
  ``ima-ng``, ``ima-sig`` or ``ima-buf`` line with a known ``d-ng`` algorithm, into the
  very entries :func:`~verifier.evidence.tpm.ima_ascii.parse_ascii` builds; for any
  other list it returns None and the Python parser (the reference) parses it and
  names what is wrong. It never reports a fault of its own.
  :func:`binary_entries` does the same for the binary list the agent sends
  (:func:`~verifier.evidence.tpm.ima.parse_binary`).
- :func:`chunk` and :func:`extend` are the template-hash check and the PCR
  extend of :mod:`~verifier.evidence.tpm.ima_replay_bulk` for the SHA-1/SHA-2 banks.
- :func:`unallowed` is the fast path of
  :func:`~verifier.evidence.tpm.ima_policy.appraise_ima_full`: it picks out the
  entries that are not plainly allowed, which the Python code then appraises; it
  reads the policy's digests from :func:`digest_index`, a flat table each
  ``RuntimePolicy`` builds once.

Each function returns None where the C module cannot help (not built, disabled, an
algorithm it does not know); callers then take the Python path, which gives the same
result more slowly (``tests/unit/test_ima_native.py`` compares the two on every vector and
on generated lists; ``tests/fuzz/fuzz_ima_native.py`` does so under atheris).

``WEIGHTGATE_IMA_NATIVE=0`` in the environment turns the C path off (an operator's
escape hatch; read at import).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType

from verifier.evidence.tpm.ima import ByteOrder, ImaEntry

__all__ = [
    "NATIVE_BANKS",
    "Chunked",
    "Run",
    "active",
    "ascii_entries",
    "binary_entries",
    "chunk",
    "digest_index",
    "extend",
    "unallowed",
]

_module: ModuleType | None
try:
    from verifier.evidence.tpm import _ima_native as _module
except ImportError:  # built without a C compiler or libcrypto: the Python path only
    _module = None
if os.environ.get("WEIGHTGATE_IMA_NATIVE", "1") == "0":
    _module = None

# TPM banks the C module hashes (others, e.g. sm3_256, take the Python path).
NATIVE_BANKS = frozenset({"sha1", "sha256", "sha384", "sha512"})


def active() -> bool:
    """Whether the C path is in use."""
    return _module is not None


def ascii_entries(
    raw: bytes, *, hash_size: int, first_index: int, byte_order: ByteOrder, max_entries: int
) -> tuple[ImaEntry, ...] | None:
    """Every line's entry, or None: the Python parser must parse ``raw`` (also when it
    has more than ``max_entries`` lines)."""
    if _module is None or byte_order not in ("little", "big"):
        return None  # an unknown byte order is the Python parser's to refuse
    if not 0 <= first_index <= sys.maxsize:
        return None  # indices beyond a C integer: the Python parser takes them
    entries: tuple[ImaEntry, ...] | None = _module.ascii_entries(
        raw, hash_size, first_index, byte_order == "little", max_entries, ImaEntry
    )
    return entries


def binary_entries(
    raw: bytes,
    *,
    hash_size: int,
    first_index: int,
    byte_order: ByteOrder,
    max_entries: int,
    max_data: int,
) -> tuple[ImaEntry, ...] | None:
    """Every entry of a non-empty binary list of ``byte_order``, or None: the Python
    parser must parse ``raw`` (also when it has more than ``max_entries`` entries or
    one with more than ``max_data`` bytes of template data)."""
    if _module is None or byte_order not in ("little", "big"):
        return None
    if not 0 <= first_index <= sys.maxsize:
        return None  # indices beyond a C integer: the Python parser takes them
    entries: tuple[ImaEntry, ...] | None = _module.binary_entries(
        raw, hash_size, first_index, byte_order == "little", max_entries, max_data, ImaEntry
    )
    return entries


# A bank to extend during :func:`chunk`'s walk: its name, its value of the entries'
# PCR, whether it is the template hash's bank (extended with the logged hashes), and
# the quoted value to look for (None: none).
Run = tuple[str, bytes, bool, bytes | None]
# What chunk returns: the PCR, template data, template hashes, violation positions,
# and per run its final value and the counts of entries after which it was the target.
Chunked = tuple[
    int, tuple[bytes, ...], tuple[bytes, ...], tuple[int, ...], tuple[tuple[bytes, list[int]], ...]
]


def chunk(
    entries: Sequence[ImaEntry],
    *,
    start: int,
    template_hash_alg: str,
    runs: Sequence[Run] = (),
) -> Chunked | None:
    """:func:`~verifier.evidence.tpm.ima_replay_bulk.prepare`'s checks in C: the PCR all
    entries extend, their template data and hashes, and the violations' positions;
    and ``runs`` replayed in the same walk.

    None when the entries are not numbered from ``start``, extend several PCRs, include
    the legacy ``ima`` template or a template hash that is not its data's, or when the
    C path cannot hash ``template_hash_alg`` or a run's bank: the Python path decides.
    """
    if _module is None or template_hash_alg not in NATIVE_BANKS:
        return None
    if any(run[0] not in NATIVE_BANKS for run in runs):
        return None
    if not isinstance(entries, list | tuple):
        entries = list(entries)
    found: Chunked | None = _module.chunk(entries, start, template_hash_alg, ImaEntry, tuple(runs))
    return found


def extend(
    bank: str,
    value: bytes,
    items: Sequence[bytes],
    *,
    hashed: bool,
    violation_positions: Sequence[int],
    target: bytes | None,
) -> tuple[bytes, list[int]] | None:
    """``value`` extended with a measurement per item (ff..ff at the violations, the
    bank's digest of the item when ``hashed``, else the item) and the counts of items
    after which it equals ``target`` (bytes of the bank's size, or None: callers take
    it from ``ima_replay._target``); None when the C path cannot hash ``bank``."""
    if _module is None or bank not in NATIVE_BANKS:
        return None
    result: tuple[bytes, list[int]] = _module.extend(
        bank, value, items, hashed, tuple(violation_positions), target
    )
    return result


def digest_index(digests: Mapping[str, frozenset[tuple[str, bytes]]]) -> object | None:
    """``digests`` as one flat table for :func:`unallowed` (fewer memory reads per
    entry than a dict of frozensets of tuples); None without the C path or for a
    mapping of other types (the Python appraisal then takes every entry)."""
    if _module is None:
        return None
    index: object | None = _module.digest_index(digests)
    return index


def unallowed(entries: Sequence[ImaEntry], index: object) -> list[int] | None:
    """Positions of the entries that are not a file entry (not a violation) whose
    ``(digest_alg, digest)`` the policy's :func:`digest_index` lists for its name;
    None without the C path."""
    if _module is None:
        return None
    if not isinstance(entries, list | tuple):
        entries = list(entries)
    positions: list[int] = _module.unallowed(entries, index, ImaEntry)
    return positions
