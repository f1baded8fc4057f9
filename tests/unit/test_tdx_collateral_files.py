"""One collateral directory for several platforms: TCB Info per FMSPC, PCK CRL per CA."""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.evidence.tdx.collateral_files import CollateralFilesError, read_collateral_dir

FMSPC = bytes.fromhex("00806f050000")


def _dir(tmp_path: Path, **files: bytes) -> Path:
    for name, data in files.items():
        (tmp_path / name.replace("__", ".")).write_bytes(data)
    return tmp_path


def test_the_platforms_own_files_win_over_the_shared_ones(tmp_path: Path) -> None:
    directory = _dir(
        tmp_path,
        tcb_info__json=b"shared",
        **{f"tcb_info_{FMSPC.hex()}__json": b"own"},
        pck_crl__der=b"shared crl",
        pck_crl_platform__der=b"platform crl",
        qe_identity__json=b"qe",
    )
    chosen = read_collateral_dir(directory, fmspc=FMSPC, pck_ca="platform")
    assert (chosen.tcb_info, chosen.pck_crl, chosen.qe_identity) == (
        b"own",
        b"platform crl",
        b"qe",
    )
    other = read_collateral_dir(directory, fmspc=bytes(6), pck_ca="processor")
    assert (other.tcb_info, other.pck_crl) == (b"shared", b"shared crl")
    unknown = read_collateral_dir(directory)
    assert (unknown.tcb_info, unknown.pck_crl) == (b"shared", b"shared crl")


def test_a_ca_kind_outside_the_two_never_names_a_file(tmp_path: Path) -> None:
    directory = _dir(tmp_path, pck_crl__der=b"shared", **{"pck_crl_..__der": b"x"})
    assert read_collateral_dir(directory, pck_ca="..").pck_crl == b"shared"


def test_an_empty_or_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(CollateralFilesError, match="none of"):
        read_collateral_dir(tmp_path)
    with pytest.raises(CollateralFilesError, match="not a directory"):
        read_collateral_dir(tmp_path / "missing")
