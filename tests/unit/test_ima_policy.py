"""IMA runtime policy: loading (what is refused) and appraisal (one reason per change).

Real material: the swtpm sets' lists, keylime's ima-sig lists with their two IMA keys
(RSA-2048 key id f3452d23, secp256k1 key id 531f4025), keylime's malformed signature
and its ima-buf keyring entry. Signatures made here with ``cryptography`` cover what
the vectors lack (P-256, an X.509 certificate whose key id comes from its SKI).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import NameOID

from tests.vectors import TPM_SWTPM_SETS, vectors_dir
from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.ima import ImaEntry, parse_binary
from verifier.evidence.tpm.ima_ascii import parse_ascii
from verifier.evidence.tpm.ima_encode import build_entry
from verifier.evidence.tpm.ima_policy import (
    RuntimePolicy,
    RuntimePolicyError,
    appraise_ima,
    appraise_ima_full,
    load_runtime_policy,
)
from verifier.evidence.tpm.ima_signature import key_id, load_verification_key, parse_ima_signature

# --- helpers ------------------------------------------------------------------------


def _policy(**fields: Any) -> RuntimePolicy:
    return load_runtime_policy(json.dumps({"version": 1, **fields}))


def _digests_of(entries: tuple[ImaEntry, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in entries:
        if e.name is not None and e.digest is not None and not e.is_violation:
            out.setdefault(e.name, []).append(f"{e.digest_alg}:{e.digest.hex()}")
    return out


def _swtpm_entries() -> tuple[ImaEntry, ...]:
    base = vectors_dir("tpm", TPM_SWTPM_SETS[0], "ima")
    return parse_binary((base / "binary_runtime_measurements").read_bytes()).entries


def _keylime(name: str) -> bytes:
    return vectors_dir("tpm", "keylime", "ima-sig", name).read_bytes()


def _keylime_keys() -> list[str]:
    base = vectors_dir("tpm", "keylime", "ima-sig")
    return [p.read_text() for p in sorted(base.glob("ima-key-*.pem"))]


def _codes(entries: Any, policy: RuntimePolicy) -> list[str]:
    return [r.code for r in appraise_ima(entries, policy)]


def _pem(key: Any) -> str:
    pem: bytes = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


def _sig_v2(private: Any, digest: bytes, *, algo: int = 4, kid: bytes | None = None) -> bytes:
    if isinstance(private, rsa.RSAPrivateKey):
        sig = private.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    else:
        sig = private.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    kid = key_id(private.public_key()) if kid is None else kid
    return bytes([3, 2, algo]) + kid + len(sig).to_bytes(2, "big") + sig


def _signed_entry(private: Any, path: str = "/usr/bin/signed", **kw: Any) -> ImaEntry:
    digest = hashlib.sha256(path.encode()).digest()
    return build_entry(
        1,
        10,
        b"\x01" * 20,
        "ima-sig",
        digest_alg="sha256",
        digest=digest,
        name=path,
        signature=_sig_v2(private, digest, **kw),
    )


# --- loading ------------------------------------------------------------------------


def test_loads_a_full_policy() -> None:
    policy = _policy(
        digests={"/usr/bin/sh": ["sha256:" + "ab" * 32, "cd" * 20]},
        excludes=["/tmp/.*", "/var/log/[^/]+"],
        keyrings={".ima": ["sha256:" + "11" * 32]},
        buffers={"kexec-cmdline": ["sha384:" + "22" * 48]},
        verification_keys=_keylime_keys(),
    )
    assert policy.digests["/usr/bin/sh"] == {("sha256", b"\xab" * 32), ("sha1", b"\xcd" * 20)}
    assert {k.hex() for k in policy.keys} == {"f3452d23", "531f4025"}
    assert policy.excluded("/tmp/x/y")
    assert not policy.excluded("/tmpfoo/x")
    assert not policy.excluded("/usr/tmp/x")  # whole-path match, not search
    assert policy.excluded("/var/log/syslog")
    assert not policy.excluded("/var/log/a/b")


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ("not json", "not JSON"),
        ("[1]", "JSON object"),
        (json.dumps({"digests": {"/a": ["ab" * 32]}}), "version"),
        (json.dumps({"version": 2, "digests": {"/a": ["ab" * 32]}}), "version"),
        (json.dumps({"version": True, "digests": {"/a": ["ab" * 32]}}), "version"),
        (json.dumps({"version": 1}), "allows nothing"),
        (json.dumps({"version": 1, "digests": {}, "excludes": ["/tmp/.*"]}), "allows nothing"),
        (json.dumps({"version": 1, "digest": {"/a": ["ab" * 32]}}), "unknown keys"),
        (json.dumps({"version": 1, "digests": {"/a": []}}), "non-empty list"),
        (json.dumps({"version": 1, "digests": {"/a": "ab"}}), "non-empty list"),
        (json.dumps({"version": 1, "digests": {"/a": [1]}}), "not a string"),
        (json.dumps({"version": 1, "digests": {"/a": ["xyz"]}}), "not a hex digest"),
        (json.dumps({"version": 1, "digests": {"/a": ["ab" * 31]}}), "bare digest of 31"),
        (json.dumps({"version": 1, "digests": {"/a": ["sha256:" + "ab" * 20]}}), "sha256"),
        (json.dumps({"version": 1, "digests": {"/a": ["nohash:" + "ab" * 20]}}), "nohash"),
        (json.dumps({"version": 1, "digests": {"/a": ["ab" * 32]}, "excludes": [".*"]}), "every"),
        (json.dumps({"version": 1, "digests": {"/a": ["ab" * 32]}, "excludes": ["/.*"]}), "every"),
        (json.dumps({"version": 1, "digests": {"/a": ["ab" * 32]}, "excludes": [""]}), "every"),
        (json.dumps({"version": 1, "digests": {"/a": ["ab" * 32]}, "excludes": ["("]}), "exclude"),
        (json.dumps({"version": 1, "digests": {"/a": ["ab" * 32]}, "excludes": "/tmp"}), "list"),
        (json.dumps({"version": 1, "verification_keys": ["garbage"]}), "verification_keys"),
        (json.dumps({"version": 1, "verification_keys": "pem"}), "verification_keys"),
    ],
)
def test_refuses_malformed_or_permissive(document: str, match: str) -> None:
    with pytest.raises(RuntimePolicyError, match=match):
        load_runtime_policy(document)


def test_refuses_weak_unsupported_and_duplicate_keys() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(RuntimePolicyError, match="1024 bits"):
        _policy(verification_keys=[_pem(weak)])
    edwards = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(RuntimePolicyError, match="unsupported key type"):
        _policy(verification_keys=[_pem(edwards)])
    key = _keylime_keys()[0]
    with pytest.raises(RuntimePolicyError, match="twice"):
        _policy(verification_keys=[key, key])


# --- appraisal: files ---------------------------------------------------------------


def test_swtpm_list_against_its_own_digests() -> None:
    entries = _swtpm_entries()
    policy = _policy(digests=_digests_of(entries))
    # boot_aggregate (entry 0) is check_boot_aggregate's; the ToMToU violation
    # (entry 4) is a finding whatever the policy says.
    reasons = appraise_ima(entries, policy)
    assert [r.code for r in reasons] == ["tpm.ima.violation"]
    assert reasons[0].detail.startswith("entry 4 '/var/log/ima-tomtou.log'")


def test_one_change_one_reason() -> None:
    entries = _swtpm_entries()
    digests = _digests_of(entries)
    target = entries[2]  # /usr/bin/sh
    assert target.name == "/usr/bin/sh"
    changed = {**digests, "/usr/bin/sh": ["sha256:" + "00" * 32]}
    reasons = appraise_ima(entries, _policy(digests=changed))
    assert [r.code for r in reasons] == ["tpm.ima.digest_not_allowed", "tpm.ima.violation"]
    assert "entry 2 '/usr/bin/sh'" in reasons[0].detail
    missing = {k: v for k, v in digests.items() if k != "/usr/bin/sh"}
    assert _codes(entries, _policy(digests=missing)) == [
        "tpm.ima.path_unknown",
        "tpm.ima.violation",
    ]
    excluded = _policy(digests=missing, excludes=["/usr/bin/s[h]", "/var/log/.*"])
    # Excluding the violation's (unauthenticated) path does not hide it.
    assert _codes(entries, excluded) == ["tpm.ima.violation"]
    # A digest allowed for another path does not follow the file around.
    moved = {**missing, "/usr/bin/other": digests["/usr/bin/sh"]}
    assert _codes(entries, _policy(digests=moved)) == ["tpm.ima.path_unknown", "tpm.ima.violation"]


def test_algorithm_is_part_of_the_digest() -> None:
    entries = _swtpm_entries()
    sh = entries[2]
    assert sh.digest is not None
    policy = _policy(digests={"/usr/bin/sh": ["sm3:" + sh.digest.hex()]})
    assert _codes([sh], policy) == ["tpm.ima.digest_not_allowed"]
    assert _codes([sh], _policy(digests={"/usr/bin/sh": [sh.digest.hex()]})) == []


def test_boot_aggregate_is_skipped_only_as_entry_zero() -> None:
    first = _swtpm_entries()[0]
    policy = _policy(digests={"/x": ["ab" * 32]})
    assert _codes([first], policy) == []
    assert _codes([replace(first, index=7)], policy) == ["tpm.ima.path_unknown"]


def test_unknown_template_cannot_be_appraised() -> None:
    raw = ImaEntry(3, 10, b"\x01" * 20, "my-tmpl", b"data", None, None, None)
    assert _codes([raw], _policy(digests={"/x": ["ab" * 32]})) == ["tpm.ima.template_unknown"]


# --- appraisal: ima-sig -------------------------------------------------------------


def test_keylime_signatures_verify_and_fail_after_one_byte() -> None:
    entries = parse_ascii(_keylime("ima-sig-signed.txt")).entries
    keys = _keylime_keys()
    policy = _policy(verification_keys=keys)
    assert _codes(entries, policy) == []  # RSA-2048 (/usr/bin/dd) and secp256k1 (zmore)
    for entry in entries:
        assert entry.signature is not None and entry.digest is not None
        sig = bytearray(entry.signature)
        sig[-5] ^= 0x01
        assert _codes([replace(entry, signature=bytes(sig))], policy) == [
            "tpm.ima.signature_invalid"
        ]
        digest = bytearray(entry.digest)
        digest[0] ^= 0x01
        assert _codes([replace(entry, digest=bytes(digest))], policy) == [
            "tpm.ima.signature_invalid"
        ]
    # Each key verifies only its own file: with one key the other is unknown.
    rsa_only = _policy(verification_keys=[keys[0]])
    assert _codes(entries, rsa_only) == ["tpm.ima.signature_key_unknown"]


def test_signatures_are_ignored_without_keys_and_digests_still_decide() -> None:
    entries = parse_ascii(_keylime("ima-sig-signed.txt")).entries
    digests = _digests_of(entries)
    assert _codes(entries, _policy(digests={"/x": ["ab" * 32]})) == ["tpm.ima.path_unknown"] * 2
    assert _codes(entries, _policy(digests=digests)) == []
    # An allowed digest is accepted even if its signature is broken.
    entry = entries[0]
    assert entry.signature is not None
    broken = replace(entry, signature=entry.signature[:-1] + b"\x00")
    keys = _keylime_keys()
    assert _codes([broken], _policy(digests=digests, verification_keys=keys)) == []


def test_keylime_bad_signature_size_is_malformed() -> None:
    # The vector ends with an empty line (not a kernel list); its one entry matters.
    raw = _keylime("ima-sig-bad-sigsize.txt")
    with pytest.raises(ParseError):
        parse_ascii(raw)
    entries = parse_ascii(raw.rstrip(b"\n") + b"\n").entries
    assert entries[0].signature is not None
    with pytest.raises(ParseError) as info:
        parse_ima_signature(entries[0].signature)
    assert info.value.code == "bad_length"
    policy = _policy(verification_keys=_keylime_keys())
    assert _codes(entries, policy) == ["tpm.ima.signature_malformed"]


def test_unsigned_ima_sig_entries_need_digests() -> None:
    entries = parse_ascii(_keylime("ima-sig-measurements.txt")).entries
    assert all(e.signature == b"" for e in entries)
    policy = _policy(verification_keys=_keylime_keys())
    assert _codes(entries, policy) == ["tpm.ima.path_unknown"] * 2


@pytest.mark.parametrize("kind", ["rsa", "p256"])
def test_generated_signatures(kind: str) -> None:
    if kind == "rsa":
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    policy = _policy(verification_keys=[_pem(private.public_key())])
    assert _codes([_signed_entry(private)], policy) == []
    cases = {
        "tpm.ima.signature_key_unknown": _signed_entry(private, kid=b"\0\0\0\0"),
        "tpm.ima.signature_unsupported": _signed_entry(private, algo=2),  # SHA-1
        "tpm.ima.signature_algorithm_mismatch": _signed_entry(private, algo=5),  # SHA-384
    }
    for code, entry in cases.items():
        assert _codes([entry], policy) == [code]
    good = _signed_entry(private)
    assert good.signature is not None
    v3 = good.signature[:1] + b"\x03" + good.signature[2:]
    assert _codes([replace(good, signature=v3)], policy) == ["tpm.ima.signature_unsupported"]
    truncated = good.signature[:-1]
    assert _codes([replace(good, signature=truncated)], policy) == ["tpm.ima.signature_malformed"]


def _certificate(private: Any, ski: bytes | None) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ima signing")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if ski is not None:
        builder = builder.add_extension(x509.SubjectKeyIdentifier(ski), critical=False)
    cert = builder.sign(private, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_certificate_key_id_comes_from_its_ski() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    custom = b"\x99" * 16 + b"\xca\xfe\xba\xbe"
    cert_pem = _certificate(private, custom)
    assert load_verification_key(cert_pem.encode()).key_id == b"\xca\xfe\xba\xbe"
    policy = _policy(verification_keys=[cert_pem])
    assert _codes([_signed_entry(private, kid=b"\xca\xfe\xba\xbe")], policy) == []
    assert _codes([_signed_entry(private)], policy) == ["tpm.ima.signature_key_unknown"]
    # Without the extension the key id is computed as evmctl does.
    plain = load_verification_key(_certificate(private, None).encode())
    assert plain.key_id == key_id(private.public_key())


# --- appraisal: ima-buf -------------------------------------------------------------


def test_keyring_buffer() -> None:
    (entry,) = parse_ascii(_keylime("ima-buf-keyring.txt")).entries
    assert entry.name == ".ima" and entry.buffer is not None and entry.digest is not None
    allowed = f"sha256:{entry.digest.hex()}"
    assert hashlib.sha256(entry.buffer).digest() == entry.digest
    assert _codes([entry], _policy(keyrings={".ima": [allowed]})) == []
    assert _codes([entry], _policy(keyrings={".ima": ["sha256:" + "00" * 32]})) == [
        "tpm.ima.digest_not_allowed"
    ]
    assert _codes([entry], _policy(keyrings={".evm": [allowed]})) == ["tpm.ima.buffer_unknown"]
    # Keyring entries are looked up in keyrings, never in buffers.
    assert _codes([entry], _policy(buffers={".ima": [allowed]})) == ["tpm.ima.buffer_unknown"]
    tampered = replace(entry, buffer=entry.buffer[:-1] + b"\x00")
    assert _codes([tampered], _policy(keyrings={".ima": [allowed]})) == [
        "tpm.ima.buffer_digest_mismatch"
    ]


def test_other_buffers() -> None:
    cmdline = b"root=/dev/sda1 ro ima_policy=tcb"
    digest = hashlib.sha256(cmdline).digest()
    entry = build_entry(
        5,
        10,
        b"\x01" * 20,
        "ima-buf",
        digest_alg="sha256",
        digest=digest,
        name="kexec-cmdline",
        buffer=cmdline,
    )
    assert _codes([entry], _policy(buffers={"kexec-cmdline": [digest.hex()]})) == []
    assert _codes([entry], _policy(keyrings={".ima": [digest.hex()]})) == ["tpm.ima.buffer_unknown"]


# --- violations: deny (the default) or tolerate --------------------------------------


@pytest.mark.parametrize("value", ["allow", "Tolerate", "", True, 1, None, ["tolerate"]])
def test_refuses_unknown_violation_modes(value: object) -> None:
    document = json.dumps({"version": 1, "digests": {"/a": ["ab" * 32]}, "violations": value})
    with pytest.raises(RuntimePolicyError, match=r'violations .* is not "deny" or "tolerate"'):
        load_runtime_policy(document)


def test_violation_mode_defaults_to_deny() -> None:
    assert _policy(digests={"/a": ["ab" * 32]}).violations == "deny"
    assert _policy(digests={"/a": ["ab" * 32]}, violations="deny").violations == "deny"
    assert _policy(digests={"/a": ["ab" * 32]}, violations="tolerate").violations == "tolerate"
    # Tolerating violations allows no file: the policy must still allow something.
    with pytest.raises(RuntimePolicyError, match="allows nothing"):
        _policy(violations="tolerate")


def test_tolerated_violation_is_counted_not_a_finding() -> None:
    entries = _swtpm_entries()
    assert [e.index for e in entries if e.is_violation] == [4]
    digests = _digests_of(entries)
    denied = appraise_ima_full(entries, _policy(digests=digests, violations="deny"))
    assert [r.code for r in denied.reasons] == ["tpm.ima.violation"]
    assert denied.violations_tolerated == 0
    tolerated = appraise_ima_full(entries, _policy(digests=digests, violations="tolerate"))
    assert (tolerated.reasons, tolerated.violations_tolerated) == ((), 1)
    # Every other finding stays one: tolerating violations allows no file.
    changed = {**digests, "/usr/bin/sh": ["sha256:" + "00" * 32]}
    other = appraise_ima_full(entries, _policy(digests=changed, violations="tolerate"))
    assert [r.code for r in other.reasons] == ["tpm.ima.digest_not_allowed"]
    assert other.violations_tolerated == 1
    # A violation's name is never appraised, so it is tolerated whatever it shows.
    renamed = [replace(e, name="/usr/bin/not-allowed") if e.is_violation else e for e in entries]
    assert appraise_ima_full(renamed, _policy(digests=digests, violations="tolerate")) == (
        tolerated
    )
