"""Plain data (parsed YAML/JSON) → an Envoy proto, with Envoy's verdict on unknown fields and
wrong types and the failing field's path in the error.

``json_format`` already names the path in most messages; where it only gives its chain of
"Failed to parse X field" prefixes, the path is rebuilt (with list indices) from the data.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from google.protobuf import (
    json_format,
    message_factory,
    symbol_database,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from proxy.config.translate.common import join
from pymesh.errors import ValidationError

__all__ = ["parse_message"]

_M = TypeVar("_M", bound=Message)

_NO_FIELD = re.compile(r'has no field named "([^"]+)"')
_FAILED_FIELD = re.compile(r"Failed to parse (\w+) field")
_UNKNOWN_TYPE = re.compile(r"Can not find message descriptor by type_url: (\S+?)(?: at |\.*$)")


def parse_message(data: Any, message_class: type[_M], source: str | None = None) -> _M:
    """Parse ``data`` into ``message_class`` refusing unknown fields (as Envoy does)."""
    if not isinstance(data, Mapping):
        raise ValidationError(
            f"expected a mapping for {message_class.DESCRIPTOR.full_name}", source=source
        )
    tried: set[str] = set()
    while True:
        message = message_class()
        try:
            json_format.ParseDict(data, message, ignore_unknown_fields=False)
        except json_format.ParseError as exc:
            # protobuf's own messages carry the path; see _error_path
            text = str(exc)
            missing = _UNKNOWN_TYPE.search(text)
            if missing is not None and missing.group(1) not in tried:
                tried.add(missing.group(1))
                if _import_proto_package(missing.group(1)):
                    continue
            descriptor = message.DESCRIPTOR
            raise ValidationError(
                _clean_message(text, descriptor.name),
                source=source,
                path=_error_path(text, data, descriptor),
            ) from None
        return cast(_M, message)


def _import_proto_package(type_url: str) -> bool:
    """Import the xds-protos package defining ``type_url``'s message, so an ``Any`` naming an
    extension pymesh does not implement still parses (and is then reported as unsupported
    rather than unknown, the distinction Envoy makes too)."""
    full_name = type_url.rsplit("/", 1)[-1]
    package = full_name.rsplit(".", 1)[0]
    # A nested message (pkg.Outer.Inner) lives in the package one level up.
    for candidate in (package, package.rsplit(".", 1)[0]):
        try:
            spec = importlib.util.find_spec(candidate)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        imported = False
        for location in spec.submodule_search_locations:
            for module in sorted(Path(location).glob("*_pb2.py")):
                importlib.import_module(f"{candidate}.{module.stem}")
                imported = True
        if imported:
            return True
    return False


def _at_path(root: str) -> re.Pattern[str]:
    return re.compile(r'\bat "?' + re.escape(root) + r'((?:\.[A-Za-z0-9_]+|\[[^\]]*\])*)"?')


def _clean_message(text: str, root: str) -> str:
    """json_format nests "Failed to parse X field:" prefixes and lists every field name;
    keep the innermost reason."""
    inner = _FAILED_FIELD.split(text)[-1] if "Failed to parse" in text else text
    inner = inner.split("\n Available Fields")[0]
    inner = _at_path(root).sub("", inner).strip().lstrip(":").strip().rstrip(". ")
    return inner or text


def _error_path(text: str, data: Any, descriptor: Descriptor) -> str | None:
    match = _at_path(descriptor.name).search(text)
    if match is not None:
        path = match.group(1).lstrip(".")
        missing = _NO_FIELD.search(text)
        if missing is not None:
            path = join(path, missing.group(1))
        return path or None
    names = _FAILED_FIELD.findall(text)
    return _locate(data, descriptor, names) if names else None


def _locate(data: Any, descriptor: Descriptor, names: list[str]) -> str:
    """Rebuild an indexed path from json_format's chain of field names by re-parsing the
    elements of each repeated field until the failing one is found."""
    parts: list[str] = []
    node: Any = data
    current: Descriptor | None = descriptor
    for name in names:
        field = current.fields_by_name.get(name) if current is not None else None
        if field is None and current is not None and isinstance(node, Mapping):
            # json_format leaves some links out of its chain (oneof members): find the
            # singular message field in between whose type has ``name``.
            for between in current.fields:
                key = between.name if between.name in node else between.json_name
                inner = between.message_type
                if (
                    inner is not None
                    and not between.is_repeated
                    and isinstance(node.get(key), Mapping)
                    and name in inner.fields_by_name
                ):
                    parts.append(between.name)
                    node = node[key]
                    current = inner
                    field = inner.fields_by_name[name]
                    break
        if field is None or not isinstance(node, Mapping):
            parts.append(name)
            current = None
            continue
        value = node.get(name, node.get(field.json_name))
        part = name
        if field.is_repeated and isinstance(value, list):
            index = _failing_index(value, field)
            part = f"{name}[{index}]"
            value = value[index] if index < len(value) else None
        parts.append(part)
        node = value
        current = _inner_descriptor(field, node)
    return ".".join(parts)


def _failing_index(items: list[Any], field: FieldDescriptor) -> int:
    if field.message_type is None:
        return 0
    message_class = message_factory.GetMessageClass(field.message_type)
    for index, item in enumerate(items):
        try:
            json_format.ParseDict(item, message_class())
        except (json_format.ParseError, TypeError, AttributeError):
            return index
    return 0


def _inner_descriptor(field: FieldDescriptor, node: Any) -> Descriptor | None:
    inner: Descriptor | None = field.message_type
    if inner is not None and inner.full_name == "google.protobuf.Any" and isinstance(node, Mapping):
        type_url = str(node.get("@type", ""))
        try:
            found: Descriptor = symbol_database.Default().pool.FindMessageTypeByName(
                type_url.rsplit("/", 1)[-1]
            )
        except KeyError:
            return None
        return found
    return inner
