"""HTTP/2 connection settings: Envoy's ``Http2ProtocolOptions`` as the codec applies them.

Defaults are Envoy 1.40's (what it announces in its first SETTINGS frame and WINDOW_UPDATE):
1024 concurrent streams, a 16 MiB stream window, a 24 MiB connection window, a 4096-byte HPACK
table, no extended CONNECT. The header limits come from the connection manager
(``max_request_headers_kb``, ``max_headers_count``) or the cluster (``max_response_headers_kb``)
rather than from ``Http2ProtocolOptions``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["H2Keepalive", "H2Settings"]


@dataclass(frozen=True, slots=True)
class H2Keepalive:
    """``connection_keepalive``: PING every ``interval`` seconds (jittered by
    ``interval_jitter`` percent), give up on the connection when no answer comes within
    ``timeout``. ``connection_idle_interval`` sends a PING before using a connection that has
    been idle that long."""

    timeout: float
    interval: float | None = None
    interval_jitter: float = 15.0
    connection_idle_interval: float | None = None


@dataclass(frozen=True, slots=True)
class H2Settings:
    """What one side of an HTTP/2 connection allows and limits."""

    hpack_table_size: int = 4096
    max_concurrent_streams: int = 1024
    initial_stream_window_size: int = 16 * 1024 * 1024
    initial_connection_window_size: int = 24 * 1024 * 1024
    allow_connect: bool = False
    max_outbound_frames: int = 10000
    max_outbound_control_frames: int = 1000
    max_consecutive_inbound_frames_with_empty_payload: int = 1
    # Envoy's default: a malformed HEADERS frame ends the whole connection; True resets only
    # the offending stream.
    stream_error_on_invalid_http_messaging: bool = False
    keepalive: H2Keepalive | None = None
    max_header_list_bytes: int = 60 * 1024
    max_headers: int = 100

    def __post_init__(self) -> None:
        # The ranges Envoy's protocol.proto validates; the translator reports them with their
        # path, this catches a settings object built by hand.
        if not 65535 <= self.initial_stream_window_size <= 2**31 - 1:
            raise ValueError("initial_stream_window_size must be in 65535..2147483647")
        if not 65535 <= self.initial_connection_window_size <= 2**31 - 1:
            raise ValueError("initial_connection_window_size must be in 65535..2147483647")
        if not 1 <= self.max_concurrent_streams <= 2**31 - 1:
            raise ValueError("max_concurrent_streams must be in 1..2147483647")
