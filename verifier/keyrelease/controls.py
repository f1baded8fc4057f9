"""Required controls: what a pre-deployment review may demand of a host's evidence.

A review names controls (``required_controls``); the release gate grants keys
only if the host's latest affirming verdict ran, and passed, the checks each
control stands for. Unknown names are refused when the review is proposed, so
a typo cannot become a control nobody enforces.

Controls whose evidence this verifier does not verify on the stream yet (TDX
quotes) can be required already: no verdict records their
checks, so every release under such a review is denied, naming the control.
That is the fail-closed reading of "required".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Control:
    description: str
    # The verdict satisfies the control if it ran any one of these checks.
    any_of_checks: frozenset[str]


CONTROLS: Mapping[str, Control] = MappingProxyType(
    {
        "confidential_vm": Control(
            "AMD SEV-SNP (or Intel TDX) report bound to the round's nonce and TPM quote, "
            "appraised against the group's policy",
            frozenset({"snp.attested", "tdx.attested"}),
        ),
        "gpu_attestation": Control(
            "every NVIDIA GPU the host lists attested (report bound to the quote, RIMs, "
            "OCSP) against the group's GPU policy",
            frozenset({"nvidia.gpu.attested"}),
        ),
        "measured_boot_log": Control(
            "UEFI event log replayed against the quoted PCRs and appraised",
            frozenset({"tpm.eventlog.replay"}),
        ),
        "ima_runtime": Control(
            "IMA runtime log replayed into PCR10 and checked against a runtime policy",
            frozenset({"tpm.ima.policy"}),
        ),
    }
)


def unknown_controls(names: Iterable[str]) -> list[str]:
    return sorted(set(names) - set(CONTROLS))


def unsatisfied_controls(required: Iterable[str], checks_run: frozenset[str]) -> list[str]:
    """The required controls that ``checks_run`` does not satisfy (unknown ones included)."""
    missing = []
    for name in sorted(set(required)):
        control = CONTROLS.get(name)
        if control is None or not control.any_of_checks & checks_run:
            missing.append(name)
    return missing
