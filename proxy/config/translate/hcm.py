"""``envoy.filters.network.http_connection_manager`` → ``model.HttpConnectionManager``."""

from __future__ import annotations

from typing import Any

from envoy.config.trace.v3 import zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from proxy.config.model import (
    CodecType,
    ForwardClientCertDetails,
    HeadersWithUnderscoresAction,
    Http1ProtocolOptions,
    HttpConnectionManager,
    HttpFilter,
    HttpProtocolOptions,
    InternalAddressConfig,
    PathWithEscapedSlashesAction,
    Rds,
    ServerHeaderTransformation,
    SetCurrentClientCertDetails,
    Tracing,
    UpgradeConfig,
    ZipkinConfig,
)
from proxy.config.translate.access_log import access_logs
from proxy.config.translate.common import (
    at,
    cidr_range,
    config_source,
    join,
    opt_duration,
    percent,
    wrapped,
)
from proxy.config.translate.custom_tags import custom_tags
from proxy.config.translate.filters import FilterEntry, FilterRegistry
from proxy.config.translate.http2 import http2_settings
from proxy.config.translate.routes import route_configuration
from proxy.config.translate.support import unpack
from pymesh.errors import UnsupportedError, ValidationError

__all__ = [
    "HCM_TYPE_URL",
    "http1_protocol_options",
    "http_connection_manager",
    "http_protocol_options",
]

HCM_TYPE_URL = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
_ZIPKIN_URL = "type.googleapis.com/" + zipkin_pb2.ZipkinConfig.DESCRIPTOR.full_name
_HCM = hcm_pb2.HttpConnectionManager
_ROUTER = "envoy.filters.http.router"


