"""AMD SEV-SNP attestation reports: parse, authenticate (VCEK/VLEK to a pinned ARK), appraise."""
