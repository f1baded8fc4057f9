"""Our side of ``bench/tpm_verify.py``: the corpus as our verifier reads it, and the checks.

Each scenario does the work ``../shared/bench/README.md`` section 1 lists for "our
verifier", through the verifier's own functions:

  sig     parse quote.pcrs (tpm2-tools serialized format) + ``authenticate_quote``
          (TPMS_ATTEST parse, AK signature over the exact bytes, nonce == extraData,
          PCR selection, PCR digest, clock)
  static  sig + ``appraise_pcrs`` against PCRs 0-7 of pcrs.json
  mb      sig + ``check_boot_log`` (parse eventlog.bin, replay every bank, compare
          with the quoted PCRs)
  ima     static + ``parse_ascii`` (rebuilds every entry's template data) +
          ``replay_until_quote`` for PCR 10, sha256 bank (checks every template hash)
          + ``appraise_ima`` of every entry against ima_policy (Keylime's runtime
          policy, converted once to ours) + boot_aggregate against that policy
  full    ima + mb

Outside the timed region, as a running verifier has them: the AK (parsed once, the
enrolled key), the reference PCRs, the converted runtime policy, the file bytes.
"""

from __future__ import annotations

import importlib.util
import json
import operator
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.appraise import ReferencePcrs, appraise_pcrs
from verifier.evidence.tpm.authenticate import AuthenticatedQuote, authenticate_quote
from verifier.evidence.tpm.boot_log_check import check_boot_log
from verifier.evidence.tpm.ima import ImaEntry
from verifier.evidence.tpm.ima_ascii import parse_ascii
from verifier.evidence.tpm.ima_policy import (
    RuntimePolicy,
    RuntimePolicyError,
    appraise_ima,
    load_runtime_policy,
)
from verifier.evidence.tpm.ima_replay import ImaReplayError, replay_until_quote, start_state
from verifier.evidence.tpm.parse import TpmPublic, parse_tpm2b_public
from verifier.verdict import VerificationError

CORPUS_FORMAT = "weightgate-bench-tpm-corpus/1"
SCENARIOS = ("sig", "static", "ima", "mb", "full")
MB_PCRS = tuple(range(8))
IMA_PCR = 10
IMA_BANK = "sha256"
BOOT_AGGREGATE = "boot_aggregate"
POLICY_NOTE = (
    "ima_policy (Keylime v1) converted once to ima_policy.RuntimePolicy; appraise_ima checks"
    " every entry, boot_aggregate against the policy's digests as Keylime does"
)

# Returns the rejection reasons; [] means the quote was accepted.
Check = Callable[["QuoteFiles"], list[str]]


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------- quote.pcrs

_TOOLS_BANKS = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}
_TOOLS_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
# tpm2-tools writes the C structs as laid out in memory (little endian on x86):
# TPML_PCR_SELECTION = u32 count + 16 x TPMS_PCR_SELECTION (u16 hash, u8 sizeofSelect,
# u8[4] pcrSelect, 1 padding byte); then a u32 number of TPML_DIGEST, each a u32
# count + 8 x TPM2B_DIGEST (u16 size + 64-byte buffer).
_SELECTION = struct.Struct("<HB4sx")
_SELECTION_SIZE = _SELECTION.size
_SELECTIONS_SIZE = 4 + 16 * _SELECTION_SIZE
_DIGEST_LIST = struct.Struct("<I" + "H64s" * 8)
_FIRST_LIST = _SELECTIONS_SIZE + 4  # after the selections and the number of lists
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_SLOT = 2 + 64  # one TPM2B_DIGEST as tpm2-tools writes it: size, then a full 64-byte buffer
# sizeofSelect, pcrSelect -> the PCRs it selects, ascending (a selection holds at most
# 32 bits; quotes repeat the same few, so the bit walk is done once per bitmap).
_PCR_BITS: dict[bytes, tuple[int, ...]] = {}


class ToolsPcrsError(ValueError):
    pass


