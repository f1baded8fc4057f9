"""The compiled modules: the IMA hot path (verifier/evidence/tpm/native/*.c) and the
quote framing (verifier/evidence/tpm/native_quote/quote.c).

Everything else is declared in pyproject.toml. The IMA extension links OpenSSL's libcrypto
(Debian: libssl-dev, installed by ``make setup``). Without it the verifier still works,
through the pure-Python reference parser and replay, only slower
(verifier/evidence/tpm/ima_native.py).
"""

from pathlib import Path

from setuptools import Extension, setup

# Hidden: only each module's PyInit_ function leaves its shared object.
_COMPILE_ARGS = [
    "-O2",
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-fvisibility=hidden",
]

setup(
    ext_modules=[
        Extension(
            "verifier.evidence.tpm._ima_native",
            sources=[
                *sorted(str(p) for p in Path("verifier/evidence/tpm/native").glob("*.c")),
                "verifier/evidence/tpm/native_common/slots.c",
            ],
            depends=[
                "verifier/evidence/tpm/native/ima_native.h",
                "verifier/evidence/tpm/native_common/slots.h",
            ],
            libraries=["crypto"],
            # A build failure (no compiler, no libcrypto, a Python whose C API moved)
            # leaves the pure-Python path; tests/unit/test_ima_native.py fails then.
            optional=True,
            extra_compile_args=_COMPILE_ARGS,
        ),
        # The quote and its signature framed in C (quote_native.py); no libraries. A
        # build failure leaves the Python readers; tests/unit/test_quote_native.py fails then.
        Extension(
            "verifier.evidence.tpm._quote_native",
            sources=[
                "verifier/evidence/tpm/native_quote/quote.c",
                "verifier/evidence/tpm/native_common/slots.c",
            ],
            depends=["verifier/evidence/tpm/native_common/slots.h"],
            optional=True,
            extra_compile_args=_COMPILE_ARGS,
        ),
    ]
)
