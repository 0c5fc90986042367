"""The HTTP filter registry: built-ins, a user filter's own translator, per-route configs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from google.protobuf import any_pb2, json_format  # type: ignore[import-untyped]

from proxy.config.model import FaultConfig, FilterDisabled, RouterConfig
from proxy.config.translate import FilterEntry, default_registry, translate_route_configuration
from proxy.config.translate.common import join
from pymesh.errors import UnsupportedError, ValidationError

BUFFER_URL = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"
BUFFER_PER_ROUTE_URL = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute"


@dataclass(frozen=True, slots=True)
class BufferConfig:
    max_request_bytes: int


def _buffer(message: Any, path: str) -> BufferConfig:
    if not message.HasField("max_request_bytes"):
        raise ValidationError("max_request_bytes is required", path=join(path, "max_request_bytes"))
    return BufferConfig(message.max_request_bytes.value)


def _pack_unknown_field() -> any_pb2.Any:
    # BufferPerRoute is a different message: its type URL is unknown to the registry
    message = json_format.ParseDict({"disabled": True}, buffer_pb2.BufferPerRoute())
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _route_config(per_filter: dict[str, Any]) -> route_pb2.RouteConfiguration:
    return json_format.ParseDict(
        {
            "name": "r",
            "virtual_hosts": [
                {
                    "name": "v",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {"cluster": "c"},
                            "typed_per_filter_config": per_filter,
                        }
                    ],
                }
            ],
        },
        route_pb2.RouteConfiguration(),
    )


def test_builtin_lookup_by_type_url_and_by_name() -> None:
    registry = default_registry()
    entry, config = registry.translate("envoy.filters.http.router", None, "http_filters[0]")
    assert entry.terminal
    assert config == RouterConfig()
    assert registry.lookup("anything", entry.type_url, "p") is entry


def test_unknown_filter_names_type_url() -> None:
    with pytest.raises(UnsupportedError) as caught:
        default_registry().lookup("my.filter", BUFFER_URL, "http_filters[2]")
    assert caught.value.path == "http_filters[2]"
    assert f"filter 'my.filter' ({BUFFER_URL}) is not supported by pymesh" in str(caught.value)


def test_a_user_filter_registers_its_own_translator() -> None:
    registry = default_registry()
    registry.register(
        FilterEntry(
            "example.buffer",
            buffer_pb2.Buffer,
            _buffer,
            per_route_message=buffer_pb2.Buffer,
            per_route=_buffer,
            supported={
                "envoy.extensions.filters.http.buffer.v3.Buffer": frozenset({"max_request_bytes"})
            },
        )
    )
    any_config = any_pb2.Any()
    any_config.Pack(json_format.ParseDict({"max_request_bytes": 1024}, buffer_pb2.Buffer()))
    entry, config = registry.translate("buffer", any_config, "http_filters[0]")
    assert entry.name == "example.buffer"
    assert config == BufferConfig(1024)
    # default_registry() builds a fresh object: nothing leaked into it
    with pytest.raises(UnsupportedError):
        default_registry().lookup("buffer", BUFFER_URL, "p")
    # a type URL nobody registered stays unsupported
    with pytest.raises(UnsupportedError):
        registry.translate("buffer", _pack_unknown_field(), "http_filters[0]")


def test_a_user_filter_must_declare_the_fields_it_implements() -> None:
    registry = default_registry()
    registry.register(FilterEntry("example.buffer", buffer_pb2.Buffer, _buffer))
    any_config = any_pb2.Any()
    any_config.Pack(json_format.ParseDict({"max_request_bytes": 1024}, buffer_pb2.Buffer()))
    with pytest.raises(UnsupportedError) as caught:
        registry.translate("buffer", any_config, "http_filters[0]")
    assert caught.value.path == "http_filters[0].typed_config.max_request_bytes"


def test_per_route_configs_are_translated_or_disabled() -> None:
    route_config = _route_config(
        {
            "envoy.filters.http.fault": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "abort": {"http_status": 503, "percentage": {"numerator": 5}},
            },
            "envoy.filters.http.cors": {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "disabled": True,
            },
        }
    )
    result = translate_route_configuration(route_config, default_registry())
    per_filter = result.virtual_hosts[0].routes[0].typed_per_filter_config
    fault = per_filter["envoy.filters.http.fault"]
    assert isinstance(fault, FaultConfig)
    assert fault.abort is not None
    assert fault.abort.http_status == 503
    assert fault.abort.percentage == pytest.approx(0.05)
    assert per_filter["envoy.filters.http.cors"] == FilterDisabled()


def test_unknown_per_route_config_is_unsupported_unless_optional() -> None:
    wrapped = {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "config": {"@type": BUFFER_PER_ROUTE_URL, "disabled": True},
    }
    with pytest.raises(UnsupportedError) as caught:
        translate_route_configuration(_route_config({"buffer": wrapped}), default_registry())
    assert caught.value.path == (
        "virtual_hosts[0].routes[0].typed_per_filter_config[buffer].config"
    )
    optional = dict(wrapped, is_optional=True)
    result = translate_route_configuration(_route_config({"buffer": optional}), default_registry())
    assert dict(result.virtual_hosts[0].routes[0].typed_per_filter_config) == {}


def test_filter_config_checks_its_fields() -> None:
    route_config = _route_config(
        {
            "envoy.filters.http.fault": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "response_rate_limit": {"fixed_limit": {"limit_kbps": 10}},
            }
        }
    )
    with pytest.raises(UnsupportedError) as caught:
        translate_route_configuration(route_config, default_registry())
    assert caught.value.path == (
        "virtual_hosts[0].routes[0].typed_per_filter_config[envoy.filters.http.fault]"
        ".response_rate_limit"
    )