def _selected(bitmap: bytes) -> tuple[int, ...]:
    pcrs = _PCR_BITS.get(bitmap)
    if pcrs is None:
        bits = int.from_bytes(bitmap, "little")
        pcrs = tuple(p for p in range(8 * len(bitmap)) if bits >> p & 1)
        if len(_PCR_BITS) < 256:
            _PCR_BITS[bitmap] = pcrs
    return pcrs


class _Layout(NamedTuple):
    """The digest lists that tpm2-tools writes for one PCR selection, as one struct.

    ``digests`` reads, from the number of lists on, every list count, every digest
    size and every digest (exactly its bank's size; the rest of each 64-byte buffer
    and the unused slots skipped, as :func:`_parse_tools_pcrs_checked` skips them).
    ``header_of`` picks the numbers (lists, counts, sizes) out of what it reads, which
    must equal ``header``; ``values_of`` the digests; ``banks`` gives each bank its
    PCRs and the range of its digests.
    """

    size: int  # of the whole file
    digests: struct.Struct
    header_of: Callable[[tuple[Any, ...]], tuple[int, ...]]
    header: tuple[int, ...]
    values_of: Callable[[tuple[Any, ...]], tuple[bytes, ...]]
    banks: tuple[tuple[str, tuple[int, ...], int, int], ...]


# The count and selections of a file (its first 4 + 8 x count bytes) -> the layout of
# its digest lists, for selections that parsed (bounded, like _PCR_BITS: an agent
# quotes the same selection every time).
_LAYOUTS: dict[bytes, _Layout] = {}


def parse_tools_pcrs(raw: bytes) -> dict[str, dict[int, bytes]]:
    """bank -> PCR -> value from a ``tpm2_quote -o`` file (strict: sizes, counts, no trailing).

    The values are assigned in the order tpm2-tools writes them: selections in file
    order, PCRs ascending, split into lists of at most 8.

    A file whose selections parsed before, of the same length, whose list counts and
    digest sizes are exactly those tpm2-tools writes for them, is read in one struct
    call: every field the checked parser would check then holds, and it would return
    the same values. Anything else, or anything new, goes through that parser.
    """
    if len(raw) >= _FIRST_LIST:
        (count,) = _U32.unpack_from(raw, 0)
        layout = _LAYOUTS.get(raw[: 4 + count * _SELECTION_SIZE])
        if layout is not None and len(raw) == layout.size:
            fields = layout.digests.unpack_from(raw, _SELECTIONS_SIZE)
            if layout.header_of(fields) == layout.header:
                values = layout.values_of(fields)
                out: dict[str, dict[int, bytes]] = {}
                # stop - first == len(pcrs) by construction (_layout): no strict zip.
                for bank, pcrs, first, stop in layout.banks:
                    out[bank] = dict(zip(pcrs, values[first:stop], strict=False))
                return out
    return _parse_tools_pcrs_checked(raw)


