"""The one exception that parsers of untrusted bytes may raise."""

from __future__ import annotations


class ParseError(ValueError):
    """Untrusted bytes did not parse into the expected structure.

    ``code`` is a short stable token (``"malformed"`` unless a parser has a more
    specific one, e.g. ``"bad_magic"``) so that callers can map the failure to a
    verdict reason without inspecting the message text.
    """

    def __init__(self, message: str, *, code: str = "malformed") -> None:
        super().__init__(message)
        self.code = code
