"""NVIDIA GPU and NVSwitch attestation evidence: SPDM reports, certificate chains, RIMs."""
