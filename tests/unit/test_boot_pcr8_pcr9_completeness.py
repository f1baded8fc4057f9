"""PCR8/PCR9 (and PCR12) are appraised over every event, deny-by-default.

The OS extends these PCRs at any time and the log only has to replay, PCR by PCR,
so root can disguise the event that measured a bad command line or kernel (garble
a GRUB prefix, change the event type, rename the file: none of it is hashed),
extend the PCR with the approved value and log that. Each attack here rewrites
one real log that way; the "quote" is the rewritten log's own replay, which is
what a host that really extended those digests reports. A proposal from each real
log must still affirm that log.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import pytest

from tests.vectors import testvectors_root, vectors_dir
from verifier.boot_reference_cli import reference_document
from verifier.evidence.tpm.boot_facts import BootFacts, extract_boot_facts
from verifier.evidence.tpm.boot_reference import (
    appraise_boot,
    load_boot_reference,
    reference_from_facts,
)
from verifier.evidence.tpm.event_checks import check_events
from verifier.evidence.tpm.event_types import EventType as Ev
from verifier.evidence.tpm.eventlog import ALGORITHMS, Event, EventLog, parse_event_log
from verifier.evidence.tpm.replay import replay
from verifier.operator_cli import CliError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SWTPM = "swtpm-ecc-sha256-loc3/eventlog.bin"  # GRUB, Secure Boot on (the audit's log)
UBUNTU = "go-tpm-tools/eventlogs/ubuntu-2104-no-secure-boot.bin"  # GRUB, Secure Boot off
FEDORA_SD_BOOT = "tpm2-tools/event-sd-boot-fedora37.bin"  # systemd-boot, PCR12 cmdline
_ALG_IDS = {name: alg for alg, (name, _) in ALGORITHMS.items()}
_BAD_ARGS = " init=/bin/bash"


class Log:
    """A real log as its events' raw bytes, to rewrite and extend."""

    def __init__(self, name: str) -> None:
        raw = vectors_dir("tpm", *name.split("/")).read_bytes()
        self.log = parse_event_log(raw)
        ends = [e.offset for e in self.log.events[1:]] + [len(raw)]
        self.chunks = [raw[e.offset : end] for e, end in zip(self.log.events, ends, strict=True)]

    def find(self, pcr: int, prefix: bytes) -> Event:
        return next(e for e in self.log.events if e.pcr == pcr and e.data.startswith(prefix))

    def build(
        self, replace: dict[int, bytes] | None = None, append: tuple[bytes, ...] = ()
    ) -> bytes:
        chunks = list(self.chunks)
        for index, chunk in (replace or {}).items():
            chunks[index] = chunk
        return b"".join([*chunks, *append])


def _event(pcr: int, kind: int, digests: dict[str, bytes], data: bytes) -> bytes:
    """A crypto-agile TCG_PCR_EVENT2."""
    out = struct.pack("<III", pcr, kind, len(digests))
    for name, digest in digests.items():
        out += struct.pack("<H", _ALG_IDS[name]) + digest
    return out + struct.pack("<I", len(data)) + data


def _measured(banks: Any, data: bytes) -> dict[str, bytes]:
    return {bank: hashlib.new(bank, data).digest() for bank in banks}


def _evidence(raw: bytes, *, without: int | None = None) -> tuple[BootFacts, EventLog]:
    log = parse_event_log(raw)
    verified = [pcr for pcr in replay(log, bank="sha256") if pcr != without]
    return extract_boot_facts(log, "sha256", verified_pcrs=verified), log


def _codes(raw: bytes, reference: dict[str, Any], *, without: int | None = None) -> list[str]:
    facts, log = _evidence(raw, without=without)
    reasons = appraise_boot(facts, check_events(log, "sha256"), load_boot_reference(reference))
    return [r.code for r in reasons]


def _proposed(raw: bytes) -> dict[str, Any]:
    facts, log = _evidence(raw)
    return reference_from_facts(facts, checks=check_events(log, "sha256"))


# --- every real log: a proposal affirms its own log -------------------------------


def _manifest_logs() -> list[str]:
    manifest = testvectors_root() / "tpm" / "manifest.json"
    if not manifest.exists():
        return ["(no test vectors)"]
    return [entry["file"] for entry in json.loads(manifest.read_text())["logs"]]


