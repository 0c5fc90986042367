"""Turn model objects into plain JSON data for golden files (stable, readable diffs)."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def to_data(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data: dict[str, Any] = {"__type__": type(value).__name__}
        for field in dataclasses.fields(value):
            data[field.name] = to_data(getattr(value, field.name))
        return data
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, re.Pattern):
        return {
            "__regex__": value.pattern.decode()
            if isinstance(value.pattern, bytes)
            else value.pattern
        }
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): to_data(item) for key, item in sorted(value.items())}
    if isinstance(value, frozenset | set):
        return sorted(to_data(item) for item in value)
    if isinstance(value, tuple | list):
        return [to_data(item) for item in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(to_data(value), indent=1, sort_keys=True) + "\n"


def check_golden(value: Any, golden: Path, update: bool) -> None:
    text = dumps(value)
    if update:
        golden.write_text(text)
    assert golden.exists(), f"{golden.name} missing (run with PYMESH_UPDATE_GOLDEN=1)"
    assert text == golden.read_text(), f"{golden.name} differs (set PYMESH_UPDATE_GOLDEN=1)"
