"""atheris harness for the event-data parsers, the event checks and the boot facts.

Run: ``python tests/fuzz/fuzz_boot_facts.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one from the real logs listed in
the shared vectors' ``tpm/manifest.json``: every event's data, prefixed with the
selector of the parser for its type, and every whole log.

The first input byte picks the target. The properties: an event-data parser
returns or raises ParseError; for a whole log that parses, ``check_events``,
``extract_boot_facts`` (and its JSON) and ``appraise_boot`` never raise at all,
since malformed event data must become a finding or an absent fact. ``fuzz_one`` is
importable so that the unit suite runs the same properties without atheris
(tests/unit/test_fuzz_smoke_boot_facts.py).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import efi_events, efi_variables, wbcl
from verifier.evidence.tpm.boot_facts import extract_boot_facts
from verifier.evidence.tpm.boot_reference import appraise_boot, load_boot_reference
from verifier.evidence.tpm.event_checks import check_events
from verifier.evidence.tpm.event_types import EventType as Ev
from verifier.evidence.tpm.eventlog import parse_event_log
from verifier.verdict import Reason

PARSERS: tuple[Callable[[bytes], object], ...] = (
    efi_variables.parse_uefi_variable,
    efi_variables.parse_uefi_variable_prefix,
    efi_variables.parse_signature_lists,
    efi_events.parse_gpt_data,
    efi_events.parse_image_load_path,
    efi_events.parse_firmware_blob,
    efi_events.parse_firmware_blob2,
    efi_events.parse_grub_string,
    efi_events.decode_utf16_text,
    wbcl.parse_sipa_events,
)
WHOLE_LOG = len(PARSERS)
# Which parser a real event's data seeds (selector), by event type.
SEED_SELECTORS: dict[int, int] = {
    Ev.EV_EFI_VARIABLE_DRIVER_CONFIG: 0,
    Ev.EV_EFI_VARIABLE_BOOT: 0,
    Ev.EV_EFI_VARIABLE_BOOT2: 0,
    Ev.EV_EFI_VARIABLE_AUTHORITY: 1,
    Ev.EV_EFI_GPT_EVENT: 3,
    Ev.EV_EFI_BOOT_SERVICES_APPLICATION: 4,
    Ev.EV_EFI_PLATFORM_FIRMWARE_BLOB: 5,
    Ev.EV_EFI_PLATFORM_FIRMWARE_BLOB2: 6,
    Ev.EV_IPL: 7,
    Ev.EV_S_CRTM_VERSION: 8,
    Ev.EV_EVENT_TAG: 9,
}
_REFERENCE = load_boot_reference(
    {
        "kind": "weightgate.boot-reference",
        "version": 1,
        "bank": "sha256",
        "secure_boot_required": True,
        "pk": [],
        "kek": [],
        "db": [],
        "dbx_required": ["00" * 32],
        "boot_applications": {"match": "set", "digests": ["00" * 32]},
        "kernel_cmdlines": [{"regex": ".*"}],
        "firmware_versions": [None],
    }
)


def _whole_log(data: bytes) -> None:
    try:
        log = parse_event_log(data)
    except ParseError:
        return
    for bank in log.banks:
        if bank not in hashlib.algorithms_available:
            continue
        reasons = check_events(log, bank)
        assert all(isinstance(r, Reason) and r.code.startswith("tpm.eventlog.") for r in reasons)
        facts = extract_boot_facts(log, bank, verified_pcrs=range(24))
        assert json.loads(facts.to_json()) == json.loads(json.dumps(facts.to_dict()))
        appraise_boot(facts, reasons, _REFERENCE)


def fuzz_one(data: bytes) -> None:
    """One fuzz input: selector byte, then the bytes for that target."""
    if not data:
        return
    selector = data[0] % (WHOLE_LOG + 1)
    if selector == WHOLE_LOG:
        _whole_log(data[1:])
        return
    if PARSERS[selector] is efi_events.decode_utf16_text:
        # Its lenient sibling must take any bytes without raising.
        assert isinstance(efi_events.decode_crtm_version(data[1:]), str)
    try:
        PARSERS[selector](data[1:])
    except ParseError:
        return


def seed_inputs() -> Iterator[bytes]:
    """Real event data (with its parser's selector) and whole real logs."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    tpm = testvectors_root() / "tpm"
    manifest = json.loads((tpm / "manifest.json").read_text())
    for entry in manifest["logs"]:
        raw = (tpm / entry["file"]).read_bytes()
        yield bytes([WHOLE_LOG]) + raw
        try:
            log = parse_event_log(raw)
        except ParseError:
            continue
        for event in log.events:
            selector = SEED_SELECTORS.get(event.event_type)
            if selector is not None:
                yield bytes([selector]) + event.data
            if event.event_type in (Ev.EV_EFI_VARIABLE_DRIVER_CONFIG, Ev.EV_EFI_VARIABLE_BOOT):
                try:
                    value = efi_variables.parse_uefi_variable(event.data).value
                except ParseError:
                    continue
                yield bytes([2]) + value


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("boot_facts", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
