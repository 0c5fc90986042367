"""Cluster parts: circuit breakers, outlier detection, health checks, upstream HTTP options
and transport socket."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from proxy.config.model import (
    CircuitBreakers,
    CircuitBreakerThresholds,
    HealthCheck,
    Http1ProtocolOptions,
    HttpHealthCheck,
    HttpProtocolOptions,
    Int64Range,
    OutlierDetection,
    RetryBudget,
    RoutingPriority,
    TcpHealthCheck,
    TcpKeepalive,
    TransportSocketMatch,
    UpstreamHttpProtocolOptions,
    UpstreamProtocol,
    UpstreamTls,
)
from proxy.config.translate.common import (
    at,
    duration,
    header_value_options,
    headers_to_remove,
    join,
    opt_duration,
    percent,
    struct_to_dict,
    wrapped,
)
from proxy.config.translate.hcm import http1_protocol_options, http_protocol_options
from proxy.config.translate.http2 import http2_settings, require_http2_data_path
from proxy.config.translate.listeners import transport_socket_type
from proxy.config.translate.support import unpack
from proxy.config.translate.tls import upstream_tls
from pymesh.errors import UnsupportedError, ValidationError

__all__ = [
    "circuit_breakers",
    "health_check",
    "outlier_detection",
    "tcp_keepalive",
    "transport_socket_matches",
    "upstream_http_options",
    "upstream_socket",
]

_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def circuit_breakers(proto: Any) -> CircuitBreakers:
    resolved = {
        RoutingPriority.DEFAULT: CircuitBreakerThresholds(),
        RoutingPriority.HIGH: CircuitBreakerThresholds(priority=RoutingPriority.HIGH),
    }
    for item in proto.thresholds:
        priority = RoutingPriority(base_pb2.RoutingPriority.Name(item.priority))
        budget = None
        if item.HasField("retry_budget"):
            budget = RetryBudget(
                budget_percent=percent(item.retry_budget, "budget_percent", 0.2),
                min_retry_concurrency=wrapped(item.retry_budget, "min_retry_concurrency", 3),
            )
        resolved[priority] = CircuitBreakerThresholds(
            priority=priority,
            max_connections=wrapped(item, "max_connections", 1024),
            max_pending_requests=wrapped(item, "max_pending_requests", 1024),
            max_requests=wrapped(item, "max_requests", 1024),
            max_retries=wrapped(item, "max_retries", 3),
            retry_budget=budget,
            track_remaining=item.track_remaining,
            max_connection_pools=wrapped(item, "max_connection_pools", None),
        )
    return CircuitBreakers(resolved[RoutingPriority.DEFAULT], resolved[RoutingPriority.HIGH])


def outlier_detection(proto: Any, path: str) -> OutlierDetection:
    def pct(field: str, default: int) -> float:
        return float(wrapped(proto, field, default)) / 100.0

    def count(field: str, default: int) -> int:
        value: int = wrapped(proto, field, default)
        return value

    base = _or(opt_duration(proto, "base_ejection_time"), 30.0)
    maximum = _or(opt_duration(proto, "max_ejection_time"), 300.0)
    if maximum < base:
        raise ValidationError(
            "outlier detector's max_ejection_time cannot be smaller than base_ejection_time",
            path=join(path, "max_ejection_time"),
        )
    return OutlierDetection(
        consecutive_5xx=count("consecutive_5xx", 5),
        consecutive_gateway_failure=count("consecutive_gateway_failure", 5),
        consecutive_local_origin_failure=count("consecutive_local_origin_failure", 5),
        interval=_or(opt_duration(proto, "interval"), 10.0),
        base_ejection_time=base,
        max_ejection_time=maximum,
        max_ejection_time_jitter=_or(opt_duration(proto, "max_ejection_time_jitter"), 0.0),
        max_ejection_percent=pct("max_ejection_percent", 10),
        enforcing_consecutive_5xx=pct("enforcing_consecutive_5xx", 100),
        enforcing_consecutive_gateway_failure=pct("enforcing_consecutive_gateway_failure", 0),
        enforcing_consecutive_local_origin_failure=pct(
            "enforcing_consecutive_local_origin_failure", 100
        ),
        enforcing_success_rate=pct("enforcing_success_rate", 100),
        enforcing_local_origin_success_rate=pct("enforcing_local_origin_success_rate", 100),
        success_rate_minimum_hosts=count("success_rate_minimum_hosts", 5),
        success_rate_request_volume=count("success_rate_request_volume", 100),
        success_rate_stdev_factor=count("success_rate_stdev_factor", 1900),
        failure_percentage_threshold=pct("failure_percentage_threshold", 85),
        enforcing_failure_percentage=pct("enforcing_failure_percentage", 0),
        enforcing_failure_percentage_local_origin=pct(
            "enforcing_failure_percentage_local_origin", 0
        ),
        failure_percentage_minimum_hosts=count("failure_percentage_minimum_hosts", 5),
        failure_percentage_request_volume=count("failure_percentage_request_volume", 50),
        split_external_local_origin_errors=proto.split_external_local_origin_errors,
        successful_active_health_check_uneject_host=wrapped(
            proto, "successful_active_health_check_uneject_host", True
        ),
    )


def _payload(proto: Any, path: str) -> bytes:
    if proto.WhichOneof("payload") == "text":
        try:
            return bytes.fromhex(proto.text)
        except ValueError:
            raise ValidationError("invalid hex string in payload text", path=path) from None
    return bytes(proto.binary)


def health_check(proto: Any, path: str) -> HealthCheck:
    kind = proto.WhichOneof("health_checker")
    http = None
    tcp = None
    if kind == "http_health_check":
        spec = proto.http_health_check
        spec_path = join(path, kind)
        http = HttpHealthCheck(
            path=spec.path.encode(),
            host=spec.host.encode() or None,
            expected_statuses=tuple(
                Int64Range(item.start, item.end) for item in spec.expected_statuses
            )
            or (Int64Range(200, 201),),
            request_headers_to_add=header_value_options(
                spec.request_headers_to_add, join(spec_path, "request_headers_to_add")
            ),
            request_headers_to_remove=headers_to_remove(
                spec.request_headers_to_remove, join(spec_path, "request_headers_to_remove")
            ),
        )
    elif kind == "tcp_health_check":
        spec = proto.tcp_health_check
        tcp = TcpHealthCheck(
            send=_payload(spec.send, join(path, "tcp_health_check.send"))
            if spec.HasField("send")
            else b"",
            receive=tuple(
                _payload(item, at(join(path, "tcp_health_check.receive"), index))
                for index, item in enumerate(spec.receive)
            ),
        )
    else:
        raise ValidationError("one of [http_health_check, tcp_health_check] is required", path=path)
    return HealthCheck(
        timeout=duration(proto.timeout),
        interval=duration(proto.interval),
        unhealthy_threshold=proto.unhealthy_threshold.value,
        healthy_threshold=proto.healthy_threshold.value,
        http=http,
        tcp=tcp,
        interval_jitter=_or(opt_duration(proto, "interval_jitter"), 0.0),
        interval_jitter_percent=proto.interval_jitter_percent / 100.0,
        unhealthy_interval=opt_duration(proto, "unhealthy_interval"),
        unhealthy_edge_interval=opt_duration(proto, "unhealthy_edge_interval"),
        healthy_edge_interval=opt_duration(proto, "healthy_edge_interval"),
        no_traffic_interval=_or(opt_duration(proto, "no_traffic_interval"), 60.0),
        initial_jitter=_or(opt_duration(proto, "initial_jitter"), 0.0),
        reuse_connection=wrapped(proto, "reuse_connection", True),
        always_log_health_check_failures=proto.always_log_health_check_failures,
    )


def upstream_http_options(proto: Any, path: str, allow_http2: bool) -> UpstreamHttpProtocolOptions:
    """The cluster's ``envoy.extensions.upstreams.http.v3.HttpProtocolOptions``.
    ``allow_http2`` is for the bootstrap's xDS cluster, whose HTTP/2 the gRPC client speaks."""
    common = HttpProtocolOptions()
    protocol = UpstreamProtocol.HTTP1
    h2_proto = None
    http1 = Http1ProtocolOptions()
    auto_sni = False
    auto_san = False
    override_sni = None
    options_path = join(path, "typed_extension_protocol_options")
    for key in sorted(proto.typed_extension_protocol_options):
        key_path = at(options_path, key)
        value = proto.typed_extension_protocol_options[key]
        expected = "type.googleapis.com/" + _HTTP_OPTIONS_KEY
        if key != _HTTP_OPTIONS_KEY or value.type_url != expected:
            raise UnsupportedError(
                f"protocol options '{key}' ({value.type_url}) are not supported by pymesh",
                path=key_path,
            )
        options = unpack(value, http_protocol_options_pb2.HttpProtocolOptions, key_path)
        protocol, h1_proto, h2_proto = _upstream_protocol(proto, options, key_path)
        if h1_proto is not None:
            http1 = http1_protocol_options(h1_proto)
        if options.HasField("common_http_protocol_options"):
            common = http_protocol_options(options.common_http_protocol_options)
        upstream = options.upstream_http_protocol_options
        auto_sni = upstream.auto_sni
        auto_san = upstream.auto_san_validation
        override_sni = upstream.override_auto_sni_header.lower().encode() or None
        if protocol is UpstreamProtocol.AUTO and not allow_http2:
            # The pools do not pick a protocol per connection by ALPN yet.
            require_http2_data_path(
                "auto_config (ALPN)",
                join(key_path, options.WhichOneof("upstream_protocol_options")),
            )
    if proto.HasField("max_requests_per_connection"):
        if common.max_requests_per_connection is not None:
            raise ValidationError(
                "Only one of max_requests_per_connection from Cluster or HttpProtocolOptions can "
                "be specified",
                path=join(path, "max_requests_per_connection"),
            )
        common = HttpProtocolOptions(
            idle_timeout=common.idle_timeout,
            max_connection_duration=common.max_connection_duration,
            max_headers_count=common.max_headers_count,
            max_stream_duration=common.max_stream_duration,
            headers_with_underscores_action=common.headers_with_underscores_action,
            max_requests_per_connection=proto.max_requests_per_connection.value or None,
        )
    h2_settings = (
        None
        if protocol is UpstreamProtocol.HTTP1
        else http2_settings(
            h2_proto,
            join(options_path, "http2_protocol_options"),
            max_header_bytes=60 * 1024,
            max_headers=common.max_headers_count,
        )
    )
    keepalive = h2_settings.keepalive if h2_settings is not None else None
    if keepalive is not None and keepalive.connection_idle_interval:
        raise UnsupportedError(
            "connection_idle_interval (a PING before reusing an idle connection) is not "
            "supported by pymesh",
            path=join(
                options_path, "http2_protocol_options.connection_keepalive.connection_idle_interval"
            ),
        )
    return UpstreamHttpProtocolOptions(
        common=common,
        http1=http1,
        auto_sni=auto_sni,
        auto_san_validation=auto_san,
        override_auto_sni_header=override_sni,
        protocol=protocol,
        http2_settings=h2_settings,
    )