def _parse_tools_pcrs_checked(raw: bytes) -> dict[str, dict[int, bytes]]:
    """:func:`parse_tools_pcrs` field by field, every check in file order; learns the
    layout of a file that parses."""
    if len(raw) < _SELECTIONS_SIZE + 4:
        raise ToolsPcrsError(f"{len(raw)} bytes: too short for a PCR selection")
    (count,) = _U32.unpack_from(raw, 0)
    if count > 16:
        raise ToolsPcrsError(f"{count} PCR selections")
    (lists,) = _U32.unpack_from(raw, _SELECTIONS_SIZE)
    if len(raw) != _SELECTIONS_SIZE + 4 + lists * _DIGEST_LIST.size:
        raise ToolsPcrsError(f"{len(raw)} bytes for {lists} digest lists")
    values: list[bytes] = []
    for i in range(lists):
        start = _SELECTIONS_SIZE + 4 + i * _DIGEST_LIST.size
        (n,) = _U32.unpack_from(raw, start)
        if n > 8:
            raise ToolsPcrsError(f"digest list of {n}")
        # Only the n used TPM2B_DIGEST slots (u16 size + 64-byte buffer) are read.
        for offset in range(start + 4, start + 4 + n * _SLOT, _SLOT):
            (size,) = _U16.unpack_from(raw, offset)
            if size > 64:
                raise ToolsPcrsError(f"digest of {size} bytes")
            values.append(raw[offset + 2 : offset + 2 + size])
    out: dict[str, dict[int, bytes]] = {}
    banks: list[tuple[str, tuple[int, ...]]] = []
    used = 0
    for i in range(count):
        alg, size_of_select, bitmap = _SELECTION.unpack_from(raw, 4 + i * _SELECTION.size)
        bank = _TOOLS_BANKS.get(alg)
        if bank is None or bank in out:
            raise ToolsPcrsError(f"hash algorithm 0x{alg:04x}: unknown or repeated")
        if size_of_select > 4:
            raise ToolsPcrsError(f"sizeofSelect {size_of_select}")
        pcrs = _selected(bitmap[:size_of_select])
        bank_values = values[used : used + len(pcrs)]
        used += len(pcrs)
        size = _TOOLS_SIZES[bank]
        if len(bank_values) != len(pcrs) or any(len(v) != size for v in bank_values):
            raise ToolsPcrsError(f"{bank}: values missing or not of {size} bytes")
        out[bank] = dict(zip(pcrs, bank_values, strict=True))
        banks.append((bank, pcrs))
    if used != len(values):
        raise ToolsPcrsError(f"{len(values)} values for {used} selected PCRs")
    key = raw[: 4 + count * _SELECTION_SIZE]
    if key not in _LAYOUTS and len(_LAYOUTS) < 256:
        layout = _layout(banks)
        if layout is not None:
            _LAYOUTS[key] = layout
    return out


def _layout(banks: list[tuple[str, tuple[int, ...]]]) -> _Layout | None:
    """The layout tpm2-tools writes for these banks: their digests in order, in lists
    of 8 (the last one shorter). None for fewer than 2 digests, which itemgetter
    would not return as a tuple (such files take the checked path)."""
    sizes = [_TOOLS_SIZES[bank] for bank, pcrs in banks for _ in pcrs]
    if len(sizes) < 2:
        return None
    lists = [sizes[i : i + 8] for i in range(0, len(sizes), 8)]
    fmt = ["<I"]  # the number of lists
    header_at, header, values_at = [0], [len(lists)], []
    field = 1
    for in_list in lists:
        fmt.append("I")
        header_at.append(field)
        header.append(len(in_list))
        field += 1
        for size in in_list:
            fmt.append(f"H{size}s{64 - size}x")
            header_at.append(field)
            header.append(size)
            values_at.append(field + 1)
            field += 2
        fmt.append(f"{(8 - len(in_list)) * _SLOT}x")
    ranges: list[tuple[str, tuple[int, ...], int, int]] = []
    first = 0
    for bank, pcrs in banks:
        ranges.append((bank, pcrs, first, first + len(pcrs)))
        first += len(pcrs)
    digests = struct.Struct("".join(fmt))
    return _Layout(
        size=_SELECTIONS_SIZE + digests.size,
        digests=digests,
        header_of=operator.itemgetter(*header_at),
        header=tuple(header),
        values_of=operator.itemgetter(*values_at),
        banks=tuple(ranges),
    )


# --------------------------------------------------------------------------- runtime policy