def http_connection_manager(
    any_config: Any, registry: FilterRegistry, path: str
) -> HttpConnectionManager:
    """Unpack, check and translate an HCM ``typed_config``."""
    proto = unpack(any_config, _HCM, path)
    codec = _HCM.CodecType.Name(proto.codec_type)
    if codec not in ("AUTO", "HTTP1", "HTTP2"):
        raise UnsupportedError(
            f"codec_type {codec} is not supported by pymesh", path=join(path, "codec_type")
        )
    route_config = None
    rds = None
    kind = proto.WhichOneof("route_specifier")
    if kind == "route_config":
        route_config = route_configuration(proto.route_config, registry, join(path, kind))
    elif kind == "rds":
        rds = Rds(
            route_config_name=proto.rds.route_config_name,
            config_source=config_source(proto.rds.config_source, join(path, "rds.config_source")),
        )
    else:
        raise ValidationError(
            "one of [rds, route_config, scoped_routes] is required",
            path=join(path, "route_specifier"),
        )
    escaped = _HCM.PathWithEscapedSlashesAction.Name(proto.path_with_escaped_slashes_action)
    return HttpConnectionManager(
        stat_prefix=proto.stat_prefix,
        codec_type=CodecType(codec),
        route_config=route_config,
        rds=rds,
        http_filters=_http_filters(proto, registry, join(path, "http_filters")),
        access_log=access_logs(proto.access_log, join(path, "access_log")),
        server_name=(proto.server_name or "envoy").encode(),
        server_header_transformation=ServerHeaderTransformation(
            _HCM.ServerHeaderTransformation.Name(proto.server_header_transformation)
        ),
        use_remote_address=wrapped(proto, "use_remote_address", False),
        xff_num_trusted_hops=proto.xff_num_trusted_hops,
        skip_xff_append=proto.skip_xff_append,
        via=proto.via.encode() or None,
        generate_request_id=wrapped(proto, "generate_request_id", True),
        preserve_external_request_id=proto.preserve_external_request_id,
        always_set_request_id_in_response=proto.always_set_request_id_in_response,
        request_timeout=opt_duration(proto, "request_timeout") or 0.0,
        request_headers_timeout=opt_duration(proto, "request_headers_timeout") or 0.0,
        stream_idle_timeout=_or(opt_duration(proto, "stream_idle_timeout"), 300.0),
        drain_timeout=_or(opt_duration(proto, "drain_timeout"), 5.0),
        delayed_close_timeout=_or(opt_duration(proto, "delayed_close_timeout"), 1.0),
        common_http_protocol_options=(
            http_protocol_options(proto.common_http_protocol_options)
            if proto.HasField("common_http_protocol_options")
            else HttpProtocolOptions()
        ),
        http_protocol_options=(
            http1_protocol_options(proto.http_protocol_options)
            if proto.HasField("http_protocol_options")
            else Http1ProtocolOptions()
        ),
        max_request_headers_kb=wrapped(proto, "max_request_headers_kb", 60),
        http2_protocol_options=http2_settings(
            proto.http2_protocol_options if proto.HasField("http2_protocol_options") else None,
            join(path, "http2_protocol_options"),
            max_header_bytes=wrapped(proto, "max_request_headers_kb", 60) * 1024,
            max_headers=wrapped(proto.common_http_protocol_options, "max_headers_count", 100),
        ),
        normalize_path=wrapped(proto, "normalize_path", False),
        merge_slashes=proto.merge_slashes,
        path_with_escaped_slashes_action=(
            PathWithEscapedSlashesAction.KEEP_UNCHANGED
            if escaped == "IMPLEMENTATION_SPECIFIC_DEFAULT"
            else PathWithEscapedSlashesAction(escaped)
        ),
        strip_any_host_port=proto.strip_any_host_port,
        strip_trailing_host_dot=proto.strip_trailing_host_dot,
        internal_address_config=(
            InternalAddressConfig(
                unix_sockets=proto.internal_address_config.unix_sockets,
                cidr_ranges=tuple(
                    cidr_range(item, at(join(path, "internal_address_config.cidr_ranges"), index))
                    for index, item in enumerate(proto.internal_address_config.cidr_ranges)
                ),
            )
            if proto.HasField("internal_address_config")
            else None
        ),
        add_user_agent=wrapped(proto, "add_user_agent", False),
        forward_client_cert_details=ForwardClientCertDetails(
            _HCM.ForwardClientCertDetails.Name(proto.forward_client_cert_details)
        ),
        set_current_client_cert_details=(
            _client_cert_details(proto, join(path, "set_current_client_cert_details"))
            if proto.HasField("set_current_client_cert_details")
            else None
        ),
        proxy_100_continue=proto.proxy_100_continue,
        tracing=_tracing(proto.tracing, join(path, "tracing"))
        if proto.HasField("tracing")
        else None,
        upgrade_configs=tuple(
            UpgradeConfig(item.upgrade_type.lower(), wrapped(item, "enabled", True))
            for item in proto.upgrade_configs
        ),
    )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _http_filters(proto: Any, registry: FilterRegistry, path: str) -> tuple[HttpFilter, ...]:
    if not proto.http_filters:
        # Envoy adds the router when the list is empty.
        entry, config = registry.translate(_ROUTER, None, path)
        return (HttpFilter(name=_ROUTER, config=config, type_url=entry.type_url),)
    kept: list[tuple[int, FilterEntry, HttpFilter]] = []
    for index, item in enumerate(proto.http_filters):
        item_path = at(path, index)
        typed = item.typed_config if item.HasField("typed_config") else None
        if typed is None:
            if item.is_optional:
                continue  # Envoy skips an optional filter it cannot find
            # Envoy no longer looks extensions up by name: a filter needs its typed_config.
            raise ValidationError(
                f"Didn't find a registered implementation for '{item.name}' with type URL: ''",
                path=item_path,
            )
        try:
            entry, config = registry.translate(item.name, typed, item_path)
        except UnsupportedError:
            # is_optional: Envoy itself skips a filter it does not have.
            if item.is_optional:
                continue
            raise
        http_filter = HttpFilter(
            name=item.name,
            config=config,
            disabled=item.disabled,
            is_optional=item.is_optional,
            type_url=typed.type_url if typed is not None else entry.type_url,
        )
        kept.append((index, entry, http_filter))
    for position, (index, entry, http_filter) in enumerate(kept):
        last = position == len(kept) - 1
        if entry.terminal != last:
            # Envoy's wording, so the two can be compared.
            if entry.terminal:
                problem = f"terminal filter named {http_filter.name} of type {entry.name} must be"
            else:
                type_name = http_filter.type_url.removeprefix("type.googleapis.com/")
                problem = f"non-terminal filter named {http_filter.name} of type {type_name} is"
            raise ValidationError(
                f"Error: {problem} the last filter in a http filter chain.",
                path=at(path, index),
            )
    return tuple(http_filter for _, _, http_filter in kept)


