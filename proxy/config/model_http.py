"""Network and HTTP filter model: the HTTP connection manager, its HTTP filters, access logs,
and the TCP proxy. See ``model_common`` for conventions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from proxy.codec.h2_settings import H2Settings
from proxy.config.model_common import (
    CidrRange,
    ConfigSource,
    CustomTag,
    HeaderMatcher,
    HeaderValueOption,
    empty_mapping,
)
from proxy.config.model_route import RouteConfiguration

__all__ = [
    "DEFAULT_ACCESS_LOG_FORMAT",
    "AccessLog",
    "AccessLogFilter",
    "AccessLogFilterKind",
    "AccessLogSink",
    "CodecType",
    "ComparisonOp",
    "CorsFilterConfig",
    "FaultAbort",
    "FaultConfig",
    "FaultDelay",
    "ForwardClientCertDetails",
    "GrpcAccessLogService",
    "HeadersWithUnderscoresAction",
    "Http1ProtocolOptions",
    "HttpConnectionManager",
    "HttpFilter",
    "HttpProtocolOptions",
    "InternalAddressConfig",
    "LocalRateLimitConfig",
    "LocalRateLimitDescriptor",
    "PathWithEscapedSlashesAction",
    "Rds",
    "RouterConfig",
    "ServerHeaderTransformation",
    "SetCurrentClientCertDetails",
    "TcpProxy",
    "TcpProxyWeightedCluster",
    "TokenBucket",
    "Tracing",
    "UpgradeConfig",
    "ZipkinConfig",
]

# Envoy's default access log line (used when a logger sets no format).
DEFAULT_ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n'
)


# --- HTTP filter configs -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """``envoy.filters.http.router`` (``extensions.filters.http.router.v3.Router``)."""

    dynamic_stats: bool = True
    start_child_span: bool = False
    suppress_envoy_headers: bool = False
    strict_check_headers: tuple[bytes, ...] = ()
    respect_expected_rq_timeout: bool = False
    suppress_grpc_request_failure_code_stats: bool = False


@dataclass(frozen=True, slots=True)
class FaultDelay:
    """``fixed_delay`` seconds, or ``header_delay``: the delay in ms comes from the
    ``x-envoy-fault-delay-request`` request header. ``percentage`` defaults to 0 (Envoy's
    unset FractionalPercent)."""

    fixed_delay: float | None = None
    header_delay: bool = False
    percentage: float = 0.0


@dataclass(frozen=True, slots=True)
class FaultAbort:
    """``http_status`` (200..599), or ``header_abort``: the status comes from the
    ``x-envoy-fault-abort-request`` request header."""

    http_status: int | None = None
    header_abort: bool = False
    percentage: float = 0.0


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """``envoy.filters.http.fault`` (``HTTPFault``), filter-level or per-route.

    A fault applies only when ``upstream_cluster`` (if set) is the routed cluster, every
    matcher in ``headers`` matches, and ``downstream_nodes`` (if set) contains the
    ``x-envoy-downstream-service-node`` header. ``max_active_faults=None`` is unlimited."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    upstream_cluster: str | None = None
    headers: tuple[HeaderMatcher, ...] = ()
    downstream_nodes: frozenset[str] = frozenset()
    max_active_faults: int | None = None
    disable_downstream_cluster_stats: bool = False


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """``tokens_per_fill`` tokens are added every ``fill_interval`` s, up to ``max_tokens``
    (the bucket starts full)."""

    max_tokens: int
    tokens_per_fill: int = 1
    fill_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class LocalRateLimitConfig:
    """``envoy.filters.http.local_ratelimit``. Envoy's safe defaults: with ``filter_enabled``
    or ``filter_enforced`` unset the fraction is 0 (the filter does nothing)."""

    stat_prefix: str
    token_bucket: TokenBucket | None = None
    filter_enabled: float = 0.0
    filter_enforced: float = 0.0
    status: int = 429
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_add_when_not_enforced: tuple[HeaderValueOption, ...] = ()
    local_rate_limit_per_downstream_connection: bool = False
    enable_x_ratelimit_headers: bool = False
    #: per-descriptor buckets, matched against the descriptors the route's ``rate_limits``
    #: actions of ``stage`` build (``vh_rate_limits`` says whether the virtual host's count)
    descriptors: tuple[LocalRateLimitDescriptor, ...] = ()
    stage: int = 0
    vh_rate_limits: str = "OVERRIDE"
    always_consume_default_token_bucket: bool = True


