"""Cluster and endpoint model (``envoy.config.cluster.v3`` / ``endpoint.v3``).
See ``model_common`` for conventions (percentages are fractions 0..1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from proxy.codec.h2_settings import H2Settings
from proxy.config.model_common import (
    ConfigSource,
    HeaderValueOption,
    Int64Range,
    Locality,
    empty_mapping,
)
from proxy.config.model_http import Http1ProtocolOptions, HttpProtocolOptions
from proxy.config.model_tls import TransportSocketMatch, UpstreamTls

__all__ = [
    "CircuitBreakerThresholds",
    "CircuitBreakers",
    "Cluster",
    "ClusterLoadAssignment",
    "CommonLbConfig",
    "DiscoveryType",
    "DnsLookupFamily",
    "Endpoint",
    "HashFunction",
    "HealthCheck",
    "HealthStatus",
    "HttpHealthCheck",
    "LbPolicy",
    "LeastRequestConfig",
    "MaglevConfig",
    "OriginalDstLbConfig",
    "OutlierDetection",
    "RetryBudget",
    "RingHashConfig",
    "RoutingPriority",
    "TcpHealthCheck",
    "TcpKeepalive",
    "UpstreamHttpProtocolOptions",
    "UpstreamProtocol",
]


class HealthStatus(StrEnum):
    UNKNOWN = "UNKNOWN"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    DRAINING = "DRAINING"
    TIMEOUT = "TIMEOUT"
    DEGRADED = "DEGRADED"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One host. ``address`` is an IP (or a DNS name for DNS clusters). UNKNOWN health counts
    as healthy (Envoy). ``locality_weight`` is the locality's ``load_balancing_weight``."""

    address: str
    port: int
    hostname: str = ""
    weight: int = 1
    health_status: HealthStatus = HealthStatus.UNKNOWN
    priority: int = 0
    locality: Locality = field(default_factory=Locality)
    locality_weight: int | None = None
    health_check_port: int | None = None
    metadata: Mapping[str, object] = field(default_factory=empty_mapping)


@dataclass(frozen=True, slots=True)
class ClusterLoadAssignment:
    """Endpoints flattened over localities; ``overprovisioning_factor`` is Envoy's 140 as 1.4."""

    cluster_name: str
    endpoints: tuple[Endpoint, ...] = ()
    overprovisioning_factor: float = 1.4
    weighted_priority_health: bool = False
    endpoint_stale_after: float | None = None


class RoutingPriority(StrEnum):
    DEFAULT = "DEFAULT"
    HIGH = "HIGH"


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """Envoy defaults: 20 % of active requests, at least 3 concurrent retries."""

    budget_percent: float = 0.2
    min_retry_concurrency: int = 3


@dataclass(frozen=True, slots=True)
class CircuitBreakerThresholds:
    """With ``retry_budget`` set, it replaces ``max_retries``."""

    priority: RoutingPriority = RoutingPriority.DEFAULT
    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3
    retry_budget: RetryBudget | None = None
    track_remaining: bool = False
    max_connection_pools: int | None = None