def http_protocol_options(proto: Any) -> HttpProtocolOptions:
    """``config.core.v3.HttpProtocolOptions`` (HCM and cluster ``common_http_protocol_options``)."""
    idle = opt_duration(proto, "idle_timeout")
    return HttpProtocolOptions(
        idle_timeout=3600.0 if idle is None else (idle or None),
        max_connection_duration=opt_duration(proto, "max_connection_duration") or None,
        max_headers_count=wrapped(proto, "max_headers_count", 100),
        max_stream_duration=opt_duration(proto, "max_stream_duration") or None,
        headers_with_underscores_action=HeadersWithUnderscoresAction(
            type(proto).HeadersWithUnderscoresAction.Name(proto.headers_with_underscores_action)
        ),
        max_requests_per_connection=wrapped(proto, "max_requests_per_connection", None) or None,
    )


def http1_protocol_options(proto: Any) -> Http1ProtocolOptions:
    return Http1ProtocolOptions(
        allow_absolute_url=wrapped(proto, "allow_absolute_url", True),
        accept_http_10=proto.accept_http_10,
        default_host_for_http_10=proto.default_host_for_http_10.encode() or None,
        proper_case_header_keys=proto.header_key_format.HasField("proper_case_words"),
        enable_trailers=proto.enable_trailers,
        allow_chunked_length=proto.allow_chunked_length,
    )


def _tracing(proto: Any, path: str) -> Tracing:
    # What the tracer does not do yet is refused rather than ignored.
    if proto.verbose:
        raise UnsupportedError(
            "verbose tracing (span annotations per event) is not supported by pymesh",
            path=join(path, "verbose"),
        )
    if wrapped(proto, "spawn_upstream_span", False):
        raise UnsupportedError(
            "spawn_upstream_span (a span per upstream attempt) is not supported by pymesh",
            path=join(path, "spawn_upstream_span"),
        )
    provider = None
    if proto.HasField("provider"):
        provider_path = join(path, "provider")
        url = proto.provider.typed_config.type_url
        if url != _ZIPKIN_URL:
            raise UnsupportedError(
                f"tracer '{proto.provider.name}' ({url}) is not supported by pymesh",
                path=provider_path,
            )
        zipkin = unpack(
            proto.provider.typed_config,
            zipkin_pb2.ZipkinConfig,
            join(provider_path, "typed_config"),
        )
        if zipkin.collector_endpoint_version not in (0, 1):
            raise UnsupportedError(
                "only the HTTP_JSON Zipkin collector endpoint is supported by pymesh",
                path=join(provider_path, "typed_config.collector_endpoint_version"),
            )
        provider = ZipkinConfig(
            collector_cluster=zipkin.collector_cluster,
            collector_endpoint=zipkin.collector_endpoint,
            trace_id_128bit=zipkin.trace_id_128bit,
            shared_span_context=wrapped(zipkin, "shared_span_context", True),
            collector_hostname=zipkin.collector_hostname or None,
            w3c_propagation=zipkin.trace_context_option == 1,  # USE_B3_WITH_W3C_PROPAGATION
        )
    return Tracing(
        client_sampling=percent(proto, "client_sampling", 1.0),
        random_sampling=percent(proto, "random_sampling", 1.0),
        overall_sampling=percent(proto, "overall_sampling", 1.0),
        verbose=proto.verbose,
        max_path_tag_length=wrapped(proto, "max_path_tag_length", 256),
        spawn_upstream_span=wrapped(proto, "spawn_upstream_span", None),
        provider=provider,
        custom_tags=custom_tags(proto.custom_tags, path),
    )


def _client_cert_details(proto: Any, path: str) -> SetCurrentClientCertDetails:
    details = proto.set_current_client_cert_details
    for name in ("cert", "chain"):
        if getattr(details, name):
            raise UnsupportedError(
                f"x-forwarded-client-cert '{name.capitalize()}=' is not supported by pymesh "
                "(By, Hash, Subject, URI and DNS are)",
                path=join(path, name),
            )
    return SetCurrentClientCertDetails(
        subject=wrapped(details, "subject", False), dns=details.dns, uri=details.uri
    )
