"""TDX collateral evaluation: a minimum tcbEvaluationDataNumber, and TCB levels in Intel's order.

Real Intel collateral (``../shared/testvectors/tdx``, PROVENANCE.md) where the
signature does not matter or the real set verifies (2023, at ``AT_2023``);
devsim.tdx guests (TEST root, pinned explicitly) where the collateral must be
validly signed yet say something Intel's does not: other numbers, levels oldest
first. Every test names the reason code it expects.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from devsim.tdx import TdxGuest, create_tdx_guest
from devsim.tdx.collateral import CollateralShape
from tests.tdx_vectors import AT_2023, AT_2026, COLLATERAL_2023, intel_root, tdx_file
from verifier.evidence.errors import ParseError
from verifier.evidence.report import EvidenceReport
from verifier.evidence.tdx.authenticate import authenticate_quote
from verifier.evidence.tdx.collateral import parse_qe_identity, parse_tcb_info
from verifier.evidence.tdx.collateral_files import read_collateral_dir
from verifier.evidence.tdx.level_order import OUT_OF_ORDER
from verifier.evidence.tdx.offline import TdxCollateral, TdxEvidence, verify_tdx_offline
from verifier.evidence.tdx.policy import TdxPolicy, load_policy
from verifier.evidence.tdx.quote import parse_quote, strip_zero_padding
from verifier.evidence.tdx.tcb import evaluate_tcb
from verifier.evidence.tdx.tcb_policy import TcbPolicy, judge_evaluation_number
from verifier.verdict import Tier
from weightgate.cvm_binding import tdx_report_data

TOO_LOW = "tdx.collateral.tcb_evaluation_number_too_low"
OUT_OF_ORDER_CODE = "tdx.collateral.tcb_levels_out_of_order"
DEBUG_QUOTE = "trustee_v4_quote_debug_td.dat"  # FMSPC 50806f000000, rated by the 2023 set
NOW = datetime.now(UTC)
REPORT_DATA = tdx_report_data(b"n" * 32, b"\xffTCG" + bytes(60))

# tcbEvaluationDataNumber of each real document (PROVENANCE.md).
REAL_NUMBERS = {
    "gotdx_tcbinfo_fmspc_50806f000000.json": 15,
    "gotdx_tcbinfo_fmspc_90c06f000000.json": 18,
    "trustee_tcbinfo_fmspc_00a06d080000.json": 17,
    "gotdx_td_qe_identity_2023.json": 15,
    "trustee_td_qe_identity_2025.json": 17,
}


def _policy(mrtd: bytes, **keys: object) -> TdxPolicy:
    doc = {"version": 1, "mrtd": [mrtd.hex()], "allow_debug": True, **keys}
    return load_policy(json.dumps(doc))


def _real_2023(**policy_keys: object) -> EvidenceReport:
    """The debug TD quote with the real 2023 collateral at AT_2023 (affirming as is)."""
    quote = tdx_file(DEBUG_QUOTE)
    collateral = TdxCollateral(**{k.split(".")[0]: tdx_file(v) for k, v in COLLATERAL_2023.items()})
    mrtd = parse_quote(quote).body.mr_td
    return verify_tdx_offline(
        TdxEvidence(quote, intel_root(), AT_2023, collateral, _policy(mrtd, **policy_keys))
    )


def _status(report: EvidenceReport, name: str) -> str:
    return next(c.status for c in report.checks if c.name == name)


# --- the minimum tcbEvaluationDataNumber, real collateral ---------------------------------


@pytest.mark.parametrize(("name", "number"), sorted(REAL_NUMBERS.items()))
def test_real_evaluation_numbers(name: str, number: int) -> None:
    parser = parse_qe_identity if "qe_identity" in name else parse_tcb_info
    assert parser(tdx_file(name)).evaluation_number == number


def test_real_2023_collateral_without_a_minimum_affirms_and_shows_the_numbers() -> None:
    report = _real_2023()
    assert report.verdict.tier is Tier.AFFIRMING, report.verdict.reasons
    assert report.claims["collateral"] == {
        "tcb_info": {
            "tcb_evaluation_data_number": 15,
            "issue_date": "2023-06-18T08:42:58+00:00",
            "next_update": "2023-07-18T08:42:58+00:00",
        },
        "qe_identity": {
            "tcb_evaluation_data_number": 15,
            "issue_date": "2023-06-08T07:24:59+00:00",
            "next_update": "2023-07-08T07:24:59+00:00",
        },
        "min_tcb_evaluation_data_number": None,
    }


def test_real_2023_collateral_at_the_minimum_affirms() -> None:
    report = _real_2023(min_tcb_evaluation_data_number=15)
    assert report.verdict.tier is Tier.AFFIRMING, report.verdict.reasons
    assert report.claims["collateral"]["min_tcb_evaluation_data_number"] == 15


def test_real_2023_collateral_below_the_minimum_names_both_documents() -> None:
    report = _real_2023(min_tcb_evaluation_data_number=16)
    assert report.verdict.tier is Tier.CONTRAINDICATED
    assert report.verdict.reason_codes() == (TOO_LOW, TOO_LOW)
    tcb_info, qe_identity = (r.detail for r in report.verdict.reasons)
    assert tcb_info.startswith("TCB Info tcbEvaluationDataNumber 15 ")
    assert qe_identity.startswith("QE Identity tcbEvaluationDataNumber 15 ")
    assert "minimum 16" in tcb_info and "minimum 16" in qe_identity
    assert _status(report, "tdx.collateral.tcb_info") == "failed"
    assert _status(report, "tdx.collateral.qe_identity") == "failed"
    # The platform is still rated (and the rating shown): the finding is the collateral's age.
    assert _status(report, "tdx.tcb.status") == "passed"
    assert report.claims["collateral"]["min_tcb_evaluation_data_number"] == 16


def test_judge_real_2026_tcb_info_and_2025_qe_identity_separately() -> None:
    # A minimum of 18: the 2026 TCB Info (18) meets it, the 2025 QE Identity (17) does not.
    policy = TcbPolicy(min_evaluation_number=18)
    info = parse_tcb_info(tdx_file("gotdx_tcbinfo_fmspc_90c06f000000.json"))
    identity = parse_qe_identity(tdx_file("trustee_td_qe_identity_2025.json"))
    assert judge_evaluation_number(info.evaluation_number, policy, what="TCB Info") == []
    reasons = judge_evaluation_number(identity.evaluation_number, policy, what="QE Identity")
    assert [r.code for r in reasons] == [TOO_LOW]
    assert "QE Identity tcbEvaluationDataNumber 17" in reasons[0].detail
    assert judge_evaluation_number(17, TcbPolicy(), what="QE Identity") == []


# --- the minimum, validly signed simulated collateral -------------------------------------


def _guest(directory: Path, shape: CollateralShape) -> TdxGuest:
    return create_tdx_guest(directory, collateral_shape=shape)


def _simulated(
    guest: TdxGuest, *, collateral: TdxCollateral | None = None, **policy_keys: object
) -> EvidenceReport:
    doc = json.loads(guest.policy_path.read_bytes())
    return verify_tdx_offline(
        TdxEvidence(
            quote=guest.quote(REPORT_DATA),
            root=x509.load_pem_x509_certificate(guest.root_pem),
            at=NOW,
            collateral=collateral or read_collateral_dir(guest.collateral_dir),
            policy=load_policy(json.dumps({**doc, **policy_keys})),
            expected_report_data=REPORT_DATA,
            root_pins=frozenset({guest.root_spki_sha256}),
        )
    )


@pytest.mark.parametrize(
    ("tcb_number", "qe_number", "what"),
    [(16, 19, "TCB Info"), (19, 16, "QE Identity")],
)
def test_one_document_below_the_minimum_is_named(
    tmp_path: Path, tcb_number: int, qe_number: int, what: str
) -> None:
    guest = _guest(tmp_path / "guest", CollateralShape(tcb_number, qe_number))
    assert _simulated(guest).verdict.tier is Tier.AFFIRMING  # no minimum: as before
    assert _simulated(guest, min_tcb_evaluation_data_number=16).verdict.tier is Tier.AFFIRMING
    report = _simulated(guest, min_tcb_evaluation_data_number=17)
    assert report.verdict.reason_codes() == (TOO_LOW,)
    assert report.verdict.reasons[0].detail.startswith(f"{what} tcbEvaluationDataNumber 16 ")
    assert "minimum 17" in report.verdict.reasons[0].detail
    facts = report.claims["collateral"]
    assert (
        facts["tcb_info"]["tcb_evaluation_data_number"],
        facts["qe_identity"]["tcb_evaluation_data_number"],
    ) == (tcb_number, qe_number)


def test_an_unsigned_number_is_not_judged(tmp_path: Path) -> None:
    guest = _guest(tmp_path / "guest", CollateralShape())
    old = _guest(tmp_path / "old", CollateralShape(3, 3))
    served = read_collateral_dir(guest.collateral_dir)
    forged = replace(served, tcb_info=(old.collateral_dir / "tcb_info.json").read_bytes())
    report = _simulated(guest, collateral=forged, min_tcb_evaluation_data_number=17)
    # The other guest's TCB Info (number 3) fails its signature; its number is not judged.
    codes = report.verdict.reason_codes()
    assert "tdx.collateral.signature_invalid" in codes
    assert TOO_LOW not in codes
    assert "tcb_info" not in report.claims["collateral"]


# --- TCB level order -----------------------------------------------------------------------


def _mutated(name: str, member: str, change: Any) -> bytes:
    """Vector ``name`` with ``change`` applied to its ``member`` (the signature no longer
    verifies; parsing, where the order is checked, comes first)."""
    doc = json.loads(tdx_file(name))
    change(doc[member])
    return json.dumps(doc).encode()


def _out_of_order(data: bytes, parser: Any) -> str:
    with pytest.raises(ParseError) as caught:
        parser(data)
    assert caught.value.code == OUT_OF_ORDER
    return str(caught.value)


@pytest.mark.parametrize(
    "name",
    [
        "gotdx_tcbinfo_fmspc_50806f000000.json",
        "gotdx_tcbinfo_fmspc_90c06f000000.json",
        "trustee_tcbinfo_fmspc_00a06d080000.json",
    ],
)
def test_real_tcb_info_levels_reversed_are_refused(name: str) -> None:
    parse_tcb_info(tdx_file(name))  # as Intel serves it: accepted
    message = _out_of_order(
        _mutated(name, "tcbInfo", lambda info: info["tcbLevels"].reverse()), parse_tcb_info
    )
    assert "tcbInfo.tcbLevels[1] is above tcbInfo.tcbLevels[0]" in message


def test_real_tcb_info_duplicate_level_is_refused() -> None:
    def duplicate(info: dict[str, Any]) -> None:
        info["tcbLevels"].insert(1, info["tcbLevels"][0])

    message = _out_of_order(
        _mutated("gotdx_tcbinfo_fmspc_90c06f000000.json", "tcbInfo", duplicate), parse_tcb_info
    )
    assert "tcbInfo.tcbLevels[1] repeats tcbInfo.tcbLevels[0]" in message


def test_real_tcb_info_dates_against_the_svn_order_are_refused() -> None:
    # SVNs still descend, but the lower level claims the later tcbDate: its
    # "superseded at" (the start of an OutOfDate grace window) would be wrong.
    def swap_dates(info: dict[str, Any]) -> None:
        first, second = info["tcbLevels"][0], info["tcbLevels"][1]
        first["tcbDate"], second["tcbDate"] = second["tcbDate"], first["tcbDate"]

    message = _out_of_order(
        _mutated("gotdx_tcbinfo_fmspc_90c06f000000.json", "tcbInfo", swap_dates),
        parse_tcb_info,
    )
    assert "tcbInfo.tcbLevels[1] tcbDate 2024-11-13" in message


def test_real_tdx_module_identity_levels_reversed_are_refused() -> None:
    def reverse_module(info: dict[str, Any]) -> None:
        module = next(m for m in info["tdxModuleIdentities"] if m["id"] == "TDX_01")
        module["tcbLevels"].reverse()

    message = _out_of_order(
        _mutated("gotdx_tcbinfo_fmspc_90c06f000000.json", "tcbInfo", reverse_module),
        parse_tcb_info,
    )
    assert "tdxModuleIdentities[1].tcbLevels[1] is above" in message


def test_real_qe_identity_with_a_higher_level_after_the_first_is_refused() -> None:
    def append_higher(identity: dict[str, Any]) -> None:
        level = json.loads(json.dumps(identity["tcbLevels"][0]))
        level["tcb"]["isvsvn"] += 4
        identity["tcbLevels"].append(level)

    message = _out_of_order(
        _mutated("trustee_td_qe_identity_2025.json", "enclaveIdentity", append_higher),
        parse_qe_identity,
    )
    assert "enclaveIdentity.tcbLevels[1] is above enclaveIdentity.tcbLevels[0]" in message


def test_first_match_depends_on_the_order_which_is_why_it_is_required() -> None:
    # The TD 1.5 quote's platform is at the newest level of its TCB Info, so it also
    # meets both levels below it: the same signed levels in another order rate it
    # otherwise. Hence the parser accepts only Intel's order.
    raw, _ = strip_zero_padding(tdx_file("gotdx_v5_quote_td15.dat"))
    quote = authenticate_quote(parse_quote(raw), root=intel_root(), at=AT_2026)
    info = parse_tcb_info(tdx_file("gotdx_tcbinfo_fmspc_90c06f000000.json"))
    served, _ = evaluate_tcb(info, quote.pck_tcb, quote.quote.body)
    reordered, _ = evaluate_tcb(
        replace(info, levels=info.levels[::-1]), quote.pck_tcb, quote.quote.body
    )
    assert served is not None and reordered is not None
    assert (served.status, reordered.status) == ("UpToDate", "OutOfDate")


def test_simulated_levels_oldest_first_are_refused_though_validly_signed(
    tmp_path: Path,
) -> None:
    intel_order = _simulated(_guest(tmp_path / "a", CollateralShape()))
    assert intel_order.verdict.tier is Tier.AFFIRMING, intel_order.verdict.reasons
    guest = _guest(tmp_path / "b", CollateralShape(levels_oldest_first=True))
    report = _simulated(guest)
    # The TCB Info is refused, so no TCB status is computed from it (a warning says so).
    assert report.verdict.reason_codes() == (OUT_OF_ORDER_CODE, "tdx.tcb.not_evaluated")
    assert _status(report, "tdx.collateral.tcb_info") == "failed"
    assert _status(report, "tdx.tcb.status") == "not_run"
    assert "tcb" not in report.claims