@dataclass(frozen=True, slots=True)
class CircuitBreakers:
    """Thresholds resolved per priority (Envoy defaults where a priority was not configured)."""

    default: CircuitBreakerThresholds = field(default_factory=CircuitBreakerThresholds)
    high: CircuitBreakerThresholds = field(
        default_factory=lambda: CircuitBreakerThresholds(priority=RoutingPriority.HIGH)
    )


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Envoy defaults. ``enforcing_*`` and ``*_percent`` are fractions 0..1. Success-rate and
    failure-percentage ejection are modelled; the runtime implements the consecutive ones."""

    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 5
    consecutive_local_origin_failure: int = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_time_jitter: float = 0.0
    max_ejection_percent: float = 0.1
    enforcing_consecutive_5xx: float = 1.0
    enforcing_consecutive_gateway_failure: float = 0.0
    enforcing_consecutive_local_origin_failure: float = 1.0
    enforcing_success_rate: float = 1.0
    enforcing_local_origin_success_rate: float = 1.0
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: int = 1900
    failure_percentage_threshold: float = 0.85
    enforcing_failure_percentage: float = 0.0
    enforcing_failure_percentage_local_origin: float = 0.0
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50
    split_external_local_origin_errors: bool = False
    successful_active_health_check_uneject_host: bool = True


@dataclass(frozen=True, slots=True)
class HttpHealthCheck:
    path: bytes
    host: bytes | None = None
    expected_statuses: tuple[Int64Range, ...] = (Int64Range(200, 201),)
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class TcpHealthCheck:
    """Empty ``send`` only checks the connect; ``receive`` blocks must all be found."""

    send: bytes = b""
    receive: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active health checking (modelled; exactly one of ``http`` / ``tcp``)."""

    timeout: float
    interval: float
    unhealthy_threshold: int
    healthy_threshold: int
    http: HttpHealthCheck | None = None
    tcp: TcpHealthCheck | None = None
    interval_jitter: float = 0.0
    interval_jitter_percent: float = 0.0
    unhealthy_interval: float | None = None
    unhealthy_edge_interval: float | None = None
    healthy_edge_interval: float | None = None
    no_traffic_interval: float = 60.0
    initial_jitter: float = 0.0
    reuse_connection: bool = True
    always_log_health_check_failures: bool = False


class DiscoveryType(StrEnum):
    STATIC = "STATIC"
    STRICT_DNS = "STRICT_DNS"
    LOGICAL_DNS = "LOGICAL_DNS"
    EDS = "EDS"
    ORIGINAL_DST = "ORIGINAL_DST"


