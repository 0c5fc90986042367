"""Resource dicts to protobuf messages, without ``json_format.ParseDict`` on the push path.

The generators build resources as proto3-JSON-shaped dicts (readable, and what golden files
and EnvoyFilter patches work on). ``ParseDict`` was most of a push's CPU: it re-resolves every
field by name through the descriptor pool for every message of every proxy. This walks the
same dict with a per-message-type table built once (field by JSON and proto name, with a
setter for its kind), and gives the same message, byte for byte (a test compares the two on
every resource the generators make for Bookinfo). The well-known types it does not special-
case, and anything it does not recognise, are handed to ``ParseDict`` for that sub-message, so
a malformed resource fails exactly as before.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import descriptor, json_format, symbol_database
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]

__all__ = ["parse"]

_FD = descriptor.FieldDescriptor
_Setter = Callable[[Message, Any], None]
_tables: dict[str, dict[str, _Setter]] = {}
_WRAPPERS = frozenset(
    f"google.protobuf.{n}Value"
    for n in ("Bool", "Int32", "Int64", "UInt32", "UInt64", "Float", "Double", "String", "Bytes")
)
_INTS = frozenset((_FD.CPPTYPE_INT32, _FD.CPPTYPE_INT64, _FD.CPPTYPE_UINT32, _FD.CPPTYPE_UINT64))
_FLOATS = frozenset((_FD.CPPTYPE_FLOAT, _FD.CPPTYPE_DOUBLE))
_db = symbol_database.Default()


def parse(body: Mapping[str, Any], message: Message) -> Message:
    """Fill ``message`` from ``body`` (proto3 JSON shape) and return it."""
    _fill(message, body)
    return message


def _fill(message: Message, body: Any) -> None:
    full_name = message.DESCRIPTOR.full_name
    special = _SPECIAL.get(full_name)
    if special is not None:
        special(message, body)
        return
    if full_name.startswith("google.protobuf.") or not isinstance(body, Mapping):
        json_format.ParseDict(body, message)
        return
    table = _tables.get(full_name)
    if table is None:
        table = _tables[full_name] = _table(message.DESCRIPTOR)
    for key, value in body.items():
        setter = table.get(key)
        if setter is None:
            json_format.ParseDict(body, message)  # its error names the field
            return
        if value is None:  # null: ParseDict's rules (cleared, or a null Value)
            json_format.ParseDict({key: None}, message)
        else:
            setter(message, value)


def _table(desc: Any) -> dict[str, _Setter]:
    table: dict[str, _Setter] = {}
    for field in desc.fields:
        setter = _setter(field)
        table[field.name] = setter
        table[field.json_name] = setter
    return table


def _scalar(field: Any) -> Callable[[Any], Any]:
    cpp = field.cpp_type
    if cpp == _FD.CPPTYPE_ENUM:
        values = field.enum_type.values_by_name
        return lambda v: values[v].number if isinstance(v, str) else int(v)
    if cpp in _INTS:
        return lambda v: v if type(v) is int else int(v)
    if cpp in _FLOATS:
        return float
    if cpp == _FD.CPPTYPE_BOOL:
        return lambda v: v if type(v) is bool else _bad(v)
    if field.type == _FD.TYPE_BYTES:
        return lambda v: base64.b64decode(v)
    return lambda v: v if type(v) is str else _bad(v)


def _bad(value: Any) -> Any:
    raise json_format.ParseError(f"unexpected value {value!r}")


def _setter(field: Any) -> _Setter:
    name = field.name
    is_message = field.cpp_type == _FD.CPPTYPE_MESSAGE
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        key_conv = _scalar(field.message_type.fields_by_name["key"])
        if value_field.cpp_type == _FD.CPPTYPE_MESSAGE:

            def set_message_map(m: Message, v: Any) -> None:
                target = getattr(m, name)
                for k, item in v.items():
                    _fill(target[key_conv(k)], item)

            return set_message_map
        value_conv = _scalar(value_field)

        def set_map(m: Message, v: Any) -> None:
            target = getattr(m, name)
            for k, item in v.items():
                target[key_conv(k)] = value_conv(item)

        return set_map
    if field.is_repeated:
        if is_message:

            def set_messages(m: Message, v: Any) -> None:
                target = getattr(m, name)
                for item in v:
                    _fill(target.add(), item)

            return set_messages
        conv = _scalar(field)

        def set_scalars(m: Message, v: Any) -> None:
            getattr(m, name).extend([conv(item) for item in v])

        return set_scalars
    if is_message:

        def set_message(m: Message, v: Any) -> None:
            sub = getattr(m, name)
            sub.SetInParent()  # present even when empty, as ParseDict leaves it
            _fill(sub, v)

        return set_message
    conv = _scalar(field)

    def set_scalar(m: Message, v: Any) -> None:
        setattr(m, name, conv(v))

    return set_scalar


def _any(message: Message, body: Any) -> None:
    if not isinstance(body, Mapping) or "@type" not in body or "value" in body:
        json_format.ParseDict(body, message)  # not the plain packed form: ParseDict's rules
        return
    type_url = body["@type"]
    inner = _db.GetSymbol(type_url.rpartition("/")[2])()
    _fill(inner, {k: v for k, v in body.items() if k != "@type"})
    message.type_url = type_url
    message.value = inner.SerializeToString()


def _wrapper(message: Message, body: Any) -> None:
    if isinstance(body, Mapping):
        json_format.ParseDict(body, message)
        return
    field = message.DESCRIPTOR.fields_by_name["value"]
    message.value = _scalar(field)(body)


def _duration(message: Message, body: Any) -> None:
    try:
        message.FromJsonString(body)
    except (ValueError, TypeError, AttributeError):
        json_format.ParseDict(body, message)  # raises ParseError, worded as before
    message.SetInParent()


def _struct(message: Message, body: Any) -> None:
    if not isinstance(body, Mapping):
        json_format.ParseDict(body, message)
        return
    message.SetInParent()
    fields = message.fields
    for key, value in body.items():
        _value(fields[key], value)


def _value(message: Message, value: Any) -> None:
    # ParseDict's order of checks: bool before number (a bool is an int in Python)
    if value is None:
        message.null_value = 0
    elif isinstance(value, bool):
        message.bool_value = value
    elif isinstance(value, str):
        message.string_value = value
    elif isinstance(value, int | float):
        message.number_value = value
    elif isinstance(value, Mapping):
        _struct(message.struct_value, value)
    elif isinstance(value, list | tuple):
        values = message.list_value
        values.SetInParent()
        for item in value:
            _value(values.values.add(), item)
    else:
        json_format.ParseDict(value, message)


_SPECIAL: dict[str, Callable[[Message, Any], None]] = {
    "google.protobuf.Struct": _struct,
    "google.protobuf.Any": _any,
    "google.protobuf.Duration": _duration,
    **dict.fromkeys(_WRAPPERS, _wrapper),
}
