"""A bounds-checked little-endian cursor over untrusted SPDM bytes.

Every failure is a :class:`ReportParseError` (a ``ParseError``) carrying a stable
``code`` and the byte ``offset`` where the problem was found, so that a verdict
reason and a bug report can both point at the exact spot.
"""

from __future__ import annotations

from verifier.evidence.errors import ParseError


class ReportParseError(ParseError):
    """A ParseError that also names the byte offset of the failure."""

    def __init__(self, message: str, *, code: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})", code=code)
        self.offset = offset


class Reader:
    """Reads fields in order from ``data``, starting at ``base`` for error offsets."""

    def __init__(self, data: bytes, *, base: int = 0) -> None:
        self._data = data
        self._pos = 0
        self._base = base

    @property
    def offset(self) -> int:
        """Absolute offset (in the whole report) of the next unread byte."""
        return self._base + self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def fail(self, message: str, *, code: str, at: int | None = None) -> ReportParseError:
        return ReportParseError(message, code=code, offset=self.offset if at is None else at)

    def take(self, size: int, what: str, *, code: str = "truncated") -> bytes:
        if size > self.remaining:
            raise self.fail(f"{what}: needs {size} bytes, {self.remaining} left", code=code)
        chunk = self._data[self._pos : self._pos + size]
        self._pos += size
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u24(self, what: str) -> int:
        return int.from_bytes(self.take(3, what), "little")