@dataclass(frozen=True, slots=True)
class LocalRateLimitDescriptor:
    """A bucket for requests whose descriptor has exactly these ``entries``."""

    entries: tuple[tuple[str, str], ...]
    token_bucket: TokenBucket


@dataclass(frozen=True, slots=True)
class CorsFilterConfig:
    """``envoy.filters.http.cors``: the policy lives on routes / virtual hosts."""


@dataclass(frozen=True, slots=True)
class HttpFilter:
    """One HTTP filter. ``config`` is the translated config (``RouterConfig``, ``FaultConfig``,
    ... or whatever a registered translator returned). ``disabled`` filters run only on routes
    whose per-filter config enables them."""

    name: str
    config: object
    disabled: bool = False
    is_optional: bool = False
    type_url: str = ""


# --- access logs ---------------------------------------------------------------------------


class AccessLogSink(StrEnum):
    FILE = "file"
    STDOUT = "stdout"
    STDERR = "stderr"
    GRPC = "grpc"


class ComparisonOp(StrEnum):
    EQ = "EQ"
    GE = "GE"
    LE = "LE"
    NE = "NE"


class AccessLogFilterKind(StrEnum):
    STATUS_CODE = "status_code_filter"
    DURATION = "duration_filter"
    NOT_HEALTH_CHECK = "not_health_check_filter"
    RESPONSE_FLAG = "response_flag_filter"
    HEADER = "header_filter"
    AND = "and_filter"
    OR = "or_filter"


@dataclass(frozen=True, slots=True)
class AccessLogFilter:
    """A tree of access-log filters. STATUS_CODE / DURATION compare ``value`` (status, or
    duration in seconds) with ``op``; RESPONSE_FLAG matches any of ``flags`` (or any flag when
    empty); HEADER uses ``header``; AND / OR combine ``children``."""

    kind: AccessLogFilterKind
    op: ComparisonOp = ComparisonOp.EQ
    value: float = 0
    flags: frozenset[str] = frozenset()
    header: HeaderMatcher | None = None
    children: tuple[AccessLogFilter, ...] = ()


@dataclass(frozen=True, slots=True)
class GrpcAccessLogService:
    """``envoy.access_loggers.http_grpc`` / ``tcp_grpc``: entries streamed to an Access Log
    Service (``envoy.service.accesslog.v3``) in ``cluster_name``, batched until
    ``buffer_size_bytes`` or ``buffer_flush_interval`` seconds (Envoy's 16 KiB and 1 s).
    The ``additional_*`` names are lower-cased header names logged in the entry's maps."""

    log_name: str
    cluster_name: str
    authority: str = ""
    buffer_size_bytes: int = 16384
    buffer_flush_interval: float = 1.0
    tcp: bool = False
    additional_request_headers: tuple[str, ...] = ()
    additional_response_headers: tuple[str, ...] = ()
    additional_response_trailers: tuple[str, ...] = ()
    #: ``common_config.filter_state_objects_to_log``: these filter state objects (Istio's
    #: ``wasm.downstream_peer``, ...) go into the entry's ``filter_state_objects``
    filter_state_objects: tuple[str, ...] = ()
    #: ``common_config.custom_tags``: go into the entry's ``custom_tags``
    custom_tags: tuple[CustomTag, ...] = ()


