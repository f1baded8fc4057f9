"""Key release: wrapping data keys to a host's TPM binding key (``wrap``)."""

from verifier.keyrelease.wrap import WrappedKeys, wrap_for_binding_key

__all__ = ["WrappedKeys", "wrap_for_binding_key"]