def _propose(name: str) -> tuple[dict[str, Any], BootFacts, EventLog] | None:
    """What `reference propose --from-eventlog` makes of a log (None: refused)."""
    path = vectors_dir("tpm", *name.split("/"))
    try:
        document, _ = reference_document(path, None)
    except CliError:
        return None
    log = parse_event_log(path.read_bytes())
    bank = document["bank"]
    return document, extract_boot_facts(log, bank, verified_pcrs=replay(log, bank=bank)), log


# The real logs `reference propose` refuses (findings, partial fixtures, logs that do
# not parse), and the one whose proposal cannot be loaded (Secure Boot on with an
# empty dbx, which a reference may not require): pinned, so that a change shows.
REFUSED = frozenset(
    {
        "go-attestation/sb_cert_eventlog",
        "go-attestation/short_no_action_eventlog",
        "go-attestation/windows_gcp_shielded_vm/eventlog.bin",
        "keylime/binary_bios_measurements-bogus",
        "keylime/binary_bios_measurements-empty",
        "tpm2-tools/event-uefiaction.bin",
        "tpm2-tools/event-uefiservices.bin",
        "tpm2-tools/event-uefivar.bin",
        "tpm2-tools/event.bin",
        "tpm2-tools/specid-vendordata.bin",
        "tpm2-tss/specid-vendordata.bin",
    }
)
UNLOADABLE = frozenset({"python3-uefi-eventlog/intel_svr__intel_svr.bin"})


@pytest.mark.parametrize("name", _manifest_logs())
def test_proposal_affirms_its_own_real_log(name: str) -> None:
    proposed = _propose(name)
    assert (proposed is None) == (name in REFUSED)
    if proposed is None:
        return
    document, facts, log = proposed
    empty_dbx = document["secure_boot_required"] and not document["dbx_required"]
    assert empty_dbx == (name in UNLOADABLE)
    if empty_dbx:
        with pytest.raises(ValueError, match="dbx"):
            load_boot_reference(document)
        return
    reasons = appraise_boot(facts, check_events(log, facts.bank), load_boot_reference(document))
    if facts.sha1_only:  # proposals never allow SHA-1-only logs: an operator decides
        assert [r.code for r in reasons] == ["tpm.eventlog.sha1_only"]
    else:
        assert reasons == []
    pcr9_files = {f.digest for f in facts.boot_files}
    proposed9 = {
        *document.get("kernel_digests", []),
        *document.get("initrd_digests", []),
        *document.get("boot_file_digests", []),
    }
    assert proposed9 == pcr9_files  # every PCR9 file is pinned, nothing else


def test_proposal_covers_the_real_pcr8_pcr9_pcr12_producers() -> None:
    """Each kind of PCR8/9/12 producer in the vectors stays proposable and pinned."""
    kinds = {
        UBUNTU: "grub",  # upstream GRUB strings, modules, grub.cfg, kernel, initrd
        "python3-uefi-eventlog/rhcos__rhcos.bin": "grub",  # legacy GRUB, "grub_linuxefi"
        "go-tpm-tools/eventlogs/arch-linux-workstation.bin": "systemd-boot",  # PCR8 quirk
        FEDORA_SD_BOOT: "systemd-boot",  # PCR12 load options, EFI stub initrd tag
        "python3-uefi-eventlog/ideapad__ideapad1.bin": None,  # Windows PCR12 WBCL events
    }
    for name, bootloader in kinds.items():
        proposed = _propose(name)
        assert proposed is not None, name
        _, facts, _ = proposed
        assert facts.bootloader == bootloader and facts.uninterpreted == (), name
    rhcos = _propose("python3-uefi-eventlog/rhcos__rhcos.bin")
    assert rhcos is not None and "kernel_digests" not in rhcos[0]
    assert len(rhcos[0]["boot_file_digests"]) == 2  # "grub_linuxefi Kernel"/"Initrd"
    fedora = _propose(FEDORA_SD_BOOT)
    assert fedora is not None and len(fedora[0]["initrd_digests"]) == 1


# --- PCR8: the command line cannot be hidden --------------------------------------


def _cmdline_case(name: str) -> tuple[Log, Event, bytes, bytes, dict[str, Any]]:
    log = Log(name)
    event = log.find(8, b"kernel_cmdline: ")
    good = event.data[len(b"kernel_cmdline: ") : -1]
    return log, event, good, good + _BAD_ARGS.encode(), _proposed(log.build())


def _ipl(event: Event, measured: bytes, data: bytes, kind: int = Ev.EV_IPL) -> bytes:
    return _event(event.pcr, kind, _measured(event.digests, measured), data)


