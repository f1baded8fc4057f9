#!/usr/bin/env python3
"""Quote authentication + PCR appraisal throughput, beside the raw OpenSSL operation.

For each real swtpm vector in ../shared/testvectors/tpm (RSA and ECC AKs) it
times, in the same run on the same bytes:
  reference  the bare signature verification through OpenSSL (pyca/cryptography)
  ours       authenticate_quote (parse TPMS_ATTEST, signature, nonce, PCR
             selection, PCR digest, clock) + appraise_pcrs against pcrs.json
and prints both rates and ours/reference as a ratio. Keylime's figures come
from ../shared/bench (`make bench-keylime`), which needs its own venv.

Usage: python bench/bench_quote.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from verifier.evidence.tpm.appraise import ReferencePcrs, appraise_pcrs
from verifier.evidence.tpm.authenticate import authenticate_quote
from verifier.evidence.tpm.keys import public_key
from verifier.evidence.tpm.parse import parse_signature, parse_tpm2b_public

VECTORS = (
    Path(
        os.environ.get(
            "WEIGHTGATE_TESTVECTORS", Path(__file__).resolve().parents[2] / "shared" / "testvectors"
        )
    )
    / "tpm"
)
SETS = ("swtpm-rsa-sha1sha256-loc0", "swtpm-ecc-sha256-loc3")


def rate(call: Callable[[], object], seconds: float) -> float:
    call()  # warm-up
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            call()
        count += 50
    return count / elapsed


def load_pcrs(path: Path) -> dict[str, dict[int, bytes]]:
    document = json.loads(path.read_text())["pcrs"]
    return {
        bank: {int(i): bytes.fromhex(v) for i, v in values.items()}
        for bank, values in document.items()
    }


def bench_set(directory: Path, seconds: float) -> dict[str, object]:
    attest = (directory / "quote.attest").read_bytes()
    signature = (directory / "quote.sig").read_bytes()
    nonce = (directory / "nonce.bin").read_bytes()
    ak = parse_tpm2b_public((directory / "ak.tpm2b_public").read_bytes())
    pcrs = load_pcrs(directory / "pcrs.json")
    quoted = {"sha256": [*range(11), 14]}
    reference = ReferencePcrs({"sha256": {i: pcrs["sha256"][i] for i in range(8)}})
    key = public_key(ak)
    parsed_signature = parse_signature(signature)

    def raw_openssl() -> None:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(parsed_signature.signature, attest, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(parsed_signature.signature, attest, ec.ECDSA(hashes.SHA256()))

    def ours() -> None:
        quote = authenticate_quote(
            attest=attest,
            signature=signature,
            ak=ak,
            expected_qualifying_data=nonce,
            required_pcrs=reference.required(),
            reported_pcrs={"sha256": {i: pcrs["sha256"][i] for i in quoted["sha256"]}},
            previous_clock=None,
        )
        if not appraise_pcrs(quote, reference).affirms:
            raise SystemExit(f"{directory.name}: the genuine quote was not affirmed")

    reference_rate = rate(raw_openssl, seconds)
    our_rate = rate(ours, seconds)
    return {
        "set": directory.name,
        "ours_per_s": round(our_rate, 1),
        "openssl_verify_per_s": round(reference_rate, 1),
        "ratio_ours_over_openssl": round(our_rate / reference_rate, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    if not VECTORS.is_dir():
        raise SystemExit(f"test vectors not found at {VECTORS} (set WEIGHTGATE_TESTVECTORS)")
    for name in SETS:
        result = bench_set(VECTORS / name, args.seconds)
        print(
            f"{result['set']}: ours {result['ours_per_s']:>9,.0f} quotes/s   "
            f"openssl verify {result['openssl_verify_per_s']:>9,.0f}/s   "
            f"ratio {result['ratio_ours_over_openssl']:.3f}x"
        )


if __name__ == "__main__":
    main()
