"""A simulated AMD SEV-SNP confidential VM.

Real formats (a version-3 ATTESTATION_REPORT signed by a VCEK, the VCEK with
AMD's extensions, an ASK and ARK signed RSASSA-PSS SHA-384, the GHCB certificate
table), made under a freshly generated TEST ARK that the verifier trusts only
where its fingerprint is pinned explicitly. See :mod:`devsim.snp.host` for the
directory layout.
"""

from devsim.snp.files import SnpHostError
from devsim.snp.host import (
    MAX_VALIDITY_DAYS,
    PRODUCT_NAMES,
    SnpHost,
    create_snp_host,
    load_snp_host,
)

__all__ = [
    "MAX_VALIDITY_DAYS",
    "PRODUCT_NAMES",
    "SnpHost",
    "SnpHostError",
    "create_snp_host",
    "load_snp_host",
]