@pytest.mark.parametrize("name", [SWTPM, UBUNTU])
def test_honest_bad_command_line_is_rejected(name: str) -> None:
    log, event, good, bad, reference = _cmdline_case(name)
    assert _codes(log.build(), reference) == []
    honest = {event.index: _ipl(event, bad, b"kernel_cmdline: " + bad + b"\0")}
    assert _codes(log.build(honest), reference) == ["tpm.boot.kernel_cmdline_not_allowed"]
    # Root may extend PCR8 with the approved line afterwards: that alone is harmless.
    appended = _ipl(event, good, b"kernel_cmdline: " + good + b"\0")
    assert _codes(log.build(append=(appended,)), reference) == []


@pytest.mark.parametrize("name", [SWTPM, UBUNTU])
@pytest.mark.parametrize(
    ("disguise", "expected"),
    [
        # (B) garbled prefix: the digest (of the text only) is unchanged
        (lambda bad: (Ev.EV_IPL, b"kernel_cmdlinX: " + bad + b"\0"), "uninterpreted_event"),
        # (C) the type is not hashed either
        (lambda bad: (Ev.EV_POST_CODE, b"kernel_cmdline: " + bad + b"\0"), "uninterpreted_event"),
        (lambda bad: (Ev.EV_EVENT_TAG, bad), "uninterpreted_event"),
        # The prefix is not hashed: relabelled, the text still says what it is.
        (lambda bad: (Ev.EV_IPL, b"grub_cmd: " + bad + b"\0"), "kernel_cmdline_not_allowed"),
        (lambda bad: (Ev.EV_IPL, b"module_cmdline: " + bad + b"\0"), "kernel_cmdline_not_allowed"),
    ],
    ids=["garbled_prefix", "post_code", "event_tag", "as_grub_cmd", "as_module_cmdline"],
)
def test_disguised_command_line_plus_appended_approved_one_is_rejected(
    name: str, disguise: Any, expected: str
) -> None:
    log, event, good, bad, reference = _cmdline_case(name)
    kind, data = disguise(bad)
    hidden = {event.index: _event(8, kind, _measured(event.digests, bad), data)}
    appended = _ipl(event, good, b"kernel_cmdline: " + good + b"\0")
    raw = log.build(hidden, append=(appended,))
    facts, _ = _evidence(raw)
    assert facts.kernel_cmdlines[-1] == good.decode()  # the approved line is there...
    assert _codes(raw, reference) == [f"tpm.boot.{expected}"]  # ...and does not help


def test_uninterpreted_event_names_index_pcr_and_type() -> None:
    log, event, good, bad, reference = _cmdline_case(SWTPM)
    hidden = {event.index: _ipl(event, bad, b"kernel_cmdline: " + bad + b"\0", Ev.EV_POST_CODE)}
    appended = _ipl(event, good, b"kernel_cmdline: " + good + b"\0")
    facts, parsed = _evidence(log.build(hidden, append=(appended,)))
    [reason] = appraise_boot(facts, check_events(parsed, "sha256"), load_boot_reference(reference))
    assert reason.code == "tpm.boot.uninterpreted_event"
    assert reason.detail.startswith(f"event {event.index} (PCR8 EV_POST_CODE)")


def test_every_command_line_is_appraised() -> None:
    log, event, good, bad, reference = _cmdline_case(UBUNTU)
    lines = (good, bad, good)
    appended = tuple(_ipl(event, line, b"kernel_cmdline: " + line + b"\0") for line in lines)
    raw = log.build(append=appended)
    facts, parsed = _evidence(raw)
    assert facts.kernel_cmdlines == (good.decode(), *(line.decode() for line in lines))
    reasons = appraise_boot(facts, check_events(parsed, "sha256"), load_boot_reference(reference))
    assert [(r.code, r.detail) for r in reasons] == [
        ("tpm.boot.kernel_cmdline_not_allowed", bad.decode())
    ]


def test_retyped_pcr12_load_options_are_not_taken_for_windows_events() -> None:
    """Windows' PCR12 EV_EVENT_TAGs are accepted; a retyped UTF-16 command line is not."""
    log = Log(FEDORA_SD_BOOT)
    reference = _proposed(log.build())
    event = next(e for e in log.log.events if e.pcr == 12 and e.event_type == Ev.EV_IPL)
    retyped = {event.index: _event(12, Ev.EV_EVENT_TAG, dict(event.digests), event.data)}
    assert _codes(log.build(retyped), reference) == ["tpm.boot.uninterpreted_event"]


# --- PCR9: every file digest counts, whatever its name ----------------------------