def convert_keylime_policy(text: str) -> tuple[RuntimePolicy, str]:
    """A Keylime runtime policy (v1 JSON) as our RuntimePolicy, and its log hash algorithm.

    Done once, outside the timed region (a verifier converts and caches it). Keylime's
    ``digests``, ``keyrings`` and ``ima-buf`` map to ours unchanged (bare hex digests
    take their algorithm from their length in both). Keylime matches an exclude from
    the start of the path (``re.match``), ours must match the whole path, so each is
    given a ``.*`` tail. What has no counterpart here (``verification-keys``, which
    Keylime keeps as a JSON string, ``ima.ignored_keyrings``, ``ima.dm_policy``) is
    refused when present, never dropped.
    """
    doc = json.loads(text)
    if doc.get("meta", {}).get("version") != 1:
        raise BenchError(f"runtime policy meta {doc.get('meta')!r}: expected version 1")
    ima = doc.get("ima") or {}
    unsupported = [
        key
        for key, value in (
            ("verification-keys", doc.get("verification-keys")),
            ("ima.ignored_keyrings", ima.get("ignored_keyrings")),
            ("ima.dm_policy", ima.get("dm_policy")),
        )
        if value not in (None, "", [], {})
    ]
    if unsupported:
        raise BenchError(f"runtime policy uses {unsupported}: not converted by the bench")
    ours = {
        "version": 1,
        "digests": doc.get("digests") or {},
        "excludes": [f"(?s:(?:{e}).*)" for e in doc.get("excludes") or []],
        "keyrings": doc.get("keyrings") or {},
        "buffers": doc.get("ima-buf") or {},
    }
    try:
        policy = load_runtime_policy(json.dumps(ours))
    except RuntimePolicyError as exc:
        raise BenchError(f"runtime policy refused: {exc}") from None
    return policy, str(ima.get("log_hash_alg") or "sha1")


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class QuoteFiles:
    name: str
    nonce: bytes
    attest: bytes
    sig: bytes
    pcrs: bytes


@dataclass(frozen=True)
class Corpus:
    root: Path
    meta: dict[str, Any]
    ak: TpmPublic
    reference: ReferencePcrs
    eventlog: bytes
    ima_log: bytes
    policy: RuntimePolicy
    template_hash_alg: str
    quote_sets: dict[str, list[QuoteFiles]]
    quoted_pcrs: dict[str, tuple[int, ...]]


def load_corpus(root: Path) -> Corpus:
    meta = json.loads((root / "corpus.json").read_text())
    if meta.get("format") != CORPUS_FORMAT:
        raise BenchError(f"{root}: format {meta.get('format')!r}, expected {CORPUS_FORMAT!r}")
    sets: dict[str, list[QuoteFiles]] = {}
    quoted: dict[str, tuple[int, ...]] = {}
    for name, info in meta["quote_sets"].items():
        dirs = sorted(d for d in (root / info["dir"]).iterdir() if d.is_dir())
        if len(dirs) != info["count"]:
            raise BenchError(f"{root / info['dir']}: {len(dirs)} quotes, expected {info['count']}")
        sets[name] = [
            QuoteFiles(
                d.name,
                bytes.fromhex((d / "nonce.hex").read_text()),
                (d / "quote.attest").read_bytes(),
                (d / "quote.sig").read_bytes(),
                (d / "quote.pcrs").read_bytes(),
            )
            for d in dirs
        ]
        quoted[name] = tuple(info["pcrs"])
    golden = json.loads((root / meta["pcrs"]["file"]).read_text())["sha256"]
    reference = ReferencePcrs({"sha256": {p: bytes.fromhex(golden[str(p)]) for p in MB_PCRS}})
    policy, template_hash_alg = convert_keylime_policy(
        (root / meta["ima"]["policy"]["file"]).read_text()
    )
    return Corpus(
        root=root,
        meta=meta,
        ak=parse_tpm2b_public((root / meta["ak"]["tpm2b_public"]).read_bytes()),
        reference=reference,
        eventlog=(root / meta["eventlog"]["file"]).read_bytes(),
        ima_log=(root / meta["ima"]["file"]).read_bytes(),
        policy=policy,
        template_hash_alg=template_hash_alg,
        quote_sets=sets,
        quoted_pcrs=quoted,
    )


# --------------------------------------------------------------------------- checks


