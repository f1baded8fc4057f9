"""TPM 2.0 quote evidence: parse (``parse``), authenticate (``authenticate``), appraise
(``appraise``); ``keys`` turns TPM public areas into ``cryptography`` keys."""
