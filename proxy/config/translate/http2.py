"""``config.core.v3.Http2ProtocolOptions`` → :class:`H2Settings`, for the connection manager
(downstream) and for clusters (upstream).

Listeners serve HTTP/2 (``codec_type: HTTP2``, or ``AUTO`` by client preface or ALPN) and
clusters speak it to their hosts (``explicit_http_config``, or per request with
``use_downstream_protocol_config``). A cluster that would choose its protocol by ALPN
(``auto_config``) is refused by :func:`require_http2_data_path` with its path, never accepted
and served as HTTP/1.1. The settings themselves are translated and checked either way.
"""

from __future__ import annotations

from typing import Any, Final

from proxy.codec.h2_settings import H2Keepalive, H2Settings
from proxy.config.translate.common import join, opt_duration, wrapped
from pymesh.errors import UnsupportedError, ValidationError

__all__ = ["HTTP2_DATA_PATH", "http2_settings", "require_http2_data_path"]

# Whether upstream connections choose HTTP/2 by ALPN yet.
HTTP2_DATA_PATH: Final = False


def require_http2_data_path(what: str, path: str) -> None:
    if not HTTP2_DATA_PATH:
        raise UnsupportedError(
            f"{what} is not supported by pymesh yet (upstream connections speak HTTP/1.1)",
            path=path,
        )


def http2_settings(
    proto: Any | None, path: str, *, max_header_bytes: int, max_headers: int
) -> H2Settings:
    """Envoy's defaults for every field left unset (``proto`` None: all of them)."""
    defaults = H2Settings()
    if proto is None:
        return H2Settings(max_header_list_bytes=max_header_bytes, max_headers=max_headers)
    stream_error = proto.stream_error_on_invalid_http_messaging
    if proto.HasField("override_stream_error_on_invalid_http_message"):
        stream_error = proto.override_stream_error_on_invalid_http_message.value
    return H2Settings(
        hpack_table_size=wrapped(proto, "hpack_table_size", defaults.hpack_table_size),
        max_concurrent_streams=wrapped(
            proto, "max_concurrent_streams", defaults.max_concurrent_streams
        ),
        initial_stream_window_size=wrapped(
            proto, "initial_stream_window_size", defaults.initial_stream_window_size
        ),
        initial_connection_window_size=wrapped(
            proto, "initial_connection_window_size", defaults.initial_connection_window_size
        ),
        allow_connect=proto.allow_connect,
        max_outbound_frames=wrapped(proto, "max_outbound_frames", defaults.max_outbound_frames),
        max_outbound_control_frames=wrapped(
            proto, "max_outbound_control_frames", defaults.max_outbound_control_frames
        ),
        max_consecutive_inbound_frames_with_empty_payload=wrapped(
            proto,
            "max_consecutive_inbound_frames_with_empty_payload",
            defaults.max_consecutive_inbound_frames_with_empty_payload,
        ),
        stream_error_on_invalid_http_messaging=stream_error,
        keepalive=(
            _keepalive(proto.connection_keepalive, join(path, "connection_keepalive"))
            if proto.HasField("connection_keepalive")
            else None
        ),
        max_header_list_bytes=max_header_bytes,
        max_headers=max_headers,
    )


def _keepalive(proto: Any, path: str) -> H2Keepalive:
    timeout = opt_duration(proto, "timeout")
    if not timeout:
        # PGV requires the field; Envoy also refuses 0, which would abort every connection.
        raise ValidationError(
            "timeout is required and must be at least 1ms", path=join(path, "timeout")
        )
    return H2Keepalive(
        timeout=timeout,
        interval=opt_duration(proto, "interval") or None,
        interval_jitter=proto.interval_jitter.value if proto.HasField("interval_jitter") else 15.0,
        connection_idle_interval=opt_duration(proto, "connection_idle_interval") or None,
    )
