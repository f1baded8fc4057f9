"""The store's exceptions; all derive from :class:`StoreError`."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's own errors."""


# The names are the API the server and CLI code against; hence no Error suffix.
class HostNotFound(StoreError):  # noqa: N818
    pass


class HostAlreadyRegistered(StoreError):  # noqa: N818
    pass


class HostQuarantined(StoreError):  # noqa: N818
    """The host is quarantined: no key may be released to it."""


class EnrollmentNotFound(StoreError):  # noqa: N818
    """No pending, unexpired enrollment has this id (unknown, used, or expired)."""


class ModelVersionExists(StoreError):  # noqa: N818
    """A model version with this manifest digest, or this name and version, is registered."""


class ModelVersionNotFound(StoreError):  # noqa: N818
    pass


class SiteNotFound(StoreError):  # noqa: N818
    pass


class ReleaseNotFound(StoreError):  # noqa: N818
    pass


class ReleaseStateError(StoreError):
    """The release is not in a state that allows this transition."""