@dataclass(frozen=True, slots=True)
class AccessLog:
    """One access logger. Exactly one of ``text_format`` / ``json_format`` is set; when the
    Envoy config set no format, ``text_format`` is ``DEFAULT_ACCESS_LOG_FORMAT``.
    ``path`` is set for FILE sinks, ``grpc`` for GRPC ones (which have no format)."""

    name: str
    sink: AccessLogSink
    path: str | None = None
    text_format: str | None = DEFAULT_ACCESS_LOG_FORMAT
    json_format: Mapping[str, object] | None = None
    omit_empty_values: bool = False
    filter: AccessLogFilter | None = None
    grpc: GrpcAccessLogService | None = None


# --- connection manager --------------------------------------------------------------------


class CodecType(StrEnum):
    AUTO = "AUTO"
    HTTP1 = "HTTP1"
    HTTP2 = "HTTP2"


class ServerHeaderTransformation(StrEnum):
    OVERWRITE = "OVERWRITE"
    APPEND_IF_ABSENT = "APPEND_IF_ABSENT"
    PASS_THROUGH = "PASS_THROUGH"


class HeadersWithUnderscoresAction(StrEnum):
    ALLOW = "ALLOW"
    REJECT_REQUEST = "REJECT_REQUEST"
    DROP_HEADER = "DROP_HEADER"


class PathWithEscapedSlashesAction(StrEnum):
    # IMPLEMENTATION_SPECIFIC_DEFAULT is translated to KEEP_UNCHANGED, Envoy's behaviour.
    KEEP_UNCHANGED = "KEEP_UNCHANGED"
    REJECT_REQUEST = "REJECT_REQUEST"
    UNESCAPE_AND_REDIRECT = "UNESCAPE_AND_REDIRECT"
    UNESCAPE_AND_FORWARD = "UNESCAPE_AND_FORWARD"


class ForwardClientCertDetails(StrEnum):
    SANITIZE = "SANITIZE"
    FORWARD_ONLY = "FORWARD_ONLY"
    APPEND_FORWARD = "APPEND_FORWARD"
    SANITIZE_SET = "SANITIZE_SET"
    ALWAYS_FORWARD_ONLY = "ALWAYS_FORWARD_ONLY"


@dataclass(frozen=True, slots=True)
class SetCurrentClientCertDetails:
    subject: bool = False
    cert: bool = False
    chain: bool = False
    dns: bool = False
    uri: bool = False


@dataclass(frozen=True, slots=True)
class HttpProtocolOptions:
    """``config.core.v3.HttpProtocolOptions`` (downstream ``common_http_protocol_options`` or
    upstream ``common_http_protocol_options``). Envoy defaults: idle 1 h, 100 headers."""

    idle_timeout: float | None = 3600.0
    max_connection_duration: float | None = None
    max_headers_count: int = 100
    max_stream_duration: float | None = None
    headers_with_underscores_action: HeadersWithUnderscoresAction = (
        HeadersWithUnderscoresAction.ALLOW
    )
    max_requests_per_connection: int | None = None


@dataclass(frozen=True, slots=True)
class Http1ProtocolOptions:
    """``config.core.v3.Http1ProtocolOptions``: ``header_key_format`` proper_case_words only."""

    allow_absolute_url: bool = True
    accept_http_10: bool = False
    default_host_for_http_10: bytes | None = None
    proper_case_header_keys: bool = False
    enable_trailers: bool = False
    allow_chunked_length: bool = False


@dataclass(frozen=True, slots=True)
class Rds:
    route_config_name: str
    config_source: ConfigSource = field(default_factory=ConfigSource)


@dataclass(frozen=True, slots=True)
class InternalAddressConfig:
    unix_sockets: bool = False
    cidr_ranges: tuple[CidrRange, ...] = ()


