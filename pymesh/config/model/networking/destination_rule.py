"""``networking.istio.io`` DestinationRule: what happens to traffic after routing.

Load balancing, connection pools (circuit breaking), outlier detection, client TLS, and named
subsets of a service's endpoints. Durations are float seconds; ``None`` means "not set, use
Istio's default".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from pymesh.config.model.common import EMPTY_MAP, FrozenMap, LabelSelector, Oneofs, spec_field
from pymesh.config.model.networking.virtual_service import PortSelector

__all__ = [
    "BackendUtilization",
    "ClientTLSMode",
    "ClientTLSSettings",
    "ConnectionPoolSettings",
    "ConsistentHashLB",
    "CookieAttribute",
    "DestinationRule",
    "H2UpgradePolicy",
    "HTTPConnectionKeepalive",
    "HTTPCookie",
    "HTTPSettings",
    "LoadBalancerSettings",
    "LocalityDistribute",
    "LocalityFailover",
    "LocalityLoadBalancerSetting",
    "MagLev",
    "OutlierDetection",
    "PortTrafficPolicy",
    "ProxyProtocol",
    "ProxyProtocolVersion",
    "RetryBudget",
    "RingHash",
    "SimpleLB",
    "Subset",
    "TCPKeepalive",
    "TCPSettings",
    "TrafficPolicy",
    "TunnelSettings",
    "WarmupConfiguration",
    "ZoneAwareLoadBalancerSetting",
]


class SimpleLB(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    LEAST_CONN = "LEAST_CONN"  # deprecated alias of LEAST_REQUEST
    RANDOM = "RANDOM"
    PASSTHROUGH = "PASSTHROUGH"
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"


@dataclass(frozen=True, slots=True)
class CookieAttribute:
    name: str = spec_field(required=True)
    value: str = ""


@dataclass(frozen=True, slots=True)
class HTTPCookie:
    """Hash on a cookie; generated with ``ttl`` when absent (0s = session cookie)."""

    name: str = spec_field(required=True)
    path: str = ""
    ttl: float | None = spec_field(None, duration=True, zero_ok=True)
    attributes: tuple[CookieAttribute, ...] = ()


@dataclass(frozen=True, slots=True)
class RingHash:
    minimum_ring_size: int = spec_field(0, unsigned=True)


@dataclass(frozen=True, slots=True)
class MagLev:
    table_size: int = spec_field(0, unsigned=True)


@dataclass(frozen=True, slots=True)
class ConsistentHashLB:
    """Session affinity: hash a header, cookie, source IP or query parameter."""

    ONEOFS: ClassVar[Oneofs] = (
        ("http_header_name", "http_cookie", "use_source_ip", "http_query_parameter_name"),
        ("ring_hash", "maglev"),
    )

    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: int = spec_field(0, unsigned=True, deprecated="use ringHash")


@dataclass(frozen=True, slots=True)
class BackendUtilization:
    """Weights endpoints by backend-reported (ORCA) utilization."""

    error_utilization_penalty_percent: int = spec_field(0, unsigned=True)
    metric_names_for_computing_utilization: tuple[str, ...] = ()
    weight_expiration_period: float | None = spec_field(None, duration=True, zero_ok=True)
    weight_stabilization_period: float | None = spec_field(None, duration=True, zero_ok=True)
    weight_update_period: float | None = spec_field(None, duration=True, zero_ok=True)


@dataclass(frozen=True, slots=True)
class LocalityDistribute:
    """Send traffic from locality ``from_`` to localities in ``to`` by percentage."""

    from_: str = spec_field("", json="from")
    to: FrozenMap[str, int] = spec_field(EMPTY_MAP, unsigned=True)  # noqa: RUF009


@dataclass(frozen=True, slots=True)
class LocalityFailover:
    """Fail over from region ``from_`` to region ``to``."""

    from_: str = spec_field("", json="from")
    to: str = ""


@dataclass(frozen=True, slots=True)
class LocalityLoadBalancerSetting:
    distribute: tuple[LocalityDistribute, ...] = ()
    failover: tuple[LocalityFailover, ...] = ()
    failover_priority: tuple[str, ...] = ()
    enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class ZoneAwareLoadBalancerSetting:
    enabled: bool | None = None
    failover: tuple[LocalityFailover, ...] = ()
    failover_priority: tuple[str, ...] = ()
    min_cluster_size: int | None = spec_field(None, unsigned=True)


@dataclass(frozen=True, slots=True)
class WarmupConfiguration:
    """Slow start: ramp traffic to new endpoints over ``duration``."""

    duration: float = spec_field(required=True, duration=True)
    minimum_percent: float | None = None
    aggression: float | None = None


@dataclass(frozen=True, slots=True)
class LoadBalancerSettings:
    ONEOFS: ClassVar[Oneofs] = (("simple", "consistent_hash", "backend_utilization"),)

    simple: SimpleLB | None = None
    consistent_hash: ConsistentHashLB | None = None
    backend_utilization: BackendUtilization | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    zone_aware_lb_setting: ZoneAwareLoadBalancerSetting | None = None
    warmup_duration_secs: float | None = spec_field(None, duration=True)
    warmup: WarmupConfiguration | None = None


@dataclass(frozen=True, slots=True)
class TCPKeepalive:
    probes: int = spec_field(0, unsigned=True)
    time: float | None = spec_field(None, duration=True)
    interval: float | None = spec_field(None, duration=True)


@dataclass(frozen=True, slots=True)
class TCPSettings:
    """TCP limits: the circuit breaker's ``maxConnections`` and connection timeouts."""

    max_connections: int = 0
    connect_timeout: float | None = spec_field(None, duration=True)
    tcp_keepalive: TCPKeepalive | None = None
    max_connection_duration: float | None = spec_field(None, duration=True)
    idle_timeout: float | None = spec_field(None, duration=True, zero_ok=True)


