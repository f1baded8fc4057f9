"""The order a collateral document must list its TCB levels in; other orders are refused.

The TCB status algorithm (``tcb.py``) takes the *first* level a platform, TDX
module or QE meets, so the answer depends on the order of the list. Intel's
PCS API documents ``tcbLevels`` of TCB Info v3 and of an enclave identity as a
"sorted list" and its status algorithm walks "the sorted collection ...
starting from the first item"; the key is not spelled out there. Intel's
Quote Verification Library defines it: it loads TCB Info levels into a set
ordered descending by SGX TCB component SVNs (compared in order, 01..16), then
PCESVN, then TDX TCB component SVNs, refusing duplicates ("Detected duplicated
TCB levels"); enclave levels (QE, TDX module) it walks as served, which finds
the right level only when the highest ISVSVN comes first. Every Intel document
we have (the real TCB Infos and QE identities in ``../shared/testvectors/tdx``)
is in exactly that order, with ``tcbDate`` never increasing along the list.

We require that order instead of sorting into it, which would also make the
result independent of the served order. Refusing is the safer of the two:

* for every document accepted, the first match is the level QVL picks, so our
  status is Intel's reference status and no tie-break of ours is involved;
* a document signed by the TCB Signing key that breaks a rule of its own
  format is a fault upstream (a signer bug, or a key signing what it should
  not): fail closed and name it (``tdx.collateral.tcb_levels_out_of_order``)
  rather than guess what the signer meant;
* the OutOfDate grace window starts at the ``tcbDate`` of the level above the
  match (``TcbResult.superseded_at``: when a newer level appeared), which is
  only true when dates fall along the list. Sorting SVNs cannot repair a list
  whose dates disagree with them, so the dates are required to be
  non-increasing as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from verifier.evidence.errors import ParseError

__all__ = ["OUT_OF_ORDER", "require_descending"]

OUT_OF_ORDER = "tcb_levels_out_of_order"  # ParseError.code


def require_descending(
    keys: Sequence[tuple[int, ...]], dates: Sequence[datetime], what: str
) -> None:
    """Raise ParseError (code ``OUT_OF_ORDER``) unless ``keys`` strictly descend and
    ``dates`` never increase (``keys[i]`` and ``dates[i]`` are level ``i`` of ``what``).

    ``keys`` compare as tuples, i.e. component by component from the first: the
    order of the module docstring when a key is (SGX SVNs..., PCESVN, TDX SVNs...)
    or (ISVSVN,).
    """
    for index in range(1, len(keys)):
        if not keys[index - 1] > keys[index]:
            relation = "repeats" if keys[index - 1] == keys[index] else "is above"
            raise ParseError(
                f"collateral: {what}[{index}] {relation} {what}[{index - 1}]: "
                "TCB levels must be listed highest first, each once",
                code=OUT_OF_ORDER,
            )
        if dates[index - 1] < dates[index]:
            raise ParseError(
                f"collateral: {what}[{index}] tcbDate {dates[index].isoformat()} is later "
                f"than {what}[{index - 1}]'s {dates[index - 1].isoformat()}: "
                "TCB levels must be listed newest first",
                code=OUT_OF_ORDER,
            )