def _upstream_protocol(cluster: Any, options: Any, path: str) -> tuple[UpstreamProtocol, Any, Any]:
    """The protocol selection and its HTTP/1.1 and HTTP/2 options (None when unset)."""
    which = options.WhichOneof("upstream_protocol_options")
    if which is None:
        raise ValidationError(
            "one of [explicit_http_config, use_downstream_protocol_config, auto_config] is "
            "required",
            path=join(path, "upstream_protocol_options"),
        )
    config = getattr(options, which)
    config_path = join(path, which)
    if config.HasField("http3_protocol_options"):
        raise UnsupportedError(
            "HTTP/3 is not supported by pymesh", path=join(config_path, "http3_protocol_options")
        )
    h1 = config.http_protocol_options if config.HasField("http_protocol_options") else None
    h2 = config.http2_protocol_options if config.HasField("http2_protocol_options") else None
    if which == "explicit_http_config":
        chosen = config.WhichOneof("protocol_config")
        if chosen is None:
            raise ValidationError(
                "one of [http_protocol_options, http2_protocol_options] is required",
                path=config_path,
            )
        kind = (
            UpstreamProtocol.HTTP2 if chosen == "http2_protocol_options" else UpstreamProtocol.HTTP1
        )
        return kind, h1, h2
    if which == "use_downstream_protocol_config":
        return UpstreamProtocol.USE_DOWNSTREAM, h1, h2
    if config.HasField("alternate_protocols_cache_options"):
        raise UnsupportedError(
            "alternate_protocols_cache_options (HTTP/3) is not supported by pymesh",
            path=join(config_path, "alternate_protocols_cache_options"),
        )
    if not cluster.transport_socket_matches and (
        not cluster.HasField("transport_socket")
        or cluster.transport_socket.name in ("envoy.transport_sockets.raw_buffer", "raw_buffer")
    ):
        # Envoy's own refusal: ALPN needs a TLS transport socket.
        raise ValidationError(
            f"ALPN configured for cluster {cluster.name} which has a non-ALPN transport socket",
            path=config_path,
        )
    return UpstreamProtocol.AUTO, h1, h2


