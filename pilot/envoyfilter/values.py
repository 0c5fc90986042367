"""Patch values → Envoy protos, refused with the path of the first field Envoy would reject.

A patch value is JSON in Envoy's proto shape (snake_case or lowerCamelCase names). Every
field must exist in its message, every ``Any`` must name a type of the Envoy API (its module
is imported on demand), and a ``TypedStruct`` (``udpa.type.v1`` or ``xds.type.v3``) is checked
against the message its ``type_url`` names. Scalars are checked by protobuf's own JSON parser.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from pymesh.errors import ValidationError

__all__ = ["TYPED_STRUCTS", "message_class", "parse_value", "plain"]

TYPED_STRUCTS = frozenset({"udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"})
# Messages whose JSON form is not an object of fields: protobuf's parser checks them whole.
_WELL_KNOWN = frozenset(
    {
        "google.protobuf.Duration",
        "google.protobuf.Timestamp",
        "google.protobuf.FieldMask",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Empty",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int32Value",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.UInt64Value",
    }
)
# The packages whose protos a type URL may name.
_ROOTS = ("envoy.", "udpa.", "xds.", "google.protobuf.", "validate.")


def plain(value: Any) -> Any:
    """A frozen Struct (FrozenMaps, tuples) as plain JSON data."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


def message_class(full_name: str) -> type[Message] | None:
    """The generated class of a message of the Envoy API, importing its package when needed."""
    if not full_name.startswith(_ROOTS):
        return None
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(full_name)
    except KeyError:
        if not _import_package_of(full_name):
            return None
        try:
            descriptor = pool.FindMessageTypeByName(full_name)
        except KeyError:
            return None
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


def _import_package_of(full_name: str) -> bool:
    """Import every ``*_pb2`` module of the longest package prefix of ``full_name``."""
    parts = full_name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        package = ".".join(parts[:end])
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        paths = getattr(module, "__path__", None)
        if paths is None:
            return False
        for info in pkgutil.iter_modules(paths):
            if info.name.endswith("_pb2"):
                importlib.import_module(f"{package}.{info.name}")
        return True
    return False


def parse_value(value: Any, cls: type[Message], path: str) -> Message:
    """``value`` (plain JSON) as a ``cls`` message; ``ValidationError`` at the bad field."""
    _check(value, cls.DESCRIPTOR, path)
    message = cls()
    try:
        json_format.ParseDict(value, message)
    except json_format.ParseError as exc:  # pragma: no cover - _check found nothing wrong
        raise ValidationError(str(exc), path=path) from None
    return message


def _check(value: Any, descriptor: Descriptor, path: str) -> None:
    name = descriptor.full_name
    if name == "google.protobuf.Any":
        _check_any(value, path)
        return
    if name in _WELL_KNOWN:
        _parse_scalar_message(value, descriptor, path)
        return
    if not isinstance(value, dict):
        raise ValidationError(f"expected an object ({name}), got {_kind(value)}", path=path)
    fields = {**descriptor.fields_by_name, **{f.json_name: f for f in descriptor.fields}}
    for key, item in value.items():
        field = fields.get(key)
        item_path = f"{path}.{key}" if path else key
        if field is None:
            raise ValidationError(f"{name} has no field named '{key}'", path=item_path)
        _check_field(field, item, item_path)


def _check_field(field: FieldDescriptor, value: Any, path: str) -> None:
    if value is None:
        return
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        if not isinstance(value, dict):
            raise ValidationError(f"expected an object, got {_kind(value)}", path=path)
        value_field = message_type.fields_by_name["value"]
        for key, item in value.items():
            _check_field(value_field, item, f"{path}[{key}]")
        return
    if field.is_repeated:
        if not isinstance(value, list):
            raise ValidationError(f"expected a list, got {_kind(value)}", path=path)
        if field.message_type is None:
            for index, item in enumerate(value):
                _check_scalar(field, [item], f"{path}[{index}]")
            return
        for index, item in enumerate(value):
            _check(item, field.message_type, f"{path}[{index}]")
        return
    if field.message_type is not None:
        _check(value, field.message_type, path)
    else:
        _check_scalar(field, value, path)


def _check_scalar(field: FieldDescriptor, value: Any, path: str) -> None:
    cls = message_factory.GetMessageClass(field.containing_type)
    _parse(cls, {field.name: value}, path)


def _parse_scalar_message(value: Any, descriptor: Descriptor, path: str) -> None:
    _parse(message_factory.GetMessageClass(descriptor), value, path)


def _parse(cls: type[Message], value: Any, path: str) -> None:
    try:
        json_format.ParseDict(value, cls())
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise ValidationError(_reason(str(exc)), path=path) from None


def _check_any(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise ValidationError(f"expected an object with '@type', got {_kind(value)}", path=path)
    type_url = value.get("@type")
    if not isinstance(type_url, str) or not type_url:
        raise ValidationError("'@type' is required in a typed config", path=path)
    cls = message_class(type_url.rpartition("/")[2])
    if cls is None:
        raise ValidationError(f"unknown type {type_url}", path=f"{path}.@type")
    body: Any = {k: v for k, v in value.items() if k != "@type"}
    if cls.DESCRIPTOR.full_name in _WELL_KNOWN:
        body = value.get("value")
    if cls.DESCRIPTOR.full_name in TYPED_STRUCTS:
        _check(body, cls.DESCRIPTOR, path)
        inner_url = body.get("type_url") or body.get("typeUrl") or ""
        inner = message_class(str(inner_url).rpartition("/")[2])
        if inner is None:
            raise ValidationError(f"unknown type {inner_url!r}", path=f"{path}.type_url")
        _check(body.get("value") or {}, inner.DESCRIPTOR, f"{path}.value")
        return
    _check(body, cls.DESCRIPTOR, path)


def _reason(message: str) -> str:
    # protobuf prefixes every nesting level with "Failed to parse X field: "; keep the cause.
    while message.startswith("Failed to parse ") and ": " in message:
        message = message.split(": ", 1)[1]
    return message.rstrip(".")


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return repr(value)
