"""Access loggers (``config.accesslog.v3.AccessLog``): file, stdout and stderr sinks, and the
gRPC Access Log Service (``http_grpc`` / ``tcp_grpc``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from proxy.config.model import (
    DEFAULT_ACCESS_LOG_FORMAT,
    AccessLog,
    AccessLogFilter,
    AccessLogFilterKind,
    AccessLogSink,
    ComparisonOp,
    GrpcAccessLogService,
)
from proxy.config.translate.common import (
    at,
    data_source,
    duration,
    frozen_mapping,
    header_matcher,
    join,
    struct_to_dict,
    wrapped,
)
from proxy.config.translate.custom_tags import custom_tags
from proxy.config.translate.support import unpack
from pymesh.errors import UnsupportedError, ValidationError

__all__ = ["access_log_service_clusters", "access_logs", "file_access_log"]

_TYPE = "type.googleapis.com/"
_FILE = _TYPE + "envoy.extensions.access_loggers.file.v3.FileAccessLog"
_STDOUT = _TYPE + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
_STDERR = _TYPE + "envoy.extensions.access_loggers.stream.v3.StderrAccessLog"
_HTTP_GRPC = _TYPE + "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
_TCP_GRPC = _TYPE + "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig"
_API_V2 = 1  # config.core.v3.ApiVersion: AUTO (0) and V3 (2) both mean v3 in Envoy today
_OPS = {0: ComparisonOp.EQ, 1: ComparisonOp.GE, 2: ComparisonOp.LE, 3: ComparisonOp.NE}


def access_logs(items: Iterable[Any], path: str) -> tuple[AccessLog, ...]:
    return tuple(_access_log(item, at(path, index)) for index, item in enumerate(items))


def access_log_service_clusters(listeners: Iterable[Any]) -> set[str]:
    """The clusters the gRPC access loggers of ``listeners`` stream to: side calls, so they
    may speak HTTP/2 like the ADS cluster (the logger's own gRPC client does)."""
    found: set[str] = set()
    hcm = hcm_pb2.HttpConnectionManager()
    tcp = tcp_proxy_pb2.TcpProxy()
    http_config = als_pb2.HttpGrpcAccessLogConfig()
    tcp_config = als_pb2.TcpGrpcAccessLogConfig()
    for listener in listeners:
        for chain in listener.filter_chains:
            for item in chain.filters:
                if item.typed_config.Unpack(hcm):
                    logs = hcm.access_log
                elif item.typed_config.Unpack(tcp):
                    logs = tcp.access_log
                else:
                    continue
                for log in logs:
                    for config in (http_config, tcp_config):
                        if log.typed_config.Unpack(config):
                            found.add(config.common_config.grpc_service.envoy_grpc.cluster_name)
    return found


def file_access_log(file_path: str) -> AccessLog:
    """A file logger with Envoy's default format (the admin's ``access_log_path``)."""
    return AccessLog(name="envoy.access_loggers.file", sink=AccessLogSink.FILE, path=file_path)


def _access_log(proto: Any, path: str) -> AccessLog:
    if not proto.HasField("typed_config"):
        raise UnsupportedError(
            f"access logger '{proto.name}' without typed_config is not supported by pymesh",
            path=path,
        )
    config_path = join(path, "typed_config")
    url = proto.typed_config.type_url
    filter_ = _filter(proto.filter, join(path, "filter")) if proto.HasField("filter") else None
    if url in (_HTTP_GRPC, _TCP_GRPC):
        grpc = _grpc_service(proto.typed_config, url == _TCP_GRPC, config_path)
        return AccessLog(
            name=proto.name, sink=AccessLogSink.GRPC, text_format=None, filter=filter_, grpc=grpc
        )
    file_path = None
    if url == _FILE:
        config = unpack(proto.typed_config, file_pb2.FileAccessLog, config_path)
        file_path = config.path
        sink = AccessLogSink.FILE
    elif url == _STDOUT:
        config = unpack(proto.typed_config, stream_pb2.StdoutAccessLog, config_path)
        sink = AccessLogSink.STDOUT
    elif url == _STDERR:
        config = unpack(proto.typed_config, stream_pb2.StderrAccessLog, config_path)
        sink = AccessLogSink.STDERR
    else:
        raise UnsupportedError(
            f"access logger '{proto.name}' ({url}) is not supported by pymesh", path=path
        )
    text_format: str | None = DEFAULT_ACCESS_LOG_FORMAT
    json_format = None
    omit_empty = False
    if config.HasField("log_format"):
        log_format = config.log_format
        format_path = join(config_path, "log_format")
        omit_empty = log_format.omit_empty_values
        kind = log_format.WhichOneof("format")
        if kind == "json_format":
            text_format = None
            json_format = frozen_mapping(struct_to_dict(log_format.json_format))
        elif kind == "text_format":
            text_format = log_format.text_format
        elif kind == "text_format_source":
            body, _ = data_source(log_format.text_format_source, join(format_path, kind))
            text_format = body.decode()
        else:
            raise ValidationError(
                "one of [text_format_source, json_format] is required", path=format_path
            )
    return AccessLog(
        name=proto.name,
        sink=sink,
        path=file_path,
        text_format=text_format,
        json_format=json_format,
        omit_empty_values=omit_empty,
        filter=filter_,
    )


def _grpc_service(typed_config: Any, tcp: bool, path: str) -> GrpcAccessLogService:
    if tcp:
        config = unpack(typed_config, als_pb2.TcpGrpcAccessLogConfig, path)
        request_headers: tuple[str, ...] = ()
        response_headers: tuple[str, ...] = ()
        response_trailers: tuple[str, ...] = ()
    else:
        config = unpack(typed_config, als_pb2.HttpGrpcAccessLogConfig, path)
        request_headers = tuple(h.lower() for h in config.additional_request_headers_to_log)
        response_headers = tuple(h.lower() for h in config.additional_response_headers_to_log)
        response_trailers = tuple(h.lower() for h in config.additional_response_trailers_to_log)
    common = config.common_config
    common_path = join(path, "common_config")
    if common.transport_api_version == _API_V2:
        raise ValidationError(
            "the v2 access log service API is gone: use transport_api_version V3",
            path=join(common_path, "transport_api_version"),
        )
    service = common.grpc_service
    service_path = join(common_path, "grpc_service")
    if service.WhichOneof("target_specifier") != "envoy_grpc":
        raise UnsupportedError(
            "only envoy_grpc access log services are supported by pymesh", path=service_path
        )
    envoy_grpc = service.envoy_grpc
    if not envoy_grpc.cluster_name:
        raise ValidationError(
            "the access log service needs a cluster_name",
            path=join(service_path, "envoy_grpc.cluster_name"),
        )
    interval = (
        duration(common.buffer_flush_interval) if common.HasField("buffer_flush_interval") else 1.0
    )
    if interval <= 0:
        # Envoy's PGV rule: a flush interval must be greater than zero.
        raise ValidationError(
            "buffer_flush_interval must be greater than 0s",
            path=join(common_path, "buffer_flush_interval"),
        )
    return GrpcAccessLogService(
        log_name=common.log_name,
        cluster_name=envoy_grpc.cluster_name,
        authority=envoy_grpc.authority,
        buffer_size_bytes=wrapped(common, "buffer_size_bytes", 16384),
        buffer_flush_interval=interval,
        tcp=tcp,
        additional_request_headers=request_headers,
        additional_response_headers=response_headers,
        additional_response_trailers=response_trailers,
        filter_state_objects=tuple(common.filter_state_objects_to_log),
        custom_tags=custom_tags(common.custom_tags, common_path),
    )


def _filter(proto: Any, path: str) -> AccessLogFilter:
    kind = proto.WhichOneof("filter_specifier")
    if kind in ("status_code_filter", "duration_filter"):
        comparison = getattr(proto, kind).comparison
        value = float(comparison.value.default_value)
        if kind == "duration_filter":
            value /= 1000.0
        return AccessLogFilter(AccessLogFilterKind(kind), op=_OPS[comparison.op], value=value)
    if kind == "not_health_check_filter":
        return AccessLogFilter(AccessLogFilterKind.NOT_HEALTH_CHECK)
    if kind == "response_flag_filter":
        return AccessLogFilter(
            AccessLogFilterKind.RESPONSE_FLAG, flags=frozenset(proto.response_flag_filter.flags)
        )
    if kind == "header_filter":
        return AccessLogFilter(
            AccessLogFilterKind.HEADER,
            header=header_matcher(proto.header_filter.header, join(path, "header_filter.header")),
        )
    if kind in ("and_filter", "or_filter"):
        children = getattr(proto, kind).filters
        return AccessLogFilter(
            AccessLogFilterKind(kind),
            children=tuple(
                _filter(child, at(join(path, f"{kind}.filters"), index))
                for index, child in enumerate(children)
            ),
        )
    raise ValidationError("an access log filter specifier is required", path=path)
