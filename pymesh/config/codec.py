"""Schema-driven conversion between plain YAML/JSON data and the frozen spec dataclasses.

The dataclass definitions are the schema: :func:`decode` walks them, rejects unknown fields and
wrong types, enforces ``required`` and proto ``oneof`` groups, parses durations, and warns about
deprecated fields. :func:`encode` is the inverse (proto3 JSON: defaults are omitted), used for
``pymesh get`` and for content hashing.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Hashable, Mapping
from enum import Enum
from typing import Any, TypeVar, cast

from pymesh.config.durations import format_duration, parse_duration_ns
from pymesh.config.issues import Reporter, join_path
from pymesh.config.model.common import FieldInfo, FrozenMap, field_info

__all__ = ["camel_name", "decode", "encode", "type_name"]

T = TypeVar("T")

_NS_PER_MS = 1_000_000


def camel_name(attr: str) -> str:
    """``per_try_timeout`` -> ``perTryTimeout`` (protobuf's JSON name rule)."""
    head, *rest = attr.rstrip("_").split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    attr: str
    json: str
    names: tuple[str, ...]
    tp: Any
    info: FieldInfo
    default: Any


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    fields: tuple[_Field, ...]
    by_name: Mapping[str, _Field]
    oneofs: tuple[tuple[str, ...], ...]
    lenient: bool


# A memo of pure introspection over immutable class definitions, not configuration state.
@functools.cache
def _plan(cls: type[Any]) -> _Plan:
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        info = field_info(f)
        json = info.json or camel_name(f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        fields.append(_Field(f.name, json, (json, *info.aliases), hints[f.name], info, default))
    by_name = {name: fld for fld in fields for name in fld.names}
    oneofs: tuple[tuple[str, ...], ...] = getattr(cls, "ONEOFS", ())
    # Kubernetes kinds are partial views: fields pymesh does not model are skipped.
    lenient: bool = getattr(cls, "LENIENT", False)
    return _Plan(tuple(fields), by_name, oneofs, lenient)


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def decode(cls: type[T], raw: object, path: str, rep: Reporter) -> T:
    """Build ``cls`` from plain data, failing through ``rep`` with the field path on error."""
    if not isinstance(raw, dict):
        rep.fail(path, f"expected a mapping, got {type_name(raw)}")
    # mypy does not consider classes Hashable, which functools.cache requires.
    plan = _plan(cast(Hashable, cls))
    values: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            rep.fail(path, f"field names must be strings, got {type_name(key)} {key!r}")
        fld = plan.by_name.get(key)
        if fld is None:
            if plan.lenient:
                continue
            rep.fail(join_path(path, key), _unknown_field_message(key, plan))
        if fld.attr in seen:
            rep.fail(join_path(path, key), f"{key!r} and {seen[fld.attr]!r} set the same field")
        seen[fld.attr] = key
        # Paths name the key as written (an alias such as ``mirror_percent`` included).
        fpath = join_path(path, key)
        if fld.info.deprecated is not None:
            rep.warn(fpath, f"{fld.json} is deprecated: {fld.info.deprecated}")
        if value is None:
            # An explicit null means "unset", as in protobuf JSON.
            continue
        values[fld.attr] = _convert(fld.tp, value, fpath, fld.info, rep)
        if fld.info.non_empty and not values[fld.attr]:
            rep.fail(fpath, "must not be empty when set")
    for fld in plan.fields:
        if fld.info.required and fld.attr not in values:
            rep.fail(join_path(path, fld.json), "required field is missing")
    for group in plan.oneofs:
        present = [g for g in group if values.get(g) is not None]
        if len(present) > 1:
            names = ", ".join(_json_of(plan, g) for g in group)
            rep.fail(path, f"only one of {names} may be set")
    return cls(**values)


def _json_of(plan: _Plan, attr: str) -> str:
    return next(f.json for f in plan.fields if f.attr == attr)


def _unknown_field_message(key: str, plan: _Plan) -> str:
    known = sorted({f.json for f in plan.fields})
    camel = camel_name(key)
    if camel != key and camel in known:
        return f"unknown field {key!r}; did you mean {camel!r}?"
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown field {key!r}{hint} (known fields: {', '.join(known)})"


def _convert(tp: Any, raw: object, path: str, info: FieldInfo, rep: Reporter) -> Any:
    origin = typing.get_origin(tp)
    if origin is types.UnionType or origin is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], raw, path, info, rep)
        if set(inner) == {int, str}:
            if isinstance(raw, (int, str)) and not isinstance(raw, bool):
                return raw
            rep.fail(path, f"expected an integer or a string, got {type_name(raw)}")
        raise TypeError(f"unsupported union {tp!r}")
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(raw, list):
            rep.fail(path, f"expected a list, got {type_name(raw)}")
        items = []
        for i, item in enumerate(raw):
            ipath = f"{path}[{i}]"
            if item is None:
                rep.fail(ipath, "list entries must not be null")
            items.append(_convert(item_tp, item, ipath, info, rep))
        return tuple(items)
    if origin is FrozenMap:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(raw, dict):
            rep.fail(path, f"expected a mapping, got {type_name(raw)}")
        out: dict[Any, Any] = {}
        for key, value in raw.items():
            kpath = f"{path}[{key}]"
            k = _convert_key(key_tp, key, kpath, rep)
            if value_tp is object:
                out[k] = _freeze(value)  # JSON null is a Struct value like any other
                continue
            if value is None and value_tp is not str:
                rep.fail(kpath, "value must not be null")
            out[k] = _convert(value_tp, "" if value is None else value, kpath, info, rep)
        return FrozenMap(out)
    if tp is object:
        return _freeze(raw)
    if info.duration:
        return _duration(raw, path, info, rep)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return decode(tp, raw, path, rep)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return _enum(tp, raw, path, rep)
    if tp is bool:
        if not isinstance(raw, bool):
            rep.fail(path, f"expected true or false, got {type_name(raw)} {raw!r}")
        return raw
    if tp is int:
        if not isinstance(raw, int) or isinstance(raw, bool):
            rep.fail(path, f"expected an integer, got {type_name(raw)} {raw!r}")
        if info.unsigned and raw < 0:
            rep.fail(path, f"must not be negative, got {raw}")
        if not -(2**63) <= raw < 2**64:
            rep.fail(path, f"integer {raw} is out of range")
        return raw
    if tp is float:
        if not isinstance(raw, (int, float)) or isinstance(raw, bool):
            rep.fail(path, f"expected a number, got {type_name(raw)} {raw!r}")
        return float(raw)
    if tp is str:
        if not isinstance(raw, str):
            rep.fail(path, f"expected a string, got {type_name(raw)} {raw!r} (quote it)")
        return raw
    if tp is bytes:
        if not isinstance(raw, str):
            rep.fail(path, f"expected base64 text, got {type_name(raw)}")
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            rep.fail(path, "invalid base64 data")
    raise TypeError(f"unsupported field type {tp!r} at {path}")


