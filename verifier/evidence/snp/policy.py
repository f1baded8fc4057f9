"""Reference values for SEV-SNP guests: what an authenticated report must show.

JSON format (unknown keys are refused, so a typo cannot silently drop a rule)::

    {
      "version": 1,
      "allowed_measurements": ["<96 hex>", ...],     # required, non-empty
      "min_tcb": {"Milan": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
                  "Turin": {"fmc": 0, "bootloader": 0, ...}},
                                                   # required; product lines not
                                                   # listed are refused; every
                                                   # component of a line is required
      "allowed_signing_keys": ["VCEK"],            # optional, default ["VCEK"]; "VLEK"
      "allowed_csp_ids": ["CN=cc-us-east-2.amazonaws.com"],
                                                   # required, non-empty, when "VLEK"
                                                   # is allowed: the VLEK's cspId
                                                   # extension, compared exactly
      "allow_masked_chip_id": false,               # optional, default false: a report
                                                   # with MASK_CHIP_ID set is refused
      "allow_debug": false,                        # optional, default false
      "allow_smt": false,                          # optional, default false
      "allow_migration_agent": false,              # optional, default false
      "require_single_socket": false,              # optional, default false
      "allow_provisional_firmware": false,         # optional: CURRENT_TCB != COMMITTED_TCB
      "allow_cxl": false,                          # optional, default false: a guest
                                                   # policy with CXL_ALLOW (bit 21) set
                                                   # is refused
      "require_ciphertext_hiding": false,          # optional, default false: true
                                                   # requires PLATFORM_INFO
                                                   # CIPHERTEXT_HIDING_EN (bit 4)
      "require_alias_check": false,                # optional, default false: true
                                                   # requires PLATFORM_INFO
                                                   # ALIAS_CHECK_COMPLETE (bit 5), the
                                                   # BadRAM (CVE-2024-21944) mitigation
      "min_firmware": "1.55",                      # optional: "major.minor" or
                                                   # "major.minor.build" (each 0-255);
                                                   # the CURRENT and COMMITTED firmware
                                                   # versions must both be at least it
      "max_vmpl": 0,                               # optional, default 0
      "min_guest_svn": 0,                          # optional, default 0
      "min_report_version": 2,                     # optional, default 2
      "host_data": "<64 hex>",                     # optional: HOST_DATA must equal it
      "allowed_id_key_digests": ["<96 hex>"],      # optional: an ID block signed by one
      "allowed_author_key_digests": ["<96 hex>"]   # optional: an author key among these
    }

Deny by default (STYLE.md, "Verifying evidence" 5): the dataclass defaults allow
no measurement and no product line, and forbid debug, SMT, a migration agent,
VMPL > 0, provisional firmware, masked CHIP_IDs, CXL memory and VLEKs; the loader refuses
an empty measurement list and an empty ``min_tcb``. A VLEK is per cloud provider,
not per chip: allowing VLEKs without naming the providers whose VLEKs count would
accept any provider's, so ``allowed_csp_ids`` is required with "VLEK".

Every invariant that does not need the JSON is checked by
``SnpPolicy.__post_init__`` (PolicyError), so a policy built in code is held to
the same rules as a loaded one (a Turin ``min_tcb`` without ``fmc``, a VLEK
without providers, an SPL out of range ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from verifier.evidence.policy_json import optional_bool, policy_document
from verifier.evidence.snp.certs import KeyKind
from verifier.evidence.snp.tcb import ProductLine

__all__ = ["PolicyError", "SnpPolicy", "load_policy"]

POLICY_FORMAT_VERSION = 1
MAX_POLICY_BYTES = 1 << 20  # a policy is a few KiB; bound what a bad file costs
MEASUREMENT_SIZE = 48
HOST_DATA_SIZE = 32
KEY_DIGEST_SIZE = 48

# The TCB components each product line has (tcb.TcbVersion.components()).
TCB_COMPONENTS: Mapping[ProductLine, frozenset[str]] = {
    ProductLine.MILAN: frozenset({"bootloader", "tee", "snp", "microcode"}),
    ProductLine.GENOA: frozenset({"bootloader", "tee", "snp", "microcode"}),
    ProductLine.TURIN: frozenset({"fmc", "bootloader", "tee", "snp", "microcode"}),
}


class PolicyError(ValueError):
    """A policy file is malformed or too permissive to load."""


@dataclass(frozen=True)
class SnpPolicy:
    """What an SNP guest must show to affirm. Defaults deny everything."""

    allowed_measurements: frozenset[bytes] = frozenset()
    min_tcb: Mapping[ProductLine, Mapping[str, int]] = field(default_factory=dict)
    allowed_signing_keys: frozenset[KeyKind] = frozenset({KeyKind.VCEK})
    allow_debug: bool = False
    allow_smt: bool = False
    allow_migration_agent: bool = False
    require_single_socket: bool = False
    allow_provisional_firmware: bool = False
    max_vmpl: int = 0
    min_guest_svn: int = 0
    min_report_version: int = 2
    host_data: bytes | None = None
    allowed_id_key_digests: frozenset[bytes] | None = None
    allowed_author_key_digests: frozenset[bytes] | None = None
    allowed_csp_ids: frozenset[str] = frozenset()
    allow_masked_chip_id: bool = False
    allow_cxl: bool = False
    require_ciphertext_hiding: bool = False
    require_alias_check: bool = False
    # (major, minor) or (major, minor, build); None: not checked
    min_firmware: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _validate(self)


def _check_digests(values: frozenset[bytes] | None, size: int, what: str) -> None:
    if values is None:
        return
    if not isinstance(values, frozenset) or not values:
        raise PolicyError(f"{what} must be a non-empty set (None to not check)")
    if not all(isinstance(v, bytes) and len(v) == size for v in values):
        raise PolicyError(f"{what}: every value must be {size} bytes")


def _validate(policy: SnpPolicy) -> None:
    """The invariants of a policy however it was built (PolicyError)."""
    measurements = policy.allowed_measurements
    if not isinstance(measurements, frozenset) or not all(
        isinstance(m, bytes) and len(m) == MEASUREMENT_SIZE for m in measurements
    ):
        raise PolicyError(f"allowed_measurements: every value must be {MEASUREMENT_SIZE} bytes")
    for product, spls in policy.min_tcb.items():
        if not isinstance(product, ProductLine):
            raise PolicyError(f"min_tcb: {product!r} is not a ProductLine")
        if set(spls) != TCB_COMPONENTS[product]:
            needed = sorted(TCB_COMPONENTS[product])
            raise PolicyError(f"min_tcb[{product.value}] must give exactly {needed}")
        for component, spl in spls.items():
            if not isinstance(spl, int) or isinstance(spl, bool) or not 0 <= spl <= 255:
                raise PolicyError(f"min_tcb[{product.value}][{component}] must be an SPL 0-255")
    keys = policy.allowed_signing_keys
    if not keys or not all(isinstance(k, KeyKind) for k in keys):
        raise PolicyError("allowed_signing_keys must be a non-empty set of KeyKind")
    csp_ids = policy.allowed_csp_ids
    if not isinstance(csp_ids, frozenset) or not all(isinstance(c, str) and c for c in csp_ids):
        raise PolicyError("allowed_csp_ids must be a set of non-empty strings")
    if KeyKind.VLEK in keys and not csp_ids:
        raise PolicyError(
            'allowed_signing_keys has "VLEK": allowed_csp_ids must name the cloud providers '
            "whose VLEKs are accepted"
        )
    for name, value, maximum in (
        ("max_vmpl", policy.max_vmpl, 3),
        ("min_guest_svn", policy.min_guest_svn, 0xFFFFFFFF),
        ("min_report_version", policy.min_report_version, 0xFFFFFFFF),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
            raise PolicyError(f"{name} must be an integer 0-{maximum}")
    for name in (
        "allow_debug",
        "allow_smt",
        "allow_migration_agent",
        "require_single_socket",
        "allow_provisional_firmware",
        "allow_masked_chip_id",
        "allow_cxl",
        "require_ciphertext_hiding",
        "require_alias_check",
    ):
        if not isinstance(getattr(policy, name), bool):
            raise PolicyError(f"{name} must be true or false")
    firmware = policy.min_firmware
    if firmware is not None and (
        not isinstance(firmware, tuple)
        or len(firmware) not in (2, 3)
        or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in firmware
        )
    ):
        raise PolicyError(
            "min_firmware must be (major, minor) or (major, minor, build), each 0-255"
        )
    if policy.host_data is not None and (
        not isinstance(policy.host_data, bytes) or len(policy.host_data) != HOST_DATA_SIZE
    ):
        raise PolicyError(f"host_data must be {HOST_DATA_SIZE} bytes")
    _check_digests(policy.allowed_id_key_digests, KEY_DIGEST_SIZE, "allowed_id_key_digests")
    _check_digests(policy.allowed_author_key_digests, KEY_DIGEST_SIZE, "allowed_author_key_digests")


_KEYS = frozenset(
    {
        "version",
        "allowed_measurements",
        "min_tcb",
        "allowed_signing_keys",
        "allow_debug",
        "allow_smt",
        "allow_migration_agent",
        "require_single_socket",
        "allow_provisional_firmware",
        "max_vmpl",
        "min_guest_svn",
        "min_report_version",
        "host_data",
        "allowed_id_key_digests",
        "allowed_author_key_digests",
        "allowed_csp_ids",
        "allow_masked_chip_id",
        "allow_cxl",
        "require_ciphertext_hiding",
        "require_alias_check",
        "min_firmware",
    }
)


def _hex(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, str):
        raise PolicyError(f"{what} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise PolicyError(f"{what} {value!r} is not hex") from None
    if len(raw) != size:
        raise PolicyError(f"{what} must be {size} bytes, not {len(raw)}")
    return raw


def _hex_set(doc: dict[str, Any], key: str, size: int) -> frozenset[bytes] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise PolicyError(f"{key} must be a non-empty list (leave it out to not check)")
    return frozenset(_hex(item, size, key) for item in value)


def _bool(doc: dict[str, Any], key: str) -> bool:
    return optional_bool(doc, key, PolicyError)


def _int(doc: dict[str, Any], key: str, default: int, maximum: int) -> int:
    value = doc.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise PolicyError(f"{key} must be an integer 0-{maximum}")
    return value


def _firmware(value: object) -> tuple[int, ...] | None:
    """A firmware version string, "major.minor" or "major.minor.build" (decimal,
    each 0-255), as a tuple; None (key absent or null) when not checked."""
    if value is None:
        return None
    message = 'min_firmware must be "major.minor" or "major.minor.build", each 0-255'
    if not isinstance(value, str):
        raise PolicyError(message)
    parts = value.split(".")
    if len(parts) not in (2, 3) or not all(
        p.isascii() and p.isdigit() and len(p) <= 3 for p in parts
    ):
        raise PolicyError(message)
    numbers = tuple(int(p) for p in parts)
    if not all(n <= 255 for n in numbers):
        raise PolicyError(message)
    return numbers


def _min_tcb(value: object) -> dict[ProductLine, dict[str, int]]:
    if not isinstance(value, dict) or not value:
        raise PolicyError("min_tcb must map at least one product line to its minimum SPLs")
    lines = {p.value: p for p in ProductLine}
    result: dict[ProductLine, dict[str, int]] = {}
    for name, spls in value.items():
        if name not in lines:
            raise PolicyError(f"min_tcb: unknown product line {name!r} (one of {sorted(lines)})")
        product = lines[name]
        if not isinstance(spls, dict) or set(spls) != TCB_COMPONENTS[product]:
            needed = sorted(TCB_COMPONENTS[product])
            raise PolicyError(f"min_tcb[{name}] must give exactly {needed}")
        for component, spl in spls.items():
            if not isinstance(spl, int) or isinstance(spl, bool) or not 0 <= spl <= 255:
                raise PolicyError(f"min_tcb[{name}][{component}] must be an SPL 0-255")
        result[product] = dict(spls)
    return result


def load_policy(data: bytes | str) -> SnpPolicy:
    """Parse and validate a policy JSON document (format in the module docstring)."""
    doc = policy_document(data, _KEYS, POLICY_FORMAT_VERSION, MAX_POLICY_BYTES, PolicyError)
    measurements = _hex_set(doc, "allowed_measurements", MEASUREMENT_SIZE)
    if not measurements:
        raise PolicyError("allowed_measurements must list at least one launch measurement")
    keys = doc.get("allowed_signing_keys", ["VCEK"])
    if (
        not isinstance(keys, list)
        or not keys
        or not all(isinstance(k, str) and k in {"VCEK", "VLEK"} for k in keys)
    ):
        raise PolicyError('allowed_signing_keys must be a non-empty list of "VCEK" / "VLEK"')
    csp_ids = doc.get("allowed_csp_ids", [])
    if not isinstance(csp_ids, list) or not all(isinstance(c, str) and c for c in csp_ids):
        raise PolicyError("allowed_csp_ids must be a list of cloud provider ids (cspId)")
    if "VLEK" in keys and not csp_ids:
        raise PolicyError(
            'allowed_signing_keys has "VLEK": allowed_csp_ids must list the cloud providers '
            "(VLEK cspId) whose VLEKs are accepted"
        )
    host_data = doc.get("host_data")
    return SnpPolicy(
        allowed_measurements=measurements,
        min_tcb=_min_tcb(doc.get("min_tcb")),
        allowed_signing_keys=frozenset(KeyKind(k) for k in keys),
        allow_debug=_bool(doc, "allow_debug"),
        allow_smt=_bool(doc, "allow_smt"),
        allow_migration_agent=_bool(doc, "allow_migration_agent"),
        require_single_socket=_bool(doc, "require_single_socket"),
        allow_provisional_firmware=_bool(doc, "allow_provisional_firmware"),
        max_vmpl=_int(doc, "max_vmpl", 0, 3),
        min_guest_svn=_int(doc, "min_guest_svn", 0, 0xFFFFFFFF),
        min_report_version=_int(doc, "min_report_version", 2, 0xFFFFFFFF),
        host_data=None if host_data is None else _hex(host_data, HOST_DATA_SIZE, "host_data"),
        allowed_id_key_digests=_hex_set(doc, "allowed_id_key_digests", KEY_DIGEST_SIZE),
        allowed_author_key_digests=_hex_set(doc, "allowed_author_key_digests", KEY_DIGEST_SIZE),
        allowed_csp_ids=frozenset(csp_ids),
        allow_masked_chip_id=_bool(doc, "allow_masked_chip_id"),
        allow_cxl=_bool(doc, "allow_cxl"),
        require_ciphertext_hiding=_bool(doc, "require_ciphertext_hiding"),
        require_alias_check=_bool(doc, "require_alias_check"),
        min_firmware=_firmware(doc.get("min_firmware")),
    )
