"""Mutual-TLS channels to a test verifier, one per person or agent certificate."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import grpc

from verifier import pki


@contextmanager
def client_channels(
    address: str, pki_dir: Path, clients: Mapping[str, pki.IssuedFiles]
) -> Iterator[dict[str, grpc.Channel]]:
    """A secure channel per client certificate, trusting the evaluation CA in ``pki_dir``."""
    ca = (pki_dir / pki.CA_CERTIFICATE).read_bytes()
    opened = {
        who: grpc.secure_channel(
            address,
            grpc.ssl_channel_credentials(
                root_certificates=ca,
                private_key=files.private_key.read_bytes(),
                certificate_chain=files.certificate.read_bytes(),
            ),
        )
        for who, files in clients.items()
    }
    try:
        yield opened
    finally:
        for channel in opened.values():
            channel.close()