def ima_replay_reasons(
    entries: tuple[ImaEntry, ...], quote: AuthenticatedQuote, template_hash_alg: str
) -> list[str]:
    """Replay the entries into the quoted PCR 10 (sha256 bank), every template hash checked."""
    quoted = quote.pcrs.get(IMA_BANK, {}).get(IMA_PCR)
    if quoted is None:
        return [f"ima.pcr_not_quoted: {IMA_BANK} PCR{IMA_PCR}"]
    try:
        state = replay_until_quote(
            start_state((IMA_BANK,)),
            entries,
            {IMA_BANK: {IMA_PCR: quoted}},
            template_hash_alg=template_hash_alg,
        )
    except ImaReplayError as exc:
        return [f"ima.{exc.code}: {exc}"]
    if state.count != len(entries):
        # An agent reads its list after quoting; the corpus's lists end at the quote.
        return [f"ima.unquoted_tail: only {state.count} of {len(entries)} entries match"]
    return []


def ima_policy_reasons(entries: tuple[ImaEntry, ...], policy: RuntimePolicy) -> list[str]:
    """``appraise_ima`` over every entry, and boot_aggregate the way Keylime checks it.

    appraise_ima leaves boot_aggregate to ``check_boot_aggregate`` over the quoted
    PCRs, but the corpus's boot_aggregate covers PCRs 0-9 and its quotes cover 0-7 and
    10 only; Keylime (without a measured-boot policy) looks it up in the runtime
    policy's digests, and so does the bench.
    """
    first = entries[0] if entries else None
    if first is None or first.index != 0 or first.name != BOOT_AGGREGATE or not first.digest:
        return ["ima.boot_aggregate_missing"]
    reasons: list[str] = []
    if (first.digest_alg, first.digest) not in policy.digests.get(BOOT_AGGREGATE, ()):
        reasons.append("ima.boot_aggregate_not_allowed")
    return reasons + [str(r) for r in appraise_ima(entries, policy)]


def ima_reasons(
    log: bytes, quote: AuthenticatedQuote, policy: RuntimePolicy, template_hash_alg: str
) -> list[str]:
    """Parse the ASCII list, replay it to the quoted PCR 10, appraise every entry."""
    try:
        entries = parse_ascii(log, template_hash_alg=template_hash_alg).entries
    except ParseError as exc:
        return [f"ima.{exc.code}: {exc}"]
    return ima_replay_reasons(entries, quote, template_hash_alg) or ima_policy_reasons(
        entries, policy
    )


def make_check(
    corpus: Corpus,
    scenario: str,
    *,
    ima_log: bytes | None = None,
    eventlog: bytes | None = None,
    nonce_override: bytes | None = None,
) -> Check:
    """Our verification of one quote in ``scenario`` (module docstring)."""
    if scenario not in SCENARIOS:
        raise ValueError(scenario)
    set_name = corpus.meta["scenarios"][scenario]
    ak = corpus.ak
    required = {"sha256": frozenset(corpus.quoted_pcrs[set_name])}
    reference = corpus.reference
    policy = corpus.policy
    hash_alg = corpus.template_hash_alg
    static = scenario in ("static", "ima", "full")
    ima = scenario in ("ima", "full")
    mb = scenario in ("mb", "full")
    ima_bytes = corpus.ima_log if ima_log is None else ima_log
    mb_bytes = corpus.eventlog if eventlog is None else eventlog

    def check(q: QuoteFiles) -> list[str]:
        try:
            quote = authenticate_quote(
                attest=q.attest,
                signature=q.sig,
                ak=ak,
                expected_qualifying_data=q.nonce if nonce_override is None else nonce_override,
                required_pcrs=required,
                reported_pcrs=parse_tools_pcrs(q.pcrs),
                previous_clock=None,
            )
        except ToolsPcrsError as exc:
            return [f"tpm.quote.pcr_values_malformed: {exc}"]
        except VerificationError as exc:
            return [str(exc.reason)]
        reasons: list[str] = []
        if static:
            verdict = appraise_pcrs(quote, reference)
            if not verdict.affirms:
                reasons += [str(r) for r in verdict.reasons]
        if mb:
            boot = check_boot_log(mb_bytes, quote)
            if not boot.passed:
                reasons += [str(r) for r in boot.reasons] or ["tpm.eventlog.not_replayed"]
        if ima:
            reasons += ima_reasons(ima_bytes, quote, policy, hash_alg)
        return reasons

    return check


