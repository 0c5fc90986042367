"""Warnings, and the per-document reporter that turns problems into located errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

from pymesh.errors import ValidationError

__all__ = ["ConfigWarning", "Reporter", "join_path"]


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    """Something accepted but worth telling the operator (unknown kind, deprecated field...)."""

    message: str
    source: str | None = None
    document: int | None = None
    path: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = []
        if self.source is not None:
            where.append(self.source if self.line is None else f"{self.source}:{self.line}")
        if self.document is not None:
            where.append(f"document {self.document}")
        if self.path:
            where.append(self.path)
        return f"{': '.join(where)}: {self.message}" if where else self.message


def join_path(base: str, name: str) -> str:
    return f"{base}.{name}" if base else name


class Reporter:
    """Raises :class:`ValidationError` and collects warnings for one YAML document.

    ``lines`` maps field paths to 1-based line numbers (from the YAML parser) so a message can
    point at the offending line; a path missing from it falls back to its nearest parent.
    """

    __slots__ = ("document", "lines", "prefix", "source", "warnings")

    def __init__(
        self,
        source: str | None = None,
        document: int | None = None,
        lines: Mapping[str, int] | None = None,
        prefix: str = "",
    ) -> None:
        self.source = source
        self.document = document
        self.lines: Mapping[str, int] = lines or {}
        #: prepended to every path, for objects nested in a ``kind: List`` (``items[2].``)
        self.prefix = prefix
        self.warnings: list[ConfigWarning] = []

    def line_of(self, path: str) -> int | None:
        while path:
            line = self.lines.get(path)
            if line is not None:
                return line
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.lines.get("")

    def fail(self, path: str, message: str) -> NoReturn:
        path = self.prefix + path if path else self.prefix.rstrip(".")
        line = self.line_of(path)
        text = message if line is None else f"{message} (line {line})"
        raise ValidationError(text, source=self.source, document=self.document, path=path or None)

    def warn(self, path: str, message: str) -> None:
        path = self.prefix + path if path else self.prefix.rstrip(".")
        self.warnings.append(
            ConfigWarning(message, self.source, self.document, path or None, self.line_of(path))
        )
