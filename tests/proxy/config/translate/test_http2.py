"""HTTP/2 options as the translator reads them: ``http2_protocol_options`` on the connection
manager, the cluster's protocol selection (``typed_extension_protocol_options``), and the
refusals that keep HTTP/2 off the data path until connections speak it."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format  # type: ignore[import-untyped]

from proxy.codec.h2_settings import H2Keepalive, H2Settings
from proxy.config.model import HttpConnectionManager, UpstreamProtocol
from proxy.config.model_http import CodecType
from proxy.config.translate import default_registry, translate_cluster, translate_listener
from proxy.config.translate.parse import parse_message
from pymesh.errors import UnsupportedError, ValidationError

_TYPE = "type.googleapis.com/"
HCM = _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HCM_PATH = "filter_chains[0].filters[0].typed_config"


def _hcm(**fields: Any) -> HttpConnectionManager:
    config = {
        "@type": HCM,
        "stat_prefix": "in",
        "route_config": {"name": "r", "virtual_hosts": []},
        **fields,
    }
    data = {
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": config}]}],
    }
    listener = translate_listener(parse_message(data, listener_pb2.Listener), default_registry())
    manager = listener.filter_chains[0].filters[0].config
    assert isinstance(manager, HttpConnectionManager)
    return manager


def _cluster(options: dict[str, Any], **extra: Any) -> Any:
    data = {
        "name": "c",
        "type": "STATIC",
        "typed_extension_protocol_options": {
            OPTIONS_KEY: {"@type": _TYPE + OPTIONS_KEY, **options}
        },
        **extra,
    }
    return translate_cluster(json_format.ParseDict(data, cluster_pb2.Cluster()))


def test_downstream_defaults_are_envoys() -> None:
    settings = _hcm().http2_protocol_options
    assert settings == H2Settings()
    assert (settings.max_concurrent_streams, settings.initial_stream_window_size) == (1024, 2**24)


def test_downstream_options_and_header_limits() -> None:
    settings = _hcm(
        max_request_headers_kb=96,
        common_http_protocol_options={"max_headers_count": 50},
        http2_protocol_options={
            "hpack_table_size": 0,
            "max_concurrent_streams": 100,
            "initial_stream_window_size": 65536,
            "initial_connection_window_size": 1048576,
            "allow_connect": True,
            "max_outbound_frames": 500,
            "max_outbound_control_frames": 50,
            "max_consecutive_inbound_frames_with_empty_payload": 3,
            "override_stream_error_on_invalid_http_message": True,
            "connection_keepalive": {"interval": "30s", "timeout": "5s"},
            "use_oghttp2_codec": True,
        },
    ).http2_protocol_options
    assert settings == H2Settings(
        hpack_table_size=0,
        max_concurrent_streams=100,
        initial_stream_window_size=65536,
        initial_connection_window_size=1048576,
        allow_connect=True,
        max_outbound_frames=500,
        max_outbound_control_frames=50,
        max_consecutive_inbound_frames_with_empty_payload=3,
        stream_error_on_invalid_http_messaging=True,
        keepalive=H2Keepalive(timeout=5.0, interval=30.0),
        max_header_list_bytes=96 * 1024,
        max_headers=50,
    )


def test_window_below_the_http2_minimum_is_invalid() -> None:
    with pytest.raises(ValidationError) as caught:
        _hcm(http2_protocol_options={"initial_stream_window_size": 1000})
    assert caught.value.path == HCM_PATH + ".http2_protocol_options.initial_stream_window_size"


def test_keepalive_without_timeout_is_invalid() -> None:
    with pytest.raises(ValidationError) as caught:
        _hcm(http2_protocol_options={"connection_keepalive": {"interval": "1s"}})
    assert "timeout" in str(caught.value.path)


@pytest.mark.parametrize(
    "field",
    [
        {"custom_settings_parameters": [{"identifier": 10, "value": 1}]},
        {"max_inbound_priority_frames_per_stream": 10},
        {"allow_metadata": True},
    ],
)
def test_unimplemented_http2_fields_are_refused_with_their_path(field: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedError) as caught:
        _hcm(http2_protocol_options=field)
    assert caught.value.path == f"{HCM_PATH}.http2_protocol_options.{next(iter(field))}"


def test_http2_only_codec_is_served() -> None:
    assert _hcm(codec_type="HTTP2").codec_type is CodecType.HTTP2


def test_http3_codec_is_refused() -> None:
    with pytest.raises(UnsupportedError):
        _hcm(codec_type="HTTP3")


def test_explicit_http1() -> None:
    options = _cluster(
        {"explicit_http_config": {"http_protocol_options": {"enable_trailers": True}}}
    ).http_protocol_options
    assert options.protocol is UpstreamProtocol.HTTP1
    assert options.http1.enable_trailers and options.http2_settings is None


def test_explicit_http2_gives_the_pool_its_settings() -> None:
    options = _cluster(
        {"explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 10}}}
    ).http_protocol_options
    assert options.protocol is UpstreamProtocol.HTTP2 and options.http2
    assert options.http2_settings is not None
    assert options.http2_settings.max_concurrent_streams == 10


def test_use_downstream_protocol_keeps_both_protocols_options() -> None:
    options = _cluster(
        {
            "use_downstream_protocol_config": {
                "http_protocol_options": {},
                "http2_protocol_options": {"max_concurrent_streams": 10},
            }
        }
    ).http_protocol_options
    assert options.protocol is UpstreamProtocol.USE_DOWNSTREAM
    assert options.http2_settings is not None
    assert options.http2_settings.max_concurrent_streams == 10


def test_auto_config_needs_tls_as_in_envoy() -> None:
    with pytest.raises(ValidationError, match="ALPN configured for cluster c"):
        _cluster({"auto_config": {"http2_protocol_options": {}}})


def test_auto_config_over_tls_is_refused_until_pools_speak_http2() -> None:
    tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "svc",
        },
    }
    with pytest.raises(UnsupportedError, match="auto_config") as caught:
        _cluster({"auto_config": {"http2_protocol_options": {}}}, transport_socket=tls)
    assert caught.value.path is not None and caught.value.path.endswith("auto_config")


def test_http3_upstream_is_refused() -> None:
    with pytest.raises(UnsupportedError, match="http3_protocol_options") as caught:
        _cluster({"use_downstream_protocol_config": {"http3_protocol_options": {}}})
    assert caught.value.path is not None
    assert caught.value.path.endswith("use_downstream_protocol_config.http3_protocol_options")


def test_protocol_selection_is_required() -> None:
    with pytest.raises(ValidationError, match="one of"):
        _cluster({"common_http_protocol_options": {"idle_timeout": "1s"}})


def test_upstream_connection_idle_interval_is_refused() -> None:
    keepalive = {"interval": "1s", "timeout": "1s", "connection_idle_interval": "5s"}
    with pytest.raises(UnsupportedError, match="connection_idle_interval") as caught:
        _cluster(
            {
                "explicit_http_config": {
                    "http2_protocol_options": {"connection_keepalive": keepalive}
                }
            }
        )
    assert caught.value.path is not None
    assert caught.value.path.endswith("connection_keepalive.connection_idle_interval")
    # Interval and timeout alone are served (PINGs on the pool's connections).
    options = _cluster(
        {
            "explicit_http_config": {
                "http2_protocol_options": {
                    "connection_keepalive": {"interval": "1s", "timeout": "2s"}
                }
            }
        }
    ).http_protocol_options
    assert options.http2_settings is not None and options.http2_settings.keepalive is not None
    assert options.http2_settings.keepalive.timeout == 2.0
