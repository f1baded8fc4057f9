#!/usr/bin/env python3
"""SEV-SNP report and TDX quote verification per core, beside the raw OpenSSL signature cost.

Ours, per call (inputs read and certificates loaded once, outside the timed region):

* snp: ``parse_report`` + ``authenticate_report`` on go-sev-guest's Milan v2 report
  with its VCEK, the KDS SEV-Milan ASK and the three pinned ARKs, at 2025-06-01
  (tests/snp_vectors.py AT). Every call verifies the report's ECDSA P-384
  signature; the VCEK <- ASK <- ARK RSA-4096-PSS path is reused from the
  library's verified-chain cache (exact certificate bytes, pinned ARKs, validity).
* tdx: ``parse_quote`` + ``authenticate_quote`` on go-tdx-guest's GCE COS-113 v4
  quote (zero padding stripped once, outside), pinned Intel SGX Root CA, at
  2026-02-15 (tests/tdx_vectors.py AT_2026). The PCK chain travels as PEM inside
  the quote; its verified path is reused from the library's cache (exact PEM
  bytes, pinned root, validity); the quote and QE report signatures run every call.

References, measured in the same run, interleaved round by round with ours, with
every key already loaded (the raw OpenSSL cost through pyca/cryptography):

* snp "sig": one ECDSA P-384/SHA-384 verify of bytes 0x000..0x29F (r, s little-endian
  -> DER in the call); "sig+chain": that plus the two RSA-4096-PSS links.
* tdx "sig": the two ECDSA P-256/SHA-256 verifies the quote needs (quote by the
  attestation key, QE report by the PCK); "sig+chain": plus PCK <- CA and CA <- root.

Ratio = ours time / reference time; the issue's target is "within 2x of the raw
signature cost" with chains cached, i.e. ours vs "sig", judged on p50 (robust on
shared cores; the mean ratio is printed beside it). The library's chain step
(verify_key_chain / PEM parse + verify_chain) is also timed alone, cold, to show
what the chain caches save per call.

Gates (exit status 1 when one fails): the genuine input authenticates, and a control
with REPORT_DATA byte 0 flipped is rejected with the signature reason, by ours and by
the reference. Missing the target does not change the exit status.

Usage: python bench/cvm_verify.py [--seconds 12] [--only snp|tdx] [--profile [TOP]]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.backends.openssl import backend
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from verifier.evidence.snp.authenticate import authenticate_report
from verifier.evidence.snp.certs import load_certificates, read_key_cert
from verifier.evidence.snp.chain import load_amd_roots, verify_key_chain
from verifier.evidence.snp.report import SIGNED_SIZE, parse_report
from verifier.evidence.tdx.authenticate import authenticate_quote
from verifier.evidence.tdx.pki import parse_pem_certificates, verify_chain
from verifier.evidence.tdx.quote import HEADER_SIZE, parse_quote, strip_zero_padding
from verifier.verdict import VerificationError

VECTORS = Path(
    os.environ.get(
        "WEIGHTGATE_TESTVECTORS",
        Path(__file__).resolve().parents[2] / "shared" / "testvectors",
    )
)
SNP_REPORT, SNP_VCEK, SNP_CHAIN = (
    "gosevguest_milan_v2_report.bin",
    "gosevguest_milan_vcek.der",
    "amd_milan_ask_ark.pem",
)
SNP_AT = datetime(2025, 6, 1, tzinfo=UTC)
TDX_QUOTE, TDX_ROOT = "gotdx_v4_quote_cos113.dat", "intel_sgx_root_ca.pem"
TDX_AT = datetime(2026, 2, 15, tzinfo=UTC)
SNP_REPORT_DATA = 0x050  # ABI ATTESTATION_REPORT.REPORT_DATA
TD_REPORT_DATA = 520  # REPORTDATA's offset in the TD report body (quote.py _parse_body)
TARGET = 2.0
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
P384, P256 = ec.ECDSA(hashes.SHA384()), ec.ECDSA(hashes.SHA256())

Call = Callable[[], object]


@dataclass(frozen=True)
class Scenario:
    name: str
    vector: str
    ours: Call
    refs: dict[str, tuple[str, Call]]  # label -> (what it does, call)
    chain_only: Call  # the library's chain step alone
    gates: list[tuple[str, bool, str]]  # (what, passed, detail)
    stages: dict[str, tuple[str, ...]]  # profile label -> substrings of one function's name


def _flip(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def _rejected(call: Call, code: str) -> tuple[bool, str]:
    try:
        call()
    except VerificationError as exc:
        return exc.reason.code == code, exc.reason.code
    return False, "accepted"


def _raises_invalid(call: Call) -> tuple[bool, str]:
    try:
        call()
    except InvalidSignature:
        return True, "InvalidSignature"
    return False, "verified"


def _accepted(call: Call) -> tuple[bool, str]:
    try:
        result = call()
    except (VerificationError, InvalidSignature) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, type(result).__name__


def snp_scenario() -> Scenario:
    d = VECTORS / "snp"
    report = (d / SNP_REPORT).read_bytes()
    vcek = load_certificates((d / SNP_VCEK).read_bytes())[0]
    chain = load_certificates((d / SNP_CHAIN).read_bytes())
    (ask,) = [c for c in chain if c.issuer != c.subject]
    (ark,) = [c for c in chain if c.issuer == c.subject]
    arks = [
        c
        for line in ("milan", "genoa", "turin")
        for c in load_certificates((d / f"amd_{line}_ask_ark.pem").read_bytes())
        if c.issuer == c.subject
    ]
    roots = load_amd_roots(arks)
    control = _flip(report, SNP_REPORT_DATA)

    def ours_on(data: bytes) -> Call:
        return lambda: authenticate_report(
            parse_report(data), key_certificate=vcek, intermediates=[ask], roots=roots, at=SNP_AT
        )

    vcek_key, ask_key, ark_key = vcek.public_key(), ask.public_key(), ark.public_key()
    assert isinstance(vcek_key, ec.EllipticCurvePublicKey)
    assert isinstance(ask_key, rsa.RSAPublicKey) and isinstance(ark_key, rsa.RSAPublicKey)
    vcek_sig, vcek_tbs = vcek.signature, vcek.tbs_certificate_bytes
    ask_sig, ask_tbs = ask.signature, ask.tbs_certificate_bytes

    def sig_on(data: bytes) -> Call:
        def call() -> None:
            r = int.from_bytes(data[SIGNED_SIZE : SIGNED_SIZE + 72], "little")
            s = int.from_bytes(data[SIGNED_SIZE + 72 : SIGNED_SIZE + 144], "little")
            vcek_key.verify(encode_dss_signature(r, s), data[:SIGNED_SIZE], P384)

        return call

    sig = sig_on(report)

    def sig_chain() -> None:
        sig()
        ask_key.verify(vcek_sig, vcek_tbs, PSS, hashes.SHA384())
        ark_key.verify(ask_sig, ask_tbs, PSS, hashes.SHA384())

    key = read_key_cert(vcek)
    ours = ours_on(report)
    gates = [
        ("ours: genuine report authenticates", *_accepted(ours)),
        (
            "ours: REPORT_DATA[0] flipped -> snp.report.signature_invalid",
            *_rejected(ours_on(control), "snp.report.signature_invalid"),
        ),
        ("ref: genuine P-384 + 2 RSA-PSS verify", *_accepted(sig_chain)),
        ("ref: REPORT_DATA[0] flipped -> InvalidSignature", *_raises_invalid(sig_on(control))),
    ]
    return Scenario(
        name="snp",
        vector=f"{SNP_REPORT} + {SNP_VCEK} + {SNP_CHAIN}, at {SNP_AT:%Y-%m-%d}",
        ours=ours,
        refs={
            "sig": ("1x ECDSA P-384 verify (report)", sig),
            "sig+chain": ("+ 2x RSA-4096-PSS (VCEK<-ASK, ASK<-ARK)", sig_chain),
        },
        chain_only=lambda: verify_key_chain(key, [ask], roots, at=SNP_AT),
        gates=gates,
        stages={
            "parse_report": ("report.py:parse_report",),
            "read_key_cert (VCEK extensions)": ("certs.py:read_key_cert",),
            "verify_key_chain": ("chain.py:verify_key_chain",),
            "  RSA-PSS verify (2/call)": ("'verify'", "RSAPublicKey"),
            "_check_signature": ("authenticate.py:_check_signature",),
            "  ECDSA verify (1/call)": ("'verify'", "ECPublicKey"),
            "Certificate.public_key()": ("'public_key'", "x509.Certificate"),
            "decode_tcb": ("tcb.py:decode_tcb",),
        },
    )


def tdx_scenario() -> Scenario:
    d = VECTORS / "tdx"
    quote, _ = strip_zero_padding((d / TDX_QUOTE).read_bytes())
    root = x509.load_pem_x509_certificate((d / TDX_ROOT).read_bytes())
    parsed = parse_quote(quote)
    body_start = HEADER_SIZE + (6 if parsed.header.version == 5 else 0)
    control = _flip(quote, body_start + TD_REPORT_DATA)
    assert parse_quote(control).body.report_data[0] != parsed.body.report_data[0]

    def ours_on(data: bytes) -> Call:
        return lambda: authenticate_quote(parse_quote(data), root=root, at=TDX_AT)

    certification = parsed.certification
    sent = parse_pem_certificates(certification.pck_chain_pem)
    pck, ca = [c for c in sent if c.subject != c.issuer]
    ak = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), b"\x04" + parsed.attestation_key
    )
    pck_key, ca_key, root_key = pck.public_key(), ca.public_key(), root.public_key()
    assert isinstance(pck_key, ec.EllipticCurvePublicKey)
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    assert isinstance(root_key, ec.EllipticCurvePublicKey)
    qe_raw, qe_sig = certification.qe_report.raw, certification.qe_report_signature
    pck_sig, pck_tbs = pck.signature, pck.tbs_certificate_bytes
    ca_sig, ca_tbs = ca.signature, ca.tbs_certificate_bytes
    signed_end = len(parsed.signed_bytes)

    def der(rs: bytes) -> bytes:
        return encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))

    def sig_on(data: bytes) -> Call:
        sig_rs = data[signed_end + 4 : signed_end + 68]  # after the u32 signature data length

        def call() -> None:
            ak.verify(der(sig_rs), data[:signed_end], P256)
            pck_key.verify(der(qe_sig), qe_raw, P256)

        return call

    sig = sig_on(quote)

    def sig_chain() -> None:
        sig()
        ca_key.verify(pck_sig, pck_tbs, P256)
        root_key.verify(ca_sig, ca_tbs, P256)

    ours = ours_on(quote)
    gates = [
        ("ours: genuine quote authenticates", *_accepted(ours)),
        (
            "ours: REPORT_DATA[0] flipped -> tdx.quote.signature_invalid",
            *_rejected(ours_on(control), "tdx.quote.signature_invalid"),
        ),
        ("ref: genuine 4x P-256 verify", *_accepted(sig_chain)),
        ("ref: REPORT_DATA[0] flipped -> InvalidSignature", *_raises_invalid(sig_on(control))),
    ]
    pem = certification.pck_chain_pem
    return Scenario(
        name="tdx",
        vector=f"{TDX_QUOTE} (v{parsed.header.version}, {len(quote)} B) + {TDX_ROOT}, "
        f"at {TDX_AT:%Y-%m-%d}",
        ours=ours,
        refs={
            "sig": ("2x ECDSA P-256 verify (quote, QE report)", sig),
            "sig+chain": ("+ 2x ECDSA P-256 (PCK<-CA, CA<-root)", sig_chain),
        },
        chain_only=lambda: verify_chain(
            parse_pem_certificates(pem), root=root, at=TDX_AT, prefix="tdx.pck"
        ),
        gates=gates,
        stages={
            "parse_quote": ("quote.py:parse_quote",),
            "parse_pem_certificates (PCK chain PEM)": ("pki.py:parse_pem_certificates",),
            "verify_chain": ("pki.py:verify_chain",),
            "  verify_directly_issued_by (2/call)": ("verify_directly_issued_by",),
            "  check_pinned_root (SPKI SHA-256)": ("pki.py:check_pinned_root",),
            "_verify_p256": ("authenticate.py:_verify_p256",),
            "  ECDSA verify (2/call)": ("'verify'", "ECPublicKey"),
            "from_encoded_point (attestation key)": ("from_encoded_point",),
            "read_pck_extension": ("pck_extension.py:read_pck_extension",),
        },
    )


def time_interleaved(
    calls: dict[str, Call], seconds: float, block: int = 20
) -> dict[str, list[float]]:
    """Round-robin blocks of each call until ``seconds`` pass; per-call times in seconds."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():  # warm-up
        for _ in range(block):
            call()
    clock = time.perf_counter
    deadline = clock() + seconds
    while clock() < deadline:
        for name, call in calls.items():
            out = samples[name]
            for _ in range(block):
                start = clock()
                call()
                out.append(clock() - start)
    return samples


