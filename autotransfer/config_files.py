"""YAML configuration files (search spaces, benchmark suites): read as data, checked key by key.

``yaml.safe_load`` only (no tags, no objects), so a file cannot make the program import or run
anything. Every mistake names the dotted key, the value, the file, and where the format is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from autotransfer.errors import AutoTransferError


def read_yaml(path: Path, kind: str) -> dict:
    """The mapping in ``path``; ``kind`` ("search space", "suite") names the file in messages."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise AutoTransferError(f"Cannot read the {kind} file ({error.strerror or error}).", where=str(path)) from error
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        mark = getattr(error, "problem_mark", None)  # PyYAML's position of the problem (0-based)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
        raise AutoTransferError(
            f"The {kind} file is not valid YAML: {problem}",
            where=where,
            fix="check that line and the one before it (indentation, a missing ':', an unclosed bracket or quote).",
        ) from error
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise AutoTransferError(f"The {kind} file must be a YAML mapping of keys to values.", where=str(path))
    return document


class ConfigChecker:
    """Type and range checks whose failures name the key, the value and the file."""

    def __init__(self, source: str, kind: str, docs: str) -> None:
        self.source, self.kind, self.docs = source, kind, docs

    def fail(self, key: str, value: Any, expected: str) -> AutoTransferError:
        return AutoTransferError(
            f"Bad {self.kind} key {key!r}: {value!r} ({expected}).",
            where=self.source,
            fix=f"see {self.docs} for the format.",
        )

    def mapping(self, key: str, value: Any, allowed: set[str]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, value, "expected a mapping")
        for sub in value:
            if sub not in allowed:
                raise self.fail(
                    f"{key}.{sub}" if key else sub, value[sub], f"unknown key; known: {', '.join(sorted(allowed))}"
                )
        return value

    def choices(self, key: str, value: Any, kind: type, allowed: tuple | None = None, positive: bool = False) -> tuple:
        if not isinstance(value, list) or not value:
            raise self.fail(key, value, "expected a non-empty list")
        for item in value:
            ok = (
                isinstance(item, kind) and not isinstance(item, bool)
                if kind is not float
                else (isinstance(item, (int, float)) and not isinstance(item, bool))
            )
            if not ok or (allowed and item not in allowed) or (positive and item <= 0):
                want = (
                    f"one of {', '.join(map(str, allowed))}"
                    if allowed
                    else (f"a positive {kind.__name__}" if positive else f"a {kind.__name__}")
                )
                raise self.fail(key, item, f"each item must be {want}")
        return tuple(float(v) if kind is float else v for v in value)

    def integer(self, key: str, value: Any, low: int, high: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self.fail(key, value, f"expected an integer in {low}..{high}")
        return value

    def flag(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, value, "expected true or false")
        return value

    def text(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, value, "expected a non-empty string")
        return value
