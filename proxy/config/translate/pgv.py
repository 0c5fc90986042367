"""protoc-gen-validate rules, read from the Envoy protos' own ``(validate.rules)`` options.

Envoy refuses a config that breaks these constraints (``Proto constraint validation
failed``); applying the same annotations here gives pymesh the same verdict without keeping a
hand-written copy of each rule. ``check_message_rules`` checks the fields of ONE message; the
walker in ``support`` calls it on every message it visits (``Any`` payloads included, once
unpacked), as Envoy's ``MessageUtil::validate`` does.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from validate import validate_pb2

from pymesh.errors import ValidationError

__all__ = ["check_message_rules"]

_HEADER_NAME_STRICT = re.compile(r"^:?[0-9a-zA-Z!#$%&'*+\-.^_|~`]+$")
_HEADER_VALUE_STRICT = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]*$")
_HEADER_LOOSE = re.compile(r"^[^\x00\n\r]*$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+$")

_WRAPPERS = frozenset(
    {
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
    }
)


def _fail(path: str, message: str, descriptor: Descriptor) -> ValidationError:
    return ValidationError(f"{message} ({descriptor.full_name})", path=path)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _duration_seconds(value: Any) -> float:
    return float(value.seconds) + float(value.nanos) / 1e9


def check_message_rules(message: Message, path: str) -> None:
    """Raise ``ValidationError`` (path included) for the first PGV rule ``message`` breaks."""
    descriptor = message.DESCRIPTOR
    options = descriptor.GetOptions()
    if options.HasExtension(validate_pb2.disabled) and options.Extensions[validate_pb2.disabled]:
        return
    for oneof in descriptor.oneofs:
        oneof_options = oneof.GetOptions()
        if (
            oneof_options.HasExtension(validate_pb2.required)
            and oneof_options.Extensions[validate_pb2.required]
            and message.WhichOneof(oneof.name) is None
        ):
            names = ", ".join(f.name for f in oneof.fields)
            raise _fail(_join(path, oneof.name), f"one of [{names}] is required", descriptor)
    for field in descriptor.fields:
        field_options = field.GetOptions()
        if not field_options.HasExtension(validate_pb2.rules):
            continue
        oneof = field.containing_oneof
        if oneof is not None and message.WhichOneof(oneof.name) != field.name:
            continue  # PGV checks a oneof member only when it is the one set
        rules = field_options.Extensions[validate_pb2.rules]
        field_path = _join(path, field.name)
        value = getattr(message, field.name)
        if field.is_repeated:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                _check_map(rules, value, field, field_path, descriptor)
            else:
                _check_repeated(rules, value, field, field_path, descriptor)
            continue
        has = message.HasField(field.name) if field.has_presence else True
        _check_value(rules, value, has, field, field_path, descriptor)


def _check_repeated(
    rules: Any, values: Sequence[Any], field: FieldDescriptor, path: str, owner: Descriptor
) -> None:
    if rules.HasField("repeated"):
        rep = rules.repeated
        if rep.ignore_empty and not values:
            return
        if rep.HasField("min_items") and len(values) < rep.min_items:
            raise _fail(path, f"value must contain at least {rep.min_items} item(s)", owner)
        if rep.HasField("max_items") and len(values) > rep.max_items:
            raise _fail(path, f"value must contain no more than {rep.max_items} item(s)", owner)
        if rep.unique and field.message_type is None and len(set(values)) != len(values):
            raise _fail(path, "repeated value must contain unique items", owner)
        if rep.HasField("items"):
            for index, item in enumerate(values):
                _check_value(rep.items, item, True, field, f"{path}[{index}]", owner)


def _check_map(
    rules: Any, mapping: Any, field: FieldDescriptor, path: str, owner: Descriptor
) -> None:
    if not rules.HasField("map"):
        return
    map_rules = rules.map
    if map_rules.ignore_empty and not mapping:
        return
    if map_rules.HasField("min_pairs") and len(mapping) < map_rules.min_pairs:
        raise _fail(path, f"value must contain at least {map_rules.min_pairs} pair(s)", owner)
    if map_rules.HasField("max_pairs") and len(mapping) > map_rules.max_pairs:
        raise _fail(path, f"value must contain no more than {map_rules.max_pairs} pair(s)", owner)
    key_field = field.message_type.fields_by_name["key"]
    value_field = field.message_type.fields_by_name["value"]
    for key in mapping:
        if map_rules.HasField("keys"):
            _check_value(map_rules.keys, key, True, key_field, f"{path}[{key}]", owner)
        if map_rules.HasField("values"):
            _check_value(map_rules.values, mapping[key], True, value_field, f"{path}[{key}]", owner)


def _check_value(
    rules: Any, value: Any, has: bool, field: FieldDescriptor, path: str, owner: Descriptor
) -> None:
    kind = rules.WhichOneof("type")
    if rules.HasField("message") and rules.message.required and not has:
        raise _fail(path, "value is required", owner)
    if kind is None:
        return
    specific = getattr(rules, kind)
    if kind == "duration":
        if not has:
            if specific.required:
                raise _fail(path, "value is required", owner)
            return
        _check_numeric(specific, _duration_seconds(value), path, owner, _duration_seconds)
        return
    if kind == "any":
        if not has:
            if specific.required:
                raise _fail(path, "value is required", owner)
            return
        allowed = list(getattr(specific, "in"))
        if allowed and value.type_url not in allowed:
            raise _fail(path, f"type URL must be in list {allowed}", owner)
        if value.type_url in specific.not_in:
            raise _fail(path, f"type URL must not be in list {list(specific.not_in)}", owner)
        return
    if kind == "timestamp":
        return
    if field.message_type is not None and field.message_type.full_name in _WRAPPERS:
        if not has:
            return
        value = value.value
    if kind == "string":
        _check_string(specific, value, path, owner)
    elif kind == "bytes":
        _check_bytes(specific, value, path, owner)
    elif kind == "enum":
        _check_enum(specific, value, field, path, owner)
    elif kind == "bool":
        if specific.HasField("const") and value != specific.const:
            raise _fail(path, f"value must equal {specific.const}", owner)
    else:
        if getattr(specific, "ignore_empty", False) and not value:
            return
        _check_numeric(specific, value, path, owner, lambda v: v)


def _check_numeric(specific: Any, value: Any, path: str, owner: Descriptor, conv: Any) -> None:
    def bound(name: str) -> Any:
        return conv(getattr(specific, name)) if specific.HasField(name) else None

    const = bound("const")
    if const is not None and value != const:
        raise _fail(path, f"value must equal {const}", owner)
    gt, gte, lt, lte = bound("gt"), bound("gte"), bound("lt"), bound("lte")
    if gt is not None and not value > gt:
        raise _fail(path, f"value must be greater than {gt}", owner)
    if gte is not None and not value >= gte:
        raise _fail(path, f"value must be greater than or equal to {gte}", owner)
    if lt is not None and not value < lt:
        raise _fail(path, f"value must be less than {lt}", owner)
    if lte is not None and not value <= lte:
        raise _fail(path, f"value must be less than or equal to {lte}", owner)
    values_in = [conv(v) for v in getattr(specific, "in")]
    if values_in and value not in values_in:
        raise _fail(path, f"value must be in list {values_in}", owner)
    if value in [conv(v) for v in specific.not_in]:
        raise _fail(path, "value must not be in the forbidden list", owner)


def _check_enum(
    specific: Any, value: int, field: FieldDescriptor, path: str, owner: Descriptor
) -> None:
    if specific.defined_only and value not in field.enum_type.values_by_number:
        raise _fail(path, "value must be one of the defined enum values", owner)
    if specific.HasField("const") and value != specific.const:
        raise _fail(path, f"value must equal {specific.const}", owner)
    values_in = list(getattr(specific, "in"))
    if values_in and value not in values_in:
        raise _fail(path, f"value must be in list {values_in}", owner)
    if value in specific.not_in:
        raise _fail(path, "value must not be in the forbidden list", owner)


def _check_string(specific: Any, value: str, path: str, owner: Descriptor) -> None:
    if specific.ignore_empty and not value:
        return
    runes = len(value)
    size = len(value.encode())
    has = specific.HasField
    values_in = list(getattr(specific, "in"))
    checks: list[tuple[bool, str]] = [
        (has("const") and value != specific.const, f"value must equal {specific.const!r}"),
        (has("len") and runes != specific.len, f"value length must be {specific.len} runes"),
        (
            has("min_len") and runes < specific.min_len,
            f"value length must be at least {specific.min_len} runes",
        ),
        (
            has("max_len") and runes > specific.max_len,
            f"value length must be at most {specific.max_len} runes",
        ),
        (
            has("min_bytes") and size < specific.min_bytes,
            f"value length must be at least {specific.min_bytes} bytes",
        ),
        (
            has("max_bytes") and size > specific.max_bytes,
            f"value length must be at most {specific.max_bytes} bytes",
        ),
        (
            has("prefix") and not value.startswith(specific.prefix),
            f"value does not have prefix {specific.prefix!r}",
        ),
        (
            has("suffix") and not value.endswith(specific.suffix),
            f"value does not have suffix {specific.suffix!r}",
        ),
        (
            has("contains") and specific.contains not in value,
            f"value does not contain {specific.contains!r}",
        ),
        (
            has("not_contains") and specific.not_contains in value,
            f"value contains {specific.not_contains!r}",
        ),
        (bool(values_in) and value not in values_in, f"value must be in list {values_in}"),
        (value in specific.not_in, "value must not be in the forbidden list"),
        (
            has("pattern") and re.search(specific.pattern, value) is None,
            f"value does not match regex pattern {specific.pattern!r}",
        ),
    ]
    for failed, message in checks:
        if failed:
            raise _fail(path, message, owner)
    well_known = specific.WhichOneof("well_known")
    if well_known == "well_known_regex":
        strict = specific.strict if specific.HasField("strict") else True
        if specific.well_known_regex == validate_pb2.HTTP_HEADER_NAME:
            pattern = _HEADER_NAME_STRICT if strict else _HEADER_LOOSE
            if pattern.match(value) is None:
                raise _fail(path, "value does not match regex pattern for header names", owner)
        elif specific.well_known_regex == validate_pb2.HTTP_HEADER_VALUE:
            pattern = _HEADER_VALUE_STRICT if strict else _HEADER_LOOSE
            if pattern.match(value) is None:
                raise _fail(path, "value does not match regex pattern for header values", owner)
    elif (
        well_known in ("ip", "ipv4", "ipv6", "address", "hostname")
        and getattr(specific, well_known)
        and not _well_known_ok(well_known, value)
    ):
        raise _fail(path, f"value must be a valid {well_known}", owner)


def _well_known_ok(kind: str, value: str) -> bool:
    if kind == "hostname":
        return _HOSTNAME.match(value) is not None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return kind == "address" and _HOSTNAME.match(value) is not None
    if kind == "ipv4":
        return address.version == 4
    if kind == "ipv6":
        return address.version == 6
    return True


def _check_bytes(specific: Any, value: bytes, path: str, owner: Descriptor) -> None:
    if specific.ignore_empty and not value:
        return
    if specific.HasField("min_len") and len(value) < specific.min_len:
        raise _fail(path, f"value length must be at least {specific.min_len} bytes", owner)
    if specific.HasField("max_len") and len(value) > specific.max_len:
        raise _fail(path, f"value length must be at most {specific.max_len} bytes", owner)