def _stats(times: list[float]) -> dict[str, float]:
    mean = statistics.fmean(times)
    return {
        "n": len(times),
        "mean_us": 1e6 * mean,
        "p50_us": 1e6 * statistics.median(times),
        "ops_s": 1.0 / mean,
    }


def _where(func: tuple[str, int, str]) -> str:
    path, _line, name = func  # path "~" for a C function: name is "<method 'verify' of ...>"
    return name if path == "~" else f"{Path(path).name}:{name}"


def profile(scenario: Scenario, calls: int, top: int) -> list[str]:
    scenario.ours()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        scenario.ours()
    profiler.disable()
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())  # every function's own time: the profiled time
    lines = [f"  cProfile, {calls} calls of ours (profiler overhead inflates Python-side shares):"]
    for label, where in scenario.stages.items():
        hit = [v for f, v in raw.items() if all(part in _where(f) for part in where)]
        ncalls, cum = sum(v[1] for v in hit), sum(v[3] for v in hit)
        lines.append(
            f"    {label:<42} {1e6 * cum / calls:8.1f} us/call  {100 * cum / total:5.1f}%"
            f"  ({ncalls / calls:.0f} calls/call)"
        )
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(top)
    body = text.getvalue().splitlines()
    start = next((i for i, line in enumerate(body) if "ncalls" in line), 0)
    lines.append(f"  top {top} by own time:")
    lines += ["    " + line for line in body[start:] if line.strip()]
    return lines