# --------------------------------------------------------------------------- controls


def load_keylime_timer(path: Path) -> ModuleType:
    """time_keylime.py as a module, for its tamper functions (so both sides get the
    very same tampered inputs). Importing it runs nothing but definitions."""
    spec = importlib.util.spec_from_file_location("wg_bench_time_keylime", path)
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def control(corpus: Corpus, scenario: str, timer: ModuleType, quote: QuoteFiles) -> dict[str, Any]:
    """The tampered input time_keylime.py feeds Keylime for ``scenario``; must be rejected."""
    if scenario in ("sig", "static"):
        probe = "nonce with one bit flipped"
        flipped = bytes([quote.nonce[0] ^ 1]) + quote.nonce[1:]
        check = make_check(corpus, scenario, nonce_override=flipped)
    elif scenario in ("ima", "full"):
        probe = "last IMA entry's file digest edited"
        tampered: str = timer.tampered_ima_log(corpus.ima_log.decode())
        check = make_check(corpus, scenario, ima_log=tampered.encode())
    else:
        probe = "extra boot event appended for PCR 5"
        check = make_check(corpus, scenario, eventlog=timer.tampered_eventlog(corpus.eventlog))
    reasons = check(quote)
    return {"probe": probe, "rejected": bool(reasons), "reasons": [r[:120] for r in reasons[:2]]}


# --------------------------------------------------------------------------- where the time goes


def stage_times(corpus: Corpus) -> dict[str, float]:
    """Mean ms per quote of each stage of ``full``, timed apart, without a profiler."""
    quotes = corpus.quote_sets[corpus.meta["scenarios"]["full"]]
    required = {"sha256": frozenset(corpus.quoted_pcrs[corpus.meta["scenarios"]["full"]])}
    alg = corpus.template_hash_alg
    totals: dict[str, float] = {}

    def timed(stage: str, start: float) -> float:
        now = time.perf_counter()
        totals[stage] = totals.get(stage, 0.0) + now - start
        return now

    for i, q in enumerate([quotes[0], *quotes]):  # the first is a warm-up
        if i == 1:
            totals.clear()
        t = time.perf_counter()
        reported = parse_tools_pcrs(q.pcrs)
        t = timed("quote.pcrs parse", t)
        quote = authenticate_quote(
            attest=q.attest,
            signature=q.sig,
            ak=corpus.ak,
            expected_qualifying_data=q.nonce,
            required_pcrs=required,
            reported_pcrs=reported,
            previous_clock=None,
        )
        t = timed("authenticate_quote", t)
        if not appraise_pcrs(quote, corpus.reference).affirms:
            raise BenchError(f"{q.name}: PCRs 0-7 differ from pcrs.json")
        t = timed("appraise_pcrs", t)
        if not check_boot_log(corpus.eventlog, quote).passed:
            raise BenchError(f"{q.name}: boot log does not replay")
        t = timed("check_boot_log", t)
        entries = parse_ascii(corpus.ima_log, template_hash_alg=alg).entries
        t = timed("IMA parse_ascii", t)
        if ima_replay_reasons(entries, quote, alg):
            raise BenchError(f"{q.name}: IMA log does not replay")
        t = timed("IMA replay_until_quote", t)
        if ima_policy_reasons(entries, corpus.policy):
            raise BenchError(f"{q.name}: IMA policy refused an entry")
        timed("IMA appraise_ima", t)
    return {stage: 1000 * total / len(quotes) for stage, total in totals.items()}