class LbPolicy(StrEnum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    RANDOM = "RANDOM"
    RING_HASH = "RING_HASH"
    MAGLEV = "MAGLEV"
    CLUSTER_PROVIDED = "CLUSTER_PROVIDED"


class DnsLookupFamily(StrEnum):
    AUTO = "AUTO"
    V4_ONLY = "V4_ONLY"
    V6_ONLY = "V6_ONLY"
    V4_PREFERRED = "V4_PREFERRED"
    ALL = "ALL"


class HashFunction(StrEnum):
    XX_HASH = "XX_HASH"
    MURMUR_HASH_2 = "MURMUR_HASH_2"


@dataclass(frozen=True, slots=True)
class LeastRequestConfig:
    choice_count: int = 2
    active_request_bias: float = 1.0


@dataclass(frozen=True, slots=True)
class RingHashConfig:
    minimum_ring_size: int = 1024
    maximum_ring_size: int = 8 * 1024 * 1024
    hash_function: HashFunction = HashFunction.XX_HASH
    use_hostname_for_hashing: bool = False
    hash_balance_factor: int | None = None


@dataclass(frozen=True, slots=True)
class MaglevConfig:
    table_size: int = 65537
    use_hostname_for_hashing: bool = False


@dataclass(frozen=True, slots=True)
class OriginalDstLbConfig:
    """With ``use_http_header`` the destination comes from ``http_header_name`` (default
    ``x-envoy-original-dst-host``) instead of the connection's original destination."""

    use_http_header: bool = False
    http_header_name: bytes = b"x-envoy-original-dst-host"
    upstream_port_override: int | None = None


@dataclass(frozen=True, slots=True)
class CommonLbConfig:
    """``healthy_panic_threshold`` defaults to 50 % (0.5); 0 disables panic mode."""

    healthy_panic_threshold: float = 0.5
    close_connections_on_host_set_change: bool = False
    ignore_new_hosts_until_first_hc: bool = False


@dataclass(frozen=True, slots=True)
class TcpKeepalive:
    """Unset values use the operating system's defaults."""

    keepalive_probes: int | None = None
    keepalive_time: int | None = None
    keepalive_interval: int | None = None


class UpstreamProtocol(StrEnum):
    """How a cluster picks the protocol to its hosts (``HttpProtocolOptions``'
    ``upstream_protocol_options``): HTTP/1.1, HTTP/2, the downstream request's protocol
    (``use_downstream_protocol_config``), or ALPN over TLS (``auto_config``)."""

    HTTP1 = "HTTP1"
    HTTP2 = "HTTP2"
    USE_DOWNSTREAM = "USE_DOWNSTREAM"
    AUTO = "AUTO"


@dataclass(frozen=True, slots=True)
class UpstreamHttpProtocolOptions:
    """The cluster's HTTP options (``envoy.extensions.upstreams.http.v3.HttpProtocolOptions``
    or the deprecated cluster fields). ``auto_sni`` sets SNI from the request's Host.
    ``http2_settings`` is set whenever the cluster may speak HTTP/2."""

    common: HttpProtocolOptions = field(default_factory=HttpProtocolOptions)
    http1: Http1ProtocolOptions = field(default_factory=Http1ProtocolOptions)
    auto_sni: bool = False
    auto_san_validation: bool = False
    override_auto_sni_header: bytes | None = None
    protocol: UpstreamProtocol = UpstreamProtocol.HTTP1
    http2_settings: H2Settings | None = None

    @property
    def http2(self) -> bool:
        """HTTP/2 to every host (prior knowledge, or ALPN h2 over TLS)."""
        return self.protocol is UpstreamProtocol.HTTP2


@dataclass(frozen=True, slots=True)
class Cluster:
    """An upstream cluster. Envoy defaults: connect_timeout 5 s, ROUND_ROBIN, dns_refresh_rate
    5 s, DNS family AUTO, 1 MiB buffer limit, cleanup_interval 5 s (ORIGINAL_DST).
    ``eds_service_name`` (EDS) is the name to ask for; it defaults to the cluster name.
    ``outlier_detection=None`` disables ejection."""

    name: str
    type: DiscoveryType = DiscoveryType.STATIC
    eds_service_name: str | None = None
    eds_config: ConfigSource | None = None
    connect_timeout: float = 5.0
    lb_policy: LbPolicy = LbPolicy.ROUND_ROBIN
    least_request: LeastRequestConfig = field(default_factory=LeastRequestConfig)
    ring_hash: RingHashConfig = field(default_factory=RingHashConfig)
    maglev: MaglevConfig = field(default_factory=MaglevConfig)
    load_assignment: ClusterLoadAssignment | None = None
    circuit_breakers: CircuitBreakers = field(default_factory=CircuitBreakers)
    outlier_detection: OutlierDetection | None = None
    health_checks: tuple[HealthCheck, ...] = ()
    dns_refresh_rate: float = 5.0
    dns_failure_refresh_rate: float | None = None
    dns_lookup_family: DnsLookupFamily = DnsLookupFamily.AUTO
    respect_dns_ttl: bool = False
    per_connection_buffer_limit_bytes: int = 1024 * 1024
    http_protocol_options: UpstreamHttpProtocolOptions = field(
        default_factory=UpstreamHttpProtocolOptions
    )
    transport_socket: UpstreamTls | None = None
    transport_socket_matches: tuple[TransportSocketMatch, ...] = ()
    common_lb_config: CommonLbConfig = field(default_factory=CommonLbConfig)
    original_dst_lb_config: OriginalDstLbConfig = field(default_factory=OriginalDstLbConfig)
    cleanup_interval: float = 5.0
    close_connections_on_host_health_failure: bool = False
    ignore_health_on_host_removal: bool = False
    tcp_keepalive: TcpKeepalive | None = None
    alt_stat_name: str = ""
    metadata: Mapping[str, object] = field(default_factory=empty_mapping)
    # upstream_bind_config.source_address: where the proxy's connections to the hosts leave
    # from (Istio binds its inbound passthrough to 127.0.0.6, which capture never takes).
    source_address: tuple[str, int] | None = None

    @property
    def max_requests_per_connection(self) -> int | None:
        return self.http_protocol_options.common.max_requests_per_connection

    @property
    def service_name(self) -> str:
        """The EDS resource name for this cluster."""
        return self.eds_service_name or self.name
