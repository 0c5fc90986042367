"""Responses the proxy generates itself (Envoy's "local replies")."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LocalReply", "ResponseFlag"]


class ResponseFlag:
    """Envoy's access-log response flags (short names), in Envoy's rendering order."""

    FAILED_LOCAL_HEALTH_CHECK = "LH"
    NO_HEALTHY_UPSTREAM = "UH"
    UPSTREAM_REQUEST_TIMEOUT = "UT"
    LOCAL_RESET = "LR"
    UPSTREAM_REMOTE_RESET = "UR"
    UPSTREAM_CONNECTION_FAILURE = "UF"
    UPSTREAM_CONNECTION_TERMINATION = "UC"
    UPSTREAM_OVERFLOW = "UO"
    NO_ROUTE_FOUND = "NR"
    DELAY_INJECTED = "DI"
    FAULT_INJECTED = "FI"
    RATE_LIMITED = "RL"
    UNAUTHORIZED_EXTERNAL_SERVICE = "UAEX"
    RATELIMIT_SERVICE_ERROR = "RLSE"
    DOWNSTREAM_CONNECTION_TERMINATION = "DC"
    UPSTREAM_RETRY_LIMIT_EXCEEDED = "URX"
    STREAM_IDLE_TIMEOUT = "SI"
    INVALID_ENVOY_REQUEST_HEADERS = "IH"
    DOWNSTREAM_PROTOCOL_ERROR = "DPE"
    UPSTREAM_MAX_STREAM_DURATION_REACHED = "UMSDR"
    RESPONSE_FROM_CACHE_FILTER = "RFCF"
    NO_FILTER_CONFIG_FOUND = "NFCF"
    DURATION_TIMEOUT = "DT"
    UPSTREAM_PROTOCOL_ERROR = "UPE"
    NO_CLUSTER_FOUND = "NC"
    OVERLOAD_MANAGER = "OM"
    DNS_RESOLUTION_FAILURE = "DF"
    DOWNSTREAM_REMOTE_RESET = "DR"

    ORDER: tuple[str, ...] = (
        "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX",
        "RLSE", "DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC",
        "OM", "DF", "DR",
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class LocalReply:
    """A response produced by the proxy. ``body`` is sent as ``text/plain`` (Envoy's default);
    ``headers`` are extra response headers (e.g. ``x-envoy-overloaded``)."""

    status: int
    body: bytes = b""
    flag: str | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()
    details: str = ""
    # The grpc-status a gRPC caller gets instead of the one mapped from ``status``.
    grpc_status: int | None = None