def _freeze(raw: object) -> object:
    """Free-form JSON (``Struct`` values) as immutable, hashable data."""
    if isinstance(raw, dict):
        return FrozenMap((k, _freeze(v)) for k, v in raw.items())
    if isinstance(raw, list):
        return tuple(_freeze(v) for v in raw)
    return raw


def _convert_key(key_tp: Any, key: object, path: str, rep: Reporter) -> Any:
    if key_tp is int:
        if isinstance(key, int) and not isinstance(key, bool):
            return key
        if isinstance(key, str) and key.isdigit():
            return int(key)
        rep.fail(path, f"map keys must be integers, got {key!r}")
    if not isinstance(key, str):
        rep.fail(path, f"map keys must be strings, got {type_name(key)} {key!r} (quote it)")
    return key


def _duration(raw: object, path: str, info: FieldInfo, rep: Reporter) -> float:
    if not isinstance(raw, str):
        rep.fail(path, f"duration must be a string such as '1s' or '500ms', got {raw!r}")
    try:
        ns = parse_duration_ns(raw)
    except ValueError as e:
        rep.fail(path, str(e))
    if ns < 0:
        rep.fail(path, f"duration {raw!r} must not be negative")
    if not (info.zero_ok and ns == 0):
        if ns < _NS_PER_MS:
            rep.fail(path, f"duration {raw!r} must be at least 1ms")
        if ns % _NS_PER_MS:
            rep.fail(path, f"duration {raw!r} has sub-millisecond precision; only ms is supported")
    return ns / 1e9


def _enum(tp: type[Enum], raw: object, path: str, rep: Reporter) -> Enum:
    if isinstance(raw, str):
        try:
            return tp(raw)
        except ValueError:
            pass
    allowed = ", ".join(str(m.value) for m in tp)
    rep.fail(path, f"invalid value {raw!r}; expected one of {allowed}")


def encode(obj: Any) -> Any:
    """Plain JSON-compatible data for a spec object, omitting unset and default fields."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for fld in _plan(type(obj)).fields:
            value = getattr(obj, fld.attr)
            if value is None or (value == fld.default and fld.default is not None):
                continue
            if fld.info.duration:
                out[fld.json] = format_duration(value)
            else:
                out[fld.json] = encode(value)
        return out
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, (tuple, list)):
        return [encode(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: encode(v) for k, v in obj.items()}
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    return obj