class H2UpgradePolicy(StrEnum):
    DEFAULT = "DEFAULT"
    DO_NOT_UPGRADE = "DO_NOT_UPGRADE"
    UPGRADE = "UPGRADE"


@dataclass(frozen=True, slots=True)
class HTTPConnectionKeepalive:
    interval: float | None = spec_field(None, duration=True)
    timeout: float | None = spec_field(None, duration=True)


@dataclass(frozen=True, slots=True)
class HTTPSettings:
    """HTTP limits: pending requests, requests per connection, concurrent retries..."""

    http1_max_pending_requests: int = 0
    http2_max_requests: int = 0
    max_requests_per_connection: int = 0
    max_retries: int = 0
    idle_timeout: float | None = spec_field(None, duration=True)
    h2_upgrade_policy: H2UpgradePolicy = H2UpgradePolicy.DEFAULT
    use_client_protocol: bool = False
    max_concurrent_streams: int = 0
    http2_keep_alive: HTTPConnectionKeepalive | None = None


@dataclass(frozen=True, slots=True)
class ConnectionPoolSettings:
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Eject endpoints after consecutive errors, for ``base_ejection_time`` x ejections."""

    consecutive_errors: int = spec_field(0, deprecated="use consecutive5xxErrors")
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failures: int | None = spec_field(None, unsigned=True)
    consecutive_gateway_errors: int | None = spec_field(None, unsigned=True)
    consecutive_5xx_errors: int | None = spec_field(None, unsigned=True)
    interval: float | None = spec_field(None, duration=True)
    base_ejection_time: float | None = spec_field(None, duration=True)
    max_ejection_percent: int = 0
    min_health_percent: int = 0
    outlier_detection_http_error_codes: tuple[int, ...] = spec_field((), unsigned=True)


class ClientTLSMode(StrEnum):
    DISABLE = "DISABLE"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"
    ISTIO_MUTUAL = "ISTIO_MUTUAL"


@dataclass(frozen=True, slots=True)
class ClientTLSSettings:
    """TLS used when connecting to the upstream (``ISTIO_MUTUAL`` = mesh mTLS)."""

    mode: ClientTLSMode = ClientTLSMode.DISABLE
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    credential_name: str = ""
    subject_alt_names: tuple[str, ...] = ()
    sni: str = ""
    insecure_skip_verify: bool | None = None
    ca_crl: str = ""


@dataclass(frozen=True, slots=True)
class PortTrafficPolicy:
    """Overrides for one destination port."""

    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


@dataclass(frozen=True, slots=True)
class TunnelSettings:
    """Tunnel TCP through an HTTP proxy with CONNECT or POST."""

    target_host: str = spec_field(required=True)
    target_port: int = spec_field(required=True, unsigned=True)
    protocol: str = ""


class ProxyProtocolVersion(StrEnum):
    V1 = "V1"
    V2 = "V2"


@dataclass(frozen=True, slots=True)
class ProxyProtocol:
    version: ProxyProtocolVersion = ProxyProtocolVersion.V1


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """Limit concurrent retries to a share of active requests."""

    percent: float | None = None
    min_retry_concurrency: int = spec_field(0, unsigned=True)
    budget_interval: float | None = spec_field(None, duration=True, zero_ok=True)


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: tuple[PortTrafficPolicy, ...] = ()
    tunnel: TunnelSettings | None = None
    proxy_protocol: ProxyProtocol | None = None
    retry_budget: RetryBudget | None = None


@dataclass(frozen=True, slots=True)
class Subset:
    """A named group of endpoints selected by labels, with its own policy overrides."""

    name: str = spec_field(required=True)
    labels: FrozenMap[str, str] = EMPTY_MAP
    traffic_policy: TrafficPolicy | None = None


@dataclass(frozen=True, slots=True)
class DestinationRule:
    """Policies for traffic to ``host`` (short name resolved in the rule's namespace)."""

    KIND: ClassVar[str] = "DestinationRule"

    host: str = spec_field(required=True)
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()
    export_to: tuple[str, ...] = ()
    workload_selector: LabelSelector | None = None

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)
