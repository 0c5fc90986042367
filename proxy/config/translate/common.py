"""Conversions shared by every translator: paths, durations, percentages, matchers, headers,
regexes (RE2 → Python), data sources, metadata, addresses."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from proxy.config.model import (
    CidrRange,
    ConfigSource,
    HeaderAppendAction,
    HeaderMatcher,
    HeaderValueOption,
    Int64Range,
    Locality,
    PipeAddress,
    QueryParameterMatcher,
    SocketAddress,
    StringMatcher,
    StringMatchKind,
)
from proxy.config.translate.regex import regex_matcher
from pymesh.errors import UnsupportedError, ValidationError

__all__ = [
    "api_version",
    "at",
    "cidr_range",
    "config_source",
    "data_source",
    "duration",
    "fractional_percent",
    "frozen_mapping",
    "header_matcher",
    "header_mutations",
    "header_name",
    "header_value_options",
    "headers_to_remove",
    "join",
    "listener_address",
    "locality",
    "metadata",
    "opt_duration",
    "percent",
    "query_parameter_matcher",
    "socket_address",
    "string_matcher",
    "struct_to_dict",
    "wrapped",
]

_DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}


def join(path: str, name: str) -> str:
    """``a.b`` + ``c`` → ``a.b.c`` (an empty base gives just ``c``)."""
    return f"{path}.{name}" if path else name


def at(path: str, index: int | str) -> str:
    return f"{path}[{index}]"


def frozen_mapping(items: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(items))


# --- scalars -------------------------------------------------------------------------------


def duration(value: Any) -> float:
    """A ``google.protobuf.Duration`` in float seconds."""
    return float(value.seconds) + float(value.nanos) / 1e9


def opt_duration(message: Message, field: str) -> float | None:
    return duration(getattr(message, field)) if message.HasField(field) else None


def wrapped(message: Message, field: str, default: Any) -> Any:
    """The value of a ``google.protobuf.*Value`` wrapper field, or ``default`` when unset."""
    return getattr(message, field).value if message.HasField(field) else default


def fractional_percent(value: Any) -> float:
    """``type.v3.FractionalPercent`` → fraction 0..1 (Envoy caps at 100 %)."""
    return min(1.0, float(value.numerator) / _DENOMINATORS[value.denominator])


def percent(message: Message, field: str, default: float) -> float:
    """A ``type.v3.Percent`` (0..100) field → fraction 0..1."""
    return getattr(message, field).value / 100.0 if message.HasField(field) else default


def struct_to_dict(value: Message) -> dict[str, Any]:
    result = json_format.MessageToDict(value, preserving_proto_field_name=True)
    assert isinstance(result, dict)
    return result


def metadata(message: Message, field: str = "metadata") -> Mapping[str, Any]:
    """``config.core.v3.Metadata.filter_metadata`` as a read-only dict of plain JSON values."""
    if not message.HasField(field):
        return MappingProxyType({})
    meta = getattr(message, field)
    return MappingProxyType(
        {key: struct_to_dict(meta.filter_metadata[key]) for key in meta.filter_metadata}
    )


# --- regexes -------------------------------------------------------------------------------

# --- matchers ------------------------------------------------------------------------------


def string_matcher(message: Any, path: str) -> StringMatcher:
    kind = message.WhichOneof("match_pattern")
    if kind is None:
        raise ValidationError(
            "one of [exact, prefix, suffix, safe_regex, contains] is required", path=path
        )
    if kind == "custom":
        raise UnsupportedError(
            f"custom string matcher '{message.custom.name}' is not supported by pymesh",
            path=join(path, "custom"),
        )
    if kind == "safe_regex":
        regex = regex_matcher(message.safe_regex, join(path, "safe_regex"))
        return StringMatcher(StringMatchKind.REGEX, regex.pattern, regex=regex)
    value: str = getattr(message, kind)
    if kind != "exact" and not value:
        # PGV: prefix/suffix/contains have min_len 1
        raise ValidationError("value length must be at least 1 runes", path=join(path, kind))
    encoded = value.lower().encode() if message.ignore_case else value.encode()
    return StringMatcher(StringMatchKind(kind), encoded, ignore_case=message.ignore_case)


def header_name(name: str, path: str) -> bytes:
    return name.lower().encode()


_DEPRECATED_HEADER_MATCHES = {
    "exact_match": StringMatchKind.EXACT,
    "prefix_match": StringMatchKind.PREFIX,
    "suffix_match": StringMatchKind.SUFFIX,
    "contains_match": StringMatchKind.CONTAINS,
}


def header_matcher(message: Any, path: str) -> HeaderMatcher:
    name = header_name(message.name, join(path, "name"))
    kind = message.WhichOneof("header_match_specifier")
    common = {
        "invert_match": message.invert_match,
        "treat_missing_header_as_empty": message.treat_missing_header_as_empty,
    }
    if kind is None:
        return HeaderMatcher(name, present_match=True, **common)
    if kind == "present_match":
        return HeaderMatcher(name, present_match=message.present_match, **common)
    if kind == "range_match":
        return HeaderMatcher(
            name,
            range_match=Int64Range(message.range_match.start, message.range_match.end),
            **common,
        )
    if kind == "string_match":
        matcher = string_matcher(message.string_match, join(path, "string_match"))
    elif kind == "safe_regex_match":
        regex = regex_matcher(message.safe_regex_match, join(path, kind))
        matcher = StringMatcher(StringMatchKind.REGEX, regex.pattern, regex=regex)
    else:
        value: str = getattr(message, kind)
        matcher = StringMatcher(_DEPRECATED_HEADER_MATCHES[kind], value.encode())
    return HeaderMatcher(name, string_match=matcher, **common)


def query_parameter_matcher(message: Any, path: str) -> QueryParameterMatcher:
    matcher = (
        string_matcher(message.string_match, join(path, "string_match"))
        if message.HasField("string_match")
        else None
    )
    return QueryParameterMatcher(message.name.encode(), matcher)


# --- header mutations ----------------------------------------------------------------------


def _check_mutable(name: bytes, path: str) -> None:
    # Envoy: ":-prefixed or host headers may not be modified" (HeaderParser).
    if name.startswith(b":") or name == b"host":
        raise ValidationError(
            f"invalid header mutation: {name.decode()!r}: ':-prefixed' or host headers may not "
            "be modified",
            path=path,
        )


def _is_dynamic(value: str) -> bool:
    return "%" in value.replace("%%", "")


def header_value_options(items: Iterable[Any], path: str) -> tuple[HeaderValueOption, ...]:
    """``config.core.v3.HeaderValueOption`` list (the deprecated ``append`` is mapped)."""
    result = []
    for index, item in enumerate(items):
        item_path = at(path, index)
        header = item.header
        key = header.key.lower().encode()
        _check_mutable(key, join(item_path, "header.key"))
        raw = header.raw_value.decode("latin-1") if header.raw_value else header.value
        if item.HasField("append"):
            if item.append_action != 0:
                raise ValidationError(
                    "Both append and append_action are set and it's not allowed", path=item_path
                )
            action = (
                HeaderAppendAction.APPEND_IF_EXISTS_OR_ADD
                if item.append.value
                else HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
            )
        else:
            action = HeaderAppendAction(type(item).HeaderAppendAction.Name(item.append_action))
        result.append(
            HeaderValueOption(
                key=key,
                value=raw.encode("latin-1", errors="strict") if header.raw_value else raw.encode(),
                append_action=action,
                keep_empty_value=item.keep_empty_value,
                dynamic=_is_dynamic(raw),
            )
        )
    return tuple(result)


def headers_to_remove(names: Iterable[str], path: str) -> tuple[bytes, ...]:
    result = []
    for index, name in enumerate(names):
        encoded = name.lower().encode()
        _check_mutable(encoded, at(path, index))
        result.append(encoded)
    return tuple(result)


# --- data sources, addresses ---------------------------------------------------------------


def data_source(message: Any, path: str) -> tuple[bytes, str | None]:
    """``config.core.v3.DataSource`` → (contents, file name if any); files are read now, as
    Envoy reads them at load."""
    kind = message.WhichOneof("specifier")
    if kind == "inline_string":
        return message.inline_string.encode(), None
    if kind == "inline_bytes":
        return bytes(message.inline_bytes), None
    if kind == "filename":
        try:
            return Path(message.filename).read_bytes(), message.filename
        except OSError as exc:
            raise ValidationError(
                f"Invalid path: {message.filename} ({exc.strerror})", path=join(path, "filename")
            ) from None
    if kind is None:
        return b"", None
    raise UnsupportedError(
        f"data source '{kind}' is not supported by pymesh", path=join(path, kind)
    )


def socket_address(message: Any, path: str, *, resolve: bool = False) -> SocketAddress:
    """``config.core.v3.SocketAddress`` (TCP, numeric port). ``resolve`` allows a DNS name."""
    if message.protocol != 0:
        raise UnsupportedError(
            "UDP socket addresses are not supported by pymesh", path=join(path, "protocol")
        )
    if message.WhichOneof("port_specifier") != "port_value" and message.named_port:
        raise UnsupportedError(
            "named_port is not supported by pymesh", path=join(path, "named_port")
        )
    if not resolve:
        try:
            ipaddress.ip_address(message.address)
        except ValueError:
            raise ValidationError(
                f"malformed IP address: {message.address}", path=join(path, "address")
            ) from None
    return SocketAddress(message.address, message.port_value, message.ipv4_compat)


def listener_address(message: Any, path: str) -> SocketAddress | PipeAddress:
    """``config.core.v3.Address`` of a listener: a socket address or a pipe."""
    kind = message.WhichOneof("address")
    if kind == "socket_address":
        return socket_address(message.socket_address, join(path, "socket_address"))
    if kind == "pipe":
        return PipeAddress(message.pipe.path, message.pipe.mode)
    if kind is None:
        raise ValidationError("address is required", path=path)
    raise UnsupportedError(
        f"address kind '{kind}' is not supported by pymesh", path=join(path, kind)
    )


def cidr_range(message: Any, path: str) -> CidrRange:
    prefix_len = (
        message.prefix_len.value
        if message.HasField("prefix_len")
        else _full_len(message.address_prefix)
    )
    try:
        network = ipaddress.ip_network(f"{message.address_prefix}/{prefix_len}", strict=False)
    except ValueError as exc:
        raise ValidationError(f"malformed IP address range: {exc}", path=path) from None
    return CidrRange(message.address_prefix, network.prefixlen, network)


def _full_len(address: str) -> int:
    return 128 if ":" in address else 32


def locality(message: Any) -> Locality:
    return Locality(message.region, message.zone, message.sub_zone)


def api_version(message: Any, field: str, path: str) -> str:
    """An ``ApiVersion`` field: AUTO means V3 today; V2 is gone from Envoy and pymesh."""
    name: str = (
        message.DESCRIPTOR.fields_by_name[field]
        .enum_type.values_by_number[getattr(message, field)]
        .name
    )
    if name == "V2":
        raise UnsupportedError("xDS v2 is not supported by pymesh (use V3)", path=join(path, field))
    return "V3"


def config_source(message: Any, path: str, *, api: bool = False) -> ConfigSource:
    """ADS (``ads: {}``); with ``api`` (SDS) also a gRPC ``api_config_source`` to one
    static cluster. Paths and REST sources are not supported."""
    kind = message.WhichOneof("config_source_specifier")
    if api and kind == "api_config_source":
        return _api_config_source(message, path)
    if kind != "ads":
        raise UnsupportedError(
            f"config source '{kind}' is not supported by pymesh (use 'ads: {{}}')",
            path=join(path, kind or "config_source_specifier"),
        )
    timeout = opt_duration(message, "initial_fetch_timeout")
    return ConfigSource(
        ads=True,
        resource_api_version=api_version(message, "resource_api_version", path),
        initial_fetch_timeout=15.0 if timeout is None else timeout,
    )


def _api_config_source(message: Any, path: str) -> ConfigSource:
    source = message.api_config_source
    source_path = join(path, "api_config_source")
    if source.api_type != 2 or source.transport_api_version != 2:  # GRPC, V3
        raise UnsupportedError(
            "only api_type GRPC with transport_api_version V3 is supported by pymesh",
            path=join(source_path, "api_type"),
        )
    services = source.grpc_services
    if len(services) != 1 or services[0].WhichOneof("target_specifier") != "envoy_grpc":
        raise UnsupportedError(
            "pymesh needs exactly one grpc_services entry with envoy_grpc",
            path=join(source_path, "grpc_services"),
        )
    timeout = opt_duration(message, "initial_fetch_timeout")
    return ConfigSource(
        ads=False,
        resource_api_version=api_version(message, "resource_api_version", path),
        initial_fetch_timeout=15.0 if timeout is None else timeout,
        api_cluster=services[0].envoy_grpc.cluster_name,
    )


def header_mutations(proto: Any, path: str) -> dict[str, Any]:
    """The four ``*_headers_to_add/remove`` fields that route configs, virtual hosts, routes
    and weighted clusters share, as keyword arguments for their model."""
    return {
        "request_headers_to_add": header_value_options(
            proto.request_headers_to_add, join(path, "request_headers_to_add")
        ),
        "request_headers_to_remove": headers_to_remove(
            proto.request_headers_to_remove, join(path, "request_headers_to_remove")
        ),
        "response_headers_to_add": header_value_options(
            proto.response_headers_to_add, join(path, "response_headers_to_add")
        ),
        "response_headers_to_remove": headers_to_remove(
            proto.response_headers_to_remove, join(path, "response_headers_to_remove")
        ),
    }
