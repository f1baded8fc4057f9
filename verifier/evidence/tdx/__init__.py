"""Intel TDX evidence: quotes (v4/v5), DCAP collateral, TCB status, CC event log.

parse (``quote``) -> authenticate (``authenticate``: signatures, PCK chain to the
pinned Intel SGX Root CA, CRLs, ``collateral``, ``tcb``) -> appraise (``policy``);
``ccel`` replays the CC event log into RTMRs; ``offline`` runs them all for
``weightgate evidence verify tdx``.
"""