def report(scenario: Scenario, seconds: float, top: int | None) -> bool:
    print(f"\n== {scenario.name}: {scenario.vector}")
    ok = True
    for what, passed, detail in scenario.gates:
        ok &= passed
        print(f"  gate {'ok  ' if passed else 'FAIL'} {what}  [{detail}]")
    if not ok:
        print("  gates failed: not timed (a benchmark of a failing verdict is meaningless)")
        return False
    calls = {"ours": scenario.ours, "chain": scenario.chain_only}
    calls |= {label: call for label, (_what, call) in scenario.refs.items()}
    stats = {name: _stats(t) for name, t in time_interleaved(calls, seconds).items()}
    o = stats["ours"]
    print(
        f"  ours  parse+authenticate             {o['ops_s']:8.0f} ops/s  "
        f"mean {o['mean_us']:7.1f} us  p50 {o['p50_us']:7.1f} us  (n={o['n']})"
    )
    for label, (what, _call) in scenario.refs.items():
        r = stats[label]
        ratio_p50, ratio_mean = o["p50_us"] / r["p50_us"], o["mean_us"] / r["mean_us"]
        verdict = "met" if ratio_p50 <= TARGET else "NOT MET"
        print(
            f"  ref   {label:<9} {what}\n"
            f"                                         {r['ops_s']:8.0f} ops/s  "
            f"mean {r['mean_us']:7.1f} us  p50 {r['p50_us']:7.1f} us  (n={r['n']})\n"
            f"        ratio ours/{label:<9} p50 {ratio_p50:5.2f}x  mean {ratio_mean:5.2f}x"
            + (
                f"   [target within {TARGET:.0f}x of raw signature cost: {verdict}]"
                if label == "sig"
                else "   (what a cold call also pays)"
            )
        )
    c = stats["chain"]
    print(f"  the chain step alone, cold (saved per call by the cache): p50 {c['p50_us']:7.1f} us")
    if top is not None:
        print("\n".join(profile(scenario, 300, top)))
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="timed seconds per scenario")
    parser.add_argument("--only", choices=("snp", "tdx"))
    parser.add_argument("--profile", type=int, nargs="?", const=15, metavar="TOP")
    args = parser.parse_args()
    if not VECTORS.is_dir():
        print(f"test vectors not found at {VECTORS} (set WEIGHTGATE_TESTVECTORS)", file=sys.stderr)
        return 2
    print(
        f"cvm_verify: Python {platform.python_version()}, cryptography {version('cryptography')},"
        f" {backend.openssl_version_text()}, {os.cpu_count()} CPUs visible, one thread;"
        f" ours and references interleaved in blocks of 20, {args.seconds:g} s per scenario"
    )
    builders = {"snp": snp_scenario, "tdx": tdx_scenario}
    ok = True
    for name, build in builders.items():
        if args.only in (None, name):
            ok &= report(build(), args.seconds, args.profile)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
