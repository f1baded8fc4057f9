"""Reading verifier config tables: typed values, errors that name file, line and key.

An operator editing a config on a partner host has nothing else to go on, so every
error says where it is (tomllib keeps no positions: the line is found again in the
text) and what was expected.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from verifier.evidence.bounded_file import MAX_ROOT_FILE_BYTES, read_pem_certificates

__all__ = ["ConfigError", "Reader", "check_private_key_file", "table_reader"]


class ConfigError(Exception):
    """A configuration problem, with enough context to fix it."""


def _key_line(text: str, table: str, key: str) -> int | None:
    """Best-effort line number of `key` inside `[table]` (tomllib keeps no positions)."""
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.fullmatch(r"\[([^\[\]]+)\]", stripped)
        if header:
            current = header.group(1).strip()
            continue
        if current == table and re.match(rf"{re.escape(key)}\s*=", stripped):
            return number
    return None


class Reader:
    """Typed access to one TOML table that reports errors by file, line and key."""

    def __init__(self, path: Path, text: str, table: str, data: Mapping[str, Any]) -> None:
        self._path, self._text, self._table, self._data = path, text, table, data

    def fail(self, key: str, message: str) -> ConfigError:
        line = _key_line(self._text, self._table, key)
        where = f"{self._path}:{line}" if line else str(self._path)
        return ConfigError(f"{where}: [{self._table}] {key}: {message}")

    def get(self, key: str, kind: type[Any], default: Any, expected: str) -> Any:
        value = self._data.get(key, default)
        if value is None:
            raise self.fail(key, f"missing; expected {expected}")
        # bool is an int in Python; never accept true where a number is meant
        if kind in (int, float) and isinstance(value, bool):
            raise self.fail(key, f"expected {expected}, got {value!r}")
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind):
            raise self.fail(key, f"expected {expected}, got {value!r}")
        return value

    def positive(self, key: str, default: float) -> float:
        value: float = self.get(key, float, default, "a positive number of seconds")
        if value <= 0:
            raise self.fail(key, f"expected a positive number of seconds, got {value!r}")
        return value

    def unknown_keys(self, known: set[str]) -> None:
        for key in self._data:
            if key not in known:
                raise self.fail(key, "unknown key")

    def directory(self, key: str, base: Path) -> Path:
        """The existing directory ``key`` names, relative to ``base``."""
        path: Path = base / self.get(key, str, None, "a directory path")
        if not path.is_dir():
            raise self.fail(key, f"{path} is not a directory")
        return path

    def trust_dir(self, base: Path) -> Path | None:
        """``trust_dir``, which may be left out only beside ``insecure_test_roots`` (None)."""
        if "trust_dir" not in self._data and "insecure_test_roots" in self._data:
            return None
        return self.directory("trust_dir", base)

    def file_names(self, key: str) -> list[str]:
        """The list of PEM file paths ``key`` gives; empty when absent."""
        names: list[Any] = self.get(key, list, [], "a list of PEM file paths")
        if not all(isinstance(name, str) for name in names):
            raise self.fail(key, "expected a list of PEM file paths")
        return names

    def read_certificates(self, key: str, path: Path) -> list[x509.Certificate]:
        """The PEM certificates of ``path`` (bounded), errors reported under ``key``."""
        return read_pem_certificates(path, MAX_ROOT_FILE_BYTES, lambda m: self.fail(key, m))


def table_reader(path: Path, text: str, raw: Any, table: str, known: set[str]) -> Reader | None:
    """A reader of ``[table]`` with no unknown keys; None if the table is absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [{table}] must be a table")
    reader = Reader(path, text, table, raw)
    reader.unknown_keys(known)
    return reader


def check_private_key_file(reader: Reader, key: str, path: Path) -> None:
    """ConfigError unless ``path`` can be read and only by its owner."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise reader.fail(key, f"cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise reader.fail(key, f"{path} is accessible by group or others; chmod 600 it")