def upstream_socket(proto: Any, path: str) -> UpstreamTls | None:
    if not proto.HasField("transport_socket"):
        return None
    return _socket(proto.transport_socket, join(path, "transport_socket"))


def _socket(socket: Any, path: str) -> UpstreamTls | None:
    if transport_socket_type(socket, path, upstream=True) is None:
        return None
    config_path = join(path, "typed_config")
    message = unpack(socket.typed_config, tls_pb2.UpstreamTlsContext, config_path)
    return upstream_tls(message, config_path)


def transport_socket_matches(proto: Any, path: str) -> tuple[TransportSocketMatch, ...]:
    """``Cluster.transport_socket_matches``; a raw_buffer entry is plaintext (None)."""
    found = []
    for index, item in enumerate(proto.transport_socket_matches):
        item_path = at(join(path, "transport_socket_matches"), index)
        if not item.HasField("transport_socket"):
            # Envoy's refusal too: the socket has no default.
            raise ValidationError(
                "Didn't find a registered implementation for '' with type URL: ''",
                path=join(item_path, "transport_socket"),
            )
        found.append(
            TransportSocketMatch(
                name=item.name,
                match=MappingProxyType(struct_to_dict(item.match)),
                transport_socket=_socket(
                    item.transport_socket, join(item_path, "transport_socket")
                ),
            )
        )
    return tuple(found)


def tcp_keepalive(proto: Any) -> TcpKeepalive | None:
    if not proto.upstream_connection_options.HasField("tcp_keepalive"):
        return None
    keepalive = proto.upstream_connection_options.tcp_keepalive
    return TcpKeepalive(
        keepalive_probes=wrapped(keepalive, "keepalive_probes", None),
        keepalive_time=wrapped(keepalive, "keepalive_time", None),
        keepalive_interval=wrapped(keepalive, "keepalive_interval", None),
    )