def _kernel_case(name: str) -> tuple[Log, Event, dict[str, bytes], dict[str, Any]]:
    log = Log(name)
    facts, _ = _evidence(log.build())
    kernel = facts.kernels[0]
    event = next(
        e for e in log.log.events if e.pcr == 9 and e.digests["sha256"].hex() == kernel.digest
    )
    reference = _proposed(log.build())
    assert reference["kernel_digests"] == [kernel.digest]
    return log, event, _measured(event.digests, b"evil kernel"), reference


@pytest.mark.parametrize("name", [SWTPM, UBUNTU])
def test_honest_bad_kernel_is_rejected(name: str) -> None:
    log, event, bad, reference = _kernel_case(name)
    honest = {event.index: _event(9, event.event_type, bad, event.data)}
    assert _codes(log.build(honest), reference) == ["tpm.boot.kernel_not_allowed"]


@pytest.mark.parametrize("name", [SWTPM, UBUNTU])
def test_renamed_kernel_plus_appended_approved_one_is_rejected(name: str) -> None:
    """(D1) the bad kernel's event names a module; an appended event names the kernel."""
    log, event, bad, reference = _kernel_case(name)
    renamed = {event.index: _event(9, Ev.EV_IPL, bad, b"/boot/grub/x86_64-efi/normal.mod\0")}
    appended = _event(9, Ev.EV_IPL, dict(event.digests), event.data)
    raw = log.build(renamed, append=(appended,))
    facts, parsed = _evidence(raw)
    reasons = appraise_boot(facts, check_events(parsed, "sha256"), load_boot_reference(reference))
    assert [r.code for r in reasons] == ["tpm.boot.unexpected_boot_file"]
    assert f"event {event.index}: '/boot/grub/x86_64-efi/normal.mod'" in reasons[0].detail
    assert bad["sha256"].hex() in reasons[0].detail


@pytest.mark.parametrize("name", [SWTPM, UBUNTU])
def test_retyped_kernel_plus_appended_approved_one_is_rejected(name: str) -> None:
    log, event, bad, reference = _kernel_case(name)
    retyped = {event.index: _event(9, Ev.EV_POST_CODE, bad, event.data)}
    appended = _event(9, Ev.EV_IPL, dict(event.digests), event.data)
    raw = log.build(retyped, append=(appended,))
    assert _codes(raw, reference) == ["tpm.boot.uninterpreted_event"]


def test_pcr9_must_be_verified_when_the_reference_reads_it() -> None:
    log, _, _, reference = _kernel_case(UBUNTU)
    codes = _codes(log.build(), reference, without=9)
    assert codes == ["tpm.boot.kernel_missing", "tpm.boot.pcr_unverified"]
    only_files = {k: v for k, v in reference.items() if k != "kernel_digests"}
    assert _codes(log.build(), only_files, without=9) == ["tpm.boot.pcr_unverified"]


def test_without_pcr9_lists_pcr9_is_not_read() -> None:
    """Rule 4: a reference with no PCR9 list does not read PCR9 (Secure Boot covers it)."""
    log, event, bad, reference = _kernel_case(SWTPM)
    pcr9: list[str] = []
    for key in ("kernel_digests", "initrd_digests", "boot_file_digests"):
        pcr9 += reference.pop(key, [])
    retyped = {event.index: _event(9, Ev.EV_POST_CODE, bad, event.data)}
    assert _codes(log.build(retyped), reference) == []
    with_files = {**reference, "boot_file_digests": pcr9}
    assert _codes(log.build(retyped), with_files) == ["tpm.boot.uninterpreted_event"]


def test_unlisted_module_is_rejected_and_names_are_ignored() -> None:
    log = Log(UBUNTU)
    reference = _proposed(log.build())
    module = next(e for e in log.log.events if e.pcr == 9 and e.data.endswith(b"fs.lst\0"))
    other = _measured(module.digests, b"another module list")
    changed = {module.index: _event(9, Ev.EV_IPL, other, module.data)}
    assert _codes(log.build(changed), reference) == ["tpm.boot.unexpected_boot_file"]
    # An approved digest under any name (here the kernel's, logged as a font) passes.
    kernel = reference["kernel_digests"][0]
    kernel_event = next(
        e for e in log.log.events if e.pcr == 9 and e.digests["sha256"].hex() == kernel
    )
    font = _event(9, Ev.EV_IPL, dict(kernel_event.digests), b"/boot/grub/unicode.pf2\0")
    assert _codes(log.build(append=(font,)), reference) == []