@dataclass(frozen=True, slots=True)
class UpgradeConfig:
    upgrade_type: str
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class ZipkinConfig:
    """``envoy.tracers.zipkin``: spans are POSTed to ``collector_endpoint`` on the cluster."""

    collector_cluster: str
    collector_endpoint: str
    trace_id_128bit: bool = False
    shared_span_context: bool = True
    collector_hostname: str | None = None
    #: ``trace_context_option: USE_B3_WITH_W3C_PROPAGATION``: W3C ``traceparent`` is read
    #: when no B3 context came, and written beside B3
    w3c_propagation: bool = False


@dataclass(frozen=True, slots=True)
class Tracing:
    """HCM ``tracing``; sampling values are fractions (Envoy default 1.0 each)."""

    client_sampling: float = 1.0
    random_sampling: float = 1.0
    overall_sampling: float = 1.0
    verbose: bool = False
    max_path_tag_length: int = 256
    spawn_upstream_span: bool | None = None
    provider: ZipkinConfig | None = None
    #: set on every sampled span when it finishes
    custom_tags: tuple[CustomTag, ...] = ()


@dataclass(frozen=True, slots=True)
class HttpConnectionManager:
    """``envoy.filters.network.http_connection_manager``. Exactly one of ``route_config`` and
    ``rds`` is set. Timeouts are seconds; 0 / None disables. Envoy's defaults throughout:
    server_name "envoy", generate_request_id true, stream_idle_timeout 300 s, drain_timeout
    5 s, delayed_close_timeout 1 s, max_request_headers_kb 60."""

    stat_prefix: str
    codec_type: CodecType = CodecType.AUTO
    route_config: RouteConfiguration | None = None
    rds: Rds | None = None
    http_filters: tuple[HttpFilter, ...] = ()
    access_log: tuple[AccessLog, ...] = ()
    server_name: bytes = b"envoy"
    server_header_transformation: ServerHeaderTransformation = ServerHeaderTransformation.OVERWRITE
    use_remote_address: bool = False
    xff_num_trusted_hops: int = 0
    skip_xff_append: bool = False
    via: bytes | None = None
    generate_request_id: bool = True
    preserve_external_request_id: bool = False
    always_set_request_id_in_response: bool = False
    request_timeout: float = 0.0
    request_headers_timeout: float = 0.0
    stream_idle_timeout: float = 300.0
    drain_timeout: float = 5.0
    delayed_close_timeout: float = 1.0
    common_http_protocol_options: HttpProtocolOptions = field(default_factory=HttpProtocolOptions)
    http_protocol_options: Http1ProtocolOptions = field(default_factory=Http1ProtocolOptions)
    http2_protocol_options: H2Settings = field(default_factory=H2Settings)
    max_request_headers_kb: int = 60
    normalize_path: bool = False
    merge_slashes: bool = False
    path_with_escaped_slashes_action: PathWithEscapedSlashesAction = (
        PathWithEscapedSlashesAction.KEEP_UNCHANGED
    )
    strip_any_host_port: bool = False
    strip_trailing_host_dot: bool = False
    internal_address_config: InternalAddressConfig | None = None
    add_user_agent: bool = False
    forward_client_cert_details: ForwardClientCertDetails = ForwardClientCertDetails.SANITIZE
    set_current_client_cert_details: SetCurrentClientCertDetails | None = None
    proxy_100_continue: bool = False
    tracing: Tracing | None = None
    upgrade_configs: tuple[UpgradeConfig, ...] = ()


# --- tcp proxy -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TcpProxyWeightedCluster:
    name: str
    weight: int


@dataclass(frozen=True, slots=True)
class TcpProxy:
    """``envoy.filters.network.tcp_proxy``: exactly one of ``cluster`` / ``weighted_clusters``.
    ``idle_timeout`` defaults to Envoy's 1 h; None disables."""

    stat_prefix: str
    cluster: str | None = None
    weighted_clusters: tuple[TcpProxyWeightedCluster, ...] = ()
    idle_timeout: float | None = 3600.0
    max_connect_attempts: int = 1
    max_downstream_connection_duration: float | None = None
    access_log: tuple[AccessLog, ...] = ()
    metadata: Mapping[str, object] = field(default_factory=empty_mapping)
