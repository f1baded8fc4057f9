"""Structured JSON-lines logging for the agent.

One JSON object per line: ``ts``, ``level``, ``event`` (a stable dotted name),
``host_id`` and event fields. Callers pass only non-secret fields: never a
credential, activated secret or private key.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

LOGGER_NAME = "weightgate.agent"
_FIELDS_ATTR = "weightgate_fields"


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        entry.update(getattr(record, _FIELDS_ATTR, {}))
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure(stream: IO[str] | None = None, level: int = logging.INFO) -> None:
    """Send the agent's log events to ``stream`` (stderr by default) as JSON lines."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLinesFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


class EventLog:
    """Logs named events with fields, stamping each with the host id."""

    def __init__(self, host_id: str) -> None:
        self._logger = logging.getLogger(LOGGER_NAME)
        self._host_id = host_id

    def _log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(
                level, event, extra={_FIELDS_ATTR: {"host_id": self._host_id, **fields}}
            )

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)
