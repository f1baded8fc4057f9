"""A real log replayed into a fresh swtpm, then quoted: genuine quotes over any PCRs.

The shared vectors' quotes cover the PCRs their makers chose; a fact-based boot
reference needs PCRs 8 and 12 quoted as well. Replaying a vector's log into a
swtpm that starts at locality 0 (no H-CRTM) reproduces its PCRs exactly, so the
quote is the one its host would have given for the wider selection.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tpm2_pytss import ESAPI, ESYS_TR, TPM2_ALG, TPML_DIGEST_VALUES, TPMT_HA

from agent.collectors.tpm import Tpm
from verifier.demo.swtpm import SwtpmProcess
from verifier.evidence.tpm.authenticate import AuthenticatedQuote, authenticate_quote
from verifier.evidence.tpm.eventlog import EV_NO_ACTION, PCR_NOT_EXTENDED, parse_event_log
from verifier.evidence.tpm.parse import parse_tpm2b_public

AK_HANDLE = 0x81010005
_ALGS = {"sha1": TPM2_ALG.SHA1, "sha256": TPM2_ALG.SHA256, "sha384": TPM2_ALG.SHA384}


@dataclass(frozen=True)
class LiveQuote:
    attest: bytes
    signature: bytes
    ak: bytes  # TPM2B_PUBLIC
    nonce: bytes
    pcrs: dict[str, dict[int, bytes]]

    def authenticated(self) -> AuthenticatedQuote:
        return authenticate_quote(
            attest=self.attest,
            signature=self.signature,
            ak=parse_tpm2b_public(self.ak),
            expected_qualifying_data=self.nonce,
            required_pcrs={bank: tuple(values) for bank, values in self.pcrs.items()},
            reported_pcrs=self.pcrs,
            previous_clock=None,
        )

    def files(self, directory: Path) -> list[str]:
        """Written as tpm2-tools files: the `evidence verify tpm` arguments for them."""
        (directory / "ak.tpm2b_public").write_bytes(self.ak)
        (directory / "quote.attest").write_bytes(self.attest)
        (directory / "quote.sig").write_bytes(self.signature)
        values = {
            bank: {str(i): v.hex() for i, v in sorted(pcrs.items())}
            for bank, pcrs in self.pcrs.items()
        }
        (directory / "pcrs.json").write_text(json.dumps({"pcrs": values}))
        return [
            "--ak", str(directory / "ak.tpm2b_public"),
            "--message", str(directory / "quote.attest"),
            "--signature", str(directory / "quote.sig"),
            "--nonce", self.nonce.hex(),
            "--pcrs", str(directory / "pcrs.json"),
        ]  # fmt: skip


def live_quote(
    start: Callable[..., SwtpmProcess],
    raw_log: bytes,
    *,
    banks: Sequence[str],
    selection: Mapping[str, Sequence[int]],
) -> LiveQuote:
    """Replay ``raw_log`` (each event's digests in ``banks``) into a swtpm started by
    ``start`` (a swtpm_factory) and quote ``selection`` with a fresh AK."""
    log = parse_event_log(raw_log)
    process = start(with_ek_certificate=False, pcr_banks=tuple(banks))
    ectx = ESAPI(process.tcti)
    try:
        for event in log.events:
            if event.event_type == EV_NO_ACTION or event.pcr == PCR_NOT_EXTENDED:
                continue
            values = []
            for bank in banks:
                value = TPMT_HA(hashAlg=_ALGS[bank])
                setattr(value.digest, bank, event.digests[bank])
                values.append(value)
            ectx.pcr_extend(ESYS_TR.parse(f"PCR{event.pcr}"), TPML_DIGEST_VALUES(values))
    finally:
        ectx.close()
    device = Tpm(process.tcti)
    ak = device.ensure_ak(AK_HANDLE)
    nonce = secrets.token_bytes(32)
    quote = device.quote(ak_handle=AK_HANDLE, qualifying_data=nonce, selection=selection)
    pcrs = {bank: dict(values) for bank, values in quote.pcrs.items()}
    return LiveQuote(quote.attest, quote.signature, ak, nonce, pcrs)
