"""IMA runtime policy: what may have run, and :func:`appraise_ima` against it.

The policy document is JSON, close to Keylime's runtime policy::

    {
      "version": 1,
      "digests": {"/usr/bin/bash": ["sha256:9f86d0...", "4e07408562be..."]},
      "excludes": ["/tmp/.*", "/var/log/.*"],
      "keyrings": {".ima": ["sha256:..."]},
      "buffers": {"kexec-cmdline": ["sha256:..."]},
      "violations": "deny",
      "verification_keys": ["-----BEGIN PUBLIC KEY-----\\n...", "-----BEGIN CERTIFICATE-----\\n..."]
    }

* ``digests``: path -> allowed file digests, ``alg:hex`` with the kernel's algorithm
  name (``sha256``, ``sm3``, ``sha3-256``...) or bare hex, whose algorithm is taken
  from its length (20 sha1, 32 sha256, 48 sha384, 64 sha512).
* ``excludes``: regular expressions (Python ``re``) that must match a *whole* path;
  excluded paths are not appraised.
* ``keyrings``: keyring name (``.ima``, ``.builtin_trusted_keys``...) -> allowed
  digests of the keys measured into it (ima-buf entries whose name starts with ``.``).
* ``buffers``: other ima-buf names (``kexec-cmdline``, critical-data labels) ->
  allowed digests of the buffer.
* ``verification_keys``: PEM public keys or X.509 certificates (RSA >= 2048 bits or
  EC) trusted to sign files (ima-sig); a file with a valid signature by one of them
  is accepted at any path.
* ``violations``: ``"deny"`` (the default) or ``"tolerate"``, what a violation entry
  (all-zero template hash: the kernel measured a file open for writing, ToMToU or
  open-writers, and extended PCR10 with ff..ff) is. ``deny``: a finding,
  ``tpm.ima.violation``. ``tolerate`` (Keylime's option, for fleets whose benign
  races log violations): not a finding, but counted
  (:attr:`ImaAppraisal.violations_tolerated`). Either way the entry is replayed (it
  must still take the list to the quoted PCR10) and its name is never appraised:
  nothing binds it.

Only ``version`` is required, but a policy that allows nothing, an unknown key (a
typo would silently drop a rule), a path with no digests, an exclude that matches
the empty path or ``/`` (``.*``, ``/.*``: excluding everything) and two keys with
the same key id and a ``violations`` other than ``"deny"``/``"tolerate"`` are refused
when loading (:class:`RuntimePolicyError`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import ima_native
from verifier.evidence.tpm.ima import HASH_SIZES, ImaEntry
from verifier.evidence.tpm.ima_signature import (
    ImaSignatureError,
    VerificationKey,
    load_verification_key,
    parse_ima_signature,
    verify_ima_signature,
)
from verifier.verdict import Reason

__all__ = [
    "ImaAppraisal",
    "RuntimePolicy",
    "RuntimePolicyError",
    "ViolationMode",
    "appraise_ima",
    "appraise_ima_full",
    "load_runtime_policy",
]

Digest = tuple[str, bytes]  # (kernel algorithm name, digest)
ViolationMode = Literal["deny", "tolerate"]
_VIOLATION_MODES: tuple[ViolationMode, ...] = get_args(ViolationMode)
_KEYS = frozenset(
    {"version", "digests", "excludes", "keyrings", "buffers", "verification_keys", "violations"}
)
_BARE_HEX_ALGS = MappingProxyType({20: "sha1", 32: "sha256", 48: "sha384", 64: "sha512"})
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_BOOT_AGGREGATE = "boot_aggregate"
_FILE_TEMPLATES = frozenset({"ima", "ima-ng", "ima-sig"})
_NOTHING: frozenset[Digest] = frozenset()


class RuntimePolicyError(ValueError):
    """The policy document is malformed or unsafe."""


@dataclass(frozen=True)
class RuntimePolicy:
    """A loaded, validated runtime policy (format: module docstring)."""

    digests: Mapping[str, frozenset[Digest]]
    excludes: tuple[str, ...]
    keyrings: Mapping[str, frozenset[Digest]]
    buffers: Mapping[str, frozenset[Digest]]
    keys: Mapping[bytes, VerificationKey]
    exclude_pattern: re.Pattern[str] | None  # the excludes as one alternation
    violations: ViolationMode = "deny"  # fail closed unless the document says otherwise
    # ``digests`` as the C path's flat table (ima_native.digest_index), made from them
    # on every construction (replace() included), so it can never disagree with them.
    digest_index: object = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # A private read-only copy first: the index must not go stale if a caller
        # later changes the mapping it passed in.
        digests = MappingProxyType(dict(self.digests))
        object.__setattr__(self, "digests", digests)
        object.__setattr__(self, "digest_index", ima_native.digest_index(digests))

    def excluded(self, path: str) -> bool:
        return self.exclude_pattern is not None and self.exclude_pattern.fullmatch(path) is not None


def _digest(text: object, where: str) -> Digest:
    if not isinstance(text, str):
        raise RuntimePolicyError(f"{where}: digest {text!r} is not a string")
    alg, colon, hex_text = text.rpartition(":")
    if _HEX.fullmatch(hex_text) is None:
        raise RuntimePolicyError(f"{where}: {text!r} is not a hex digest")
    value = bytes.fromhex(hex_text)
    if not colon:
        bare = _BARE_HEX_ALGS.get(len(value))
        if bare is None:
            raise RuntimePolicyError(f"{where}: bare digest of {len(value)} bytes")
        return bare, value
    size = HASH_SIZES.get(alg)
    if size is None or size != len(value):
        raise RuntimePolicyError(f"{where}: {alg} digest of {len(value)} bytes")
    return alg, value


def _digest_map(doc: Mapping[str, Any], key: str) -> Mapping[str, frozenset[Digest]]:
    raw = doc.get(key, {})
    if not isinstance(raw, dict):
        raise RuntimePolicyError(f"{key} must be an object")
    out: dict[str, frozenset[Digest]] = {}
    for name, values in raw.items():
        if not isinstance(values, list) or not values:
            raise RuntimePolicyError(f"{key}[{name!r}] must be a non-empty list of digests")
        out[name] = frozenset(_digest(v, f"{key}[{name!r}]") for v in values)
    return MappingProxyType(out)


# Paths no exclude may match (both the usr-merged and the legacy spellings): the
# shell, init, the C library, a kernel module. An exclude that matches one of them
# ("/.+", "/usr/.*", "/lib.*") turns appraisal off for the system itself.
_ALWAYS_APPRAISED = (
    "/bin/sh",
    "/usr/bin/bash",
    "/sbin/init",
    "/usr/lib/systemd/systemd",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib64/libc.so.6",
    "/lib/modules/6.1.0/kernel/fs/ext4/ext4.ko",
    "/usr/lib/modules/6.1.0/kernel/fs/ext4/ext4.ko",
)


def _excludes(doc: Mapping[str, Any]) -> tuple[tuple[str, ...], re.Pattern[str] | None]:
    raw = doc.get("excludes", [])
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise RuntimePolicyError("excludes must be a list of strings")
    for pattern in raw:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise RuntimePolicyError(f"exclude {pattern!r}: {exc}") from None
        # A check against mistakes, not a proof: these would exclude every path.
        if compiled.fullmatch("") or compiled.fullmatch("/"):
            raise RuntimePolicyError(f"exclude {pattern!r} matches every path")
        system = next((path for path in _ALWAYS_APPRAISED if compiled.fullmatch(path)), None)
        if system is not None:
            raise RuntimePolicyError(
                f"exclude {pattern!r} matches {system}: the system's own programs, libraries "
                "and modules are always appraised"
            )
    if not raw:
        return (), None
    try:
        return tuple(raw), re.compile("|".join(f"(?:{p})" for p in raw))
    except re.error as exc:
        # Each compiled alone; together, a global flag such as "(?s)" is no longer at
        # the start of the expression.
        raise RuntimePolicyError(
            f"excludes: {exc} (write inline flags scoped, as in '(?s:...)')"
        ) from None


def _keys(doc: Mapping[str, Any]) -> Mapping[bytes, VerificationKey]:
    raw = doc.get("verification_keys", [])
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise RuntimePolicyError("verification_keys must be a list of PEM strings")
    keys: dict[bytes, VerificationKey] = {}
    for i, pem in enumerate(raw):
        try:
            key = load_verification_key(pem.encode())
        except ValueError as exc:
            raise RuntimePolicyError(f"verification_keys[{i}]: {exc}") from None
        # The key id is all a signature names: two keys sharing one are ambiguous.
        if key.key_id in keys:
            raise RuntimePolicyError(f"verification_keys[{i}]: key id {key.key_id.hex()} twice")
        keys[key.key_id] = key
    return MappingProxyType(keys)


def _violations(doc: Mapping[str, Any]) -> ViolationMode:
    raw = doc.get("violations", "deny")
    for mode in _VIOLATION_MODES:
        if raw == mode and isinstance(raw, str):
            return mode
    allowed = " or ".join(f'"{m}"' for m in _VIOLATION_MODES)
    raise RuntimePolicyError(f"violations {raw!r} is not {allowed}")


def load_runtime_policy(document: str | bytes) -> RuntimePolicy:
    """Parse and validate a policy document; raises RuntimePolicyError."""
    try:
        doc = json.loads(document)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RuntimePolicyError(f"not JSON: {exc}") from None
    except RecursionError:
        # A nesting bomb: a policy nests three levels deep.
        raise RuntimePolicyError("not JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise RuntimePolicyError("the policy must be a JSON object")
    unknown = set(doc) - _KEYS
    if unknown:
        raise RuntimePolicyError(f"unknown keys {sorted(unknown)}")
    version = doc.get("version")
    if type(version) is not int or version != 1:  # not bool: True == 1
        raise RuntimePolicyError(f"version {doc.get('version')!r} is not 1")
    excludes, pattern = _excludes(doc)
    policy = RuntimePolicy(
        digests=_digest_map(doc, "digests"),
        excludes=excludes,
        keyrings=_digest_map(doc, "keyrings"),
        buffers=_digest_map(doc, "buffers"),
        keys=_keys(doc),
        exclude_pattern=pattern,
        violations=_violations(doc),
    )
    if not (policy.digests or policy.keyrings or policy.buffers or policy.keys):
        raise RuntimePolicyError("the policy allows nothing (no digests, buffers or keys)")
    return policy


def _where(entry: ImaEntry) -> str:
    return f"entry {entry.index} {entry.name!r}"


def _appraise_buffer(entry: ImaEntry, digest: Digest, policy: RuntimePolicy) -> Reason | None:
    name, buffer = entry.name or "", entry.buffer or b""
    try:
        # hashlib spells the kernel's "sha3-256" as "sha3_256".
        if hashlib.new(digest[0].replace("-", "_"), buffer).digest() != digest[1]:
            return Reason(
                "tpm.ima.buffer_digest_mismatch", f"{_where(entry)}: digest is not of its buffer"
            )
    except ValueError:
        pass  # an algorithm hashlib lacks: the allow-list below still decides
    allowed = (policy.keyrings if name.startswith(".") else policy.buffers).get(name)
    if allowed is None:
        return Reason("tpm.ima.buffer_unknown", f"{_where(entry)}: buffer not in the policy")
    if digest not in allowed:
        return Reason(
            "tpm.ima.digest_not_allowed", f"{_where(entry)}: {digest[0]}:{digest[1].hex()}"
        )
    return None


def _appraise_file(entry: ImaEntry, digest: Digest, policy: RuntimePolicy) -> Reason | None:
    path = entry.name or ""
    if policy.excluded(path):
        return None
    allowed = policy.digests.get(path)
    if allowed is not None and digest in allowed:
        return None
    if entry.signature and policy.keys:
        try:
            signature = parse_ima_signature(entry.signature)
            verify_ima_signature(signature, digest[0], digest[1], policy.keys)
        except ParseError as exc:
            return Reason("tpm.ima.signature_malformed", f"{_where(entry)}: {exc}")
        except ImaSignatureError as exc:
            return Reason(f"tpm.ima.signature_{exc.code}", f"{_where(entry)}: {exc}")
        return None
    if allowed is None:
        return Reason("tpm.ima.path_unknown", f"{_where(entry)}: not in the policy")
    return Reason("tpm.ima.digest_not_allowed", f"{_where(entry)}: {digest[0]}:{digest[1].hex()}")


@dataclass(frozen=True, slots=True)
class ImaAppraisal:
    """What :func:`appraise_ima_full` found: the findings, and the violations let pass."""

    reasons: tuple[Reason, ...]
    violations_tolerated: int  # 0 unless the policy's violations is "tolerate"


def appraise_ima(entries: Iterable[ImaEntry], policy: RuntimePolicy) -> list[Reason]:
    """Every finding in ``entries``: :func:`appraise_ima_full`'s reasons."""
    return list(appraise_ima_full(entries, policy).reasons)


