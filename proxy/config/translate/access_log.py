"""Access loggers (``config.accesslog.v3.AccessLog``): file, stdout and stderr sinks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2

from proxy.config.model import (
    DEFAULT_ACCESS_LOG_FORMAT,
    AccessLog,
    AccessLogFilter,
    AccessLogFilterKind,
    AccessLogSink,
    ComparisonOp,
)
from proxy.config.translate.common import (
    at,
    data_source,
    frozen_mapping,
    header_matcher,
    join,
    struct_to_dict,
)
from proxy.config.translate.support import unpack
from pymesh.errors import UnsupportedError, ValidationError

__all__ = ["access_logs", "file_access_log"]

_TYPE = "type.googleapis.com/"
_FILE = _TYPE + "envoy.extensions.access_loggers.file.v3.FileAccessLog"
_STDOUT = _TYPE + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
_STDERR = _TYPE + "envoy.extensions.access_loggers.stream.v3.StderrAccessLog"
_OPS = {0: ComparisonOp.EQ, 1: ComparisonOp.GE, 2: ComparisonOp.LE, 3: ComparisonOp.NE}


def access_logs(items: Iterable[Any], path: str) -> tuple[AccessLog, ...]:
    return tuple(_access_log(item, at(path, index)) for index, item in enumerate(items))


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
        filter=_filter(proto.filter, join(path, "filter")) if proto.HasField("filter") else None,
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
