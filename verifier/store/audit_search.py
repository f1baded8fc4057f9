"""Search filters for the audit log, turned into SQL that runs the same on SQLite and PostgreSQL.

Filters combine with AND: exact actor, exact action, every given target entry
present with that exact value, and a time window [since, until). They narrow
what is read, never what is stored or chained.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from sqlalchemy import ColumnElement

from verifier.store.models_audit import AuditRecordRow

# Target keys are request field names (verifier.audit.recorder.request_fields);
# the pattern also keeps them safe inside a JSON path expression.
TARGET_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_TARGET_FILTERS: Final = 16  # a search names a few fields; more is a mistake or abuse
MAX_FILTER_TEXT: Final = 4096  # longer than any stored actor, action or target value


@dataclass(frozen=True, slots=True)
class AuditSearch:
    """Which records to read; an empty search matches every record.

    Raises ValueError, naming the filter, for one that could never be meant.
    """

    actor: str = ""  # "": any actor
    action: str = ""  # "": any action
    target: Mapping[str, str] = field(default_factory=dict)
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    def __post_init__(self) -> None:
        for name, text in (("actor", self.actor), ("action", self.action)):
            if len(text) > MAX_FILTER_TEXT:
                raise ValueError(f"{name}: at most {MAX_FILTER_TEXT} characters")
        if len(self.target) > MAX_TARGET_FILTERS:
            raise ValueError(f"target: at most {MAX_TARGET_FILTERS} entries")
        for key, value in self.target.items():
            if not TARGET_KEY.fullmatch(key):
                raise ValueError(f"target: {key!r} is not a field name (letters, digits, _)")
            if len(value) > MAX_FILTER_TEXT:
                raise ValueError(f"target: the value of {key} is too long")
        for name, moment in (("since", self.since), ("until", self.until)):
            if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
                raise ValueError(f"{name} must be timezone-aware")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until (the window is [since, until))")

    def conditions(self) -> list[ColumnElement[bool]]:
        """The WHERE clauses, to be ANDed."""
        clauses: list[ColumnElement[bool]] = []
        if self.actor:
            clauses.append(AuditRecordRow.actor == self.actor)
        if self.action:
            clauses.append(AuditRecordRow.action == self.action)
        for key, value in sorted(self.target.items()):
            # json_extract on SQLite, ->> on PostgreSQL: the entry as text, NULL when absent.
            clauses.append(AuditRecordRow.target[key].as_string() == value)
        if self.since is not None:
            clauses.append(AuditRecordRow.at >= self.since)
        if self.until is not None:
            clauses.append(AuditRecordRow.at < self.until)
        return clauses