def appraise_ima_full(entries: Iterable[ImaEntry], policy: RuntimePolicy) -> ImaAppraisal:
    """Every finding in ``entries`` (replayed ones only: their replay matched a quote).

    Rejects by default. Per entry, in order: entry 0 named ``boot_aggregate`` is
    skipped (:func:`~verifier.evidence.tpm.ima_replay.check_boot_aggregate` checks it
    against the quoted PCRs); a violation is ``tpm.ima.violation`` whatever its name (a
    violation extends ff..ff, so nothing binds the name it shows), or, when the
    policy's ``violations`` is ``tolerate``, counted in ``violations_tolerated``
    instead; an unknown
    template is ``tpm.ima.template_unknown``; an ima-buf entry must have a digest of its
    buffer that its keyring or buffer name allows (``tpm.ima.buffer_digest_mismatch``,
    ``tpm.ima.buffer_unknown``, ``tpm.ima.digest_not_allowed``); a file entry passes if its
    path is excluded, or its digest is allowed for its path, or (ima-sig, policy with
    keys) its signature verifies; otherwise the signature's failure
    (``tpm.ima.signature_malformed``/``_invalid``/``_key_unknown``/``_unsupported``/
    ``_algorithm_mismatch``), ``tpm.ima.path_unknown`` or ``tpm.ima.digest_not_allowed``.
    """
    reasons: list[Reason] = []
    tolerated = 0
    allowed = policy.digests.get
    if not isinstance(entries, list | tuple):
        entries = tuple(entries)
    index = policy.digest_index
    others = None if index is None else ima_native.unallowed(entries, index)
    if others is not None:  # the C path skipped the entries the fast path below skips
        entries = [entries[at] for at in others]
    for entry in entries:
        # What most entries are, decided without building anything: a file (not a
        # violation) whose digest the policy allows for its path. _finding would
        # return None for it too; everything else goes through _finding.
        if (
            (entry.digest_alg, entry.digest) in allowed(entry.name, _NOTHING)  # type: ignore[arg-type]
            and entry.template_name in _FILE_TEMPLATES
            and any(entry.template_hash)  # not a violation (all zero)
        ):
            continue
        reason = _finding(entry, policy)
        if reason is not None:
            reasons.append(reason)
        elif entry.is_violation and not (entry.index == 0 and entry.name == _BOOT_AGGREGATE):
            tolerated += 1  # _finding passes a violation only when the policy tolerates it
    return ImaAppraisal(tuple(reasons), tolerated)


def _finding(entry: ImaEntry, policy: RuntimePolicy) -> Reason | None:
    """appraise_ima for one entry (the checks in its docstring)."""
    if entry.index == 0 and entry.name == _BOOT_AGGREGATE:
        return None
    if entry.is_violation:
        if policy.violations == "tolerate":
            return None
        return Reason("tpm.ima.violation", f"{_where(entry)} (name unauthenticated)")
    if entry.digest_alg is None or entry.digest is None:
        return Reason("tpm.ima.template_unknown", f"entry {entry.index}: {entry.template_name!r}")
    digest = (entry.digest_alg, entry.digest)
    if entry.template_name == "ima-buf":
        return _appraise_buffer(entry, digest, policy)
    if entry.template_name in _FILE_TEMPLATES:
        return _appraise_file(entry, digest, policy)
    return Reason("tpm.ima.template_unknown", f"entry {entry.index}: {entry.template_name!r}")
