"""DestinationRule traffic policy → cluster settings, merged the way Istio merges them:
the rule's policy, its port-level override, then the subset's policy and its port level; each
of load balancer, connection pool, outlier detection and TLS replaces the earlier one whole."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pilot.generate.common import duration, typed
from pymesh.config.model.networking import (
    ClientTLSMode,
    ClientTLSSettings,
    ConnectionPoolSettings,
    DestinationRule,
    LoadBalancerSettings,
    OutlierDetection,
    PortTrafficPolicy,
    SimpleLB,
    TrafficPolicy,
)

__all__ = [
    "HTTP_OPTIONS",
    "MAX_U32",
    "Policy",
    "apply_policy",
    "hash_policies",
    "merged_policy",
    "tls_mode",
]

#: Istio's "unlimited" for circuit breaker thresholds.
MAX_U32 = 4_294_967_295
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_SIMPLE = {
    SimpleLB.ROUND_ROBIN: "ROUND_ROBIN",
    SimpleLB.LEAST_CONN: "LEAST_REQUEST",
    SimpleLB.LEAST_REQUEST: "LEAST_REQUEST",
    SimpleLB.RANDOM: "RANDOM",
    SimpleLB.UNSPECIFIED: "LEAST_REQUEST",
}


@dataclass(frozen=True, slots=True)
class Policy:
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None

    @property
    def passthrough(self) -> bool:
        lb = self.load_balancer
        return lb is not None and lb.simple is SimpleLB.PASSTHROUGH


def _apply(base: Policy, tp: TrafficPolicy | PortTrafficPolicy | None) -> Policy:
    if tp is None:
        return base
    return replace(
        base,
        load_balancer=tp.load_balancer or base.load_balancer,
        connection_pool=tp.connection_pool or base.connection_pool,
        outlier_detection=tp.outlier_detection or base.outlier_detection,
        tls=tp.tls or base.tls,
    )


def _port_level(tp: TrafficPolicy | None, port: int) -> PortTrafficPolicy | None:
    if tp is None:
        return None
    return next(
        (p for p in tp.port_level_settings if p.port is not None and p.port.number == port), None
    )


def merged_policy(rule: DestinationRule | None, port: int, subset: str = "") -> Policy:
    policy = Policy()
    if rule is None:
        return policy
    policy = _apply(policy, rule.traffic_policy)
    policy = _apply(policy, _port_level(rule.traffic_policy, port))
    found = rule.subset(subset) if subset else None
    if found is not None and found.traffic_policy is not None:
        policy = _apply(policy, found.traffic_policy)
        policy = _apply(policy, _port_level(found.traffic_policy, port))
    return policy


def _lb(cluster: dict[str, Any], lb: LoadBalancerSettings | None) -> None:
    if lb is None or (lb.simple is None and lb.consistent_hash is None):
        cluster["lb_policy"] = "LEAST_REQUEST"
        return
    if lb.consistent_hash is not None:
        ch = lb.consistent_hash
        if ch.maglev is not None:
            cluster["lb_policy"] = "MAGLEV"
            if ch.maglev.table_size:
                cluster["maglev_lb_config"] = {"table_size": ch.maglev.table_size}
            return
        ring = ch.ring_hash.minimum_ring_size if ch.ring_hash else ch.minimum_ring_size
        cluster["lb_policy"] = "RING_HASH"
        cluster["ring_hash_lb_config"] = {"minimum_ring_size": ring or 1024}
        return
    assert lb.simple is not None
    cluster["lb_policy"] = _SIMPLE.get(lb.simple, "LEAST_REQUEST")


def _outlier(cluster: dict[str, Any], od: OutlierDetection) -> None:
    out: dict[str, Any] = {}
    five = od.consecutive_5xx_errors
    if five is None and od.consecutive_errors > 0:
        five = od.consecutive_errors
    if five is not None:
        out["consecutive_5xx"] = five
        out["enforcing_consecutive_5xx"] = 100 if five > 0 else 0
    if od.consecutive_gateway_errors is not None:
        out["consecutive_gateway_failure"] = od.consecutive_gateway_errors
        out["enforcing_consecutive_gateway_failure"] = 100 if od.consecutive_gateway_errors else 0
    if od.interval is not None:
        out["interval"] = duration(od.interval)
    if od.base_ejection_time is not None:
        out["base_ejection_time"] = duration(od.base_ejection_time)
    if od.max_ejection_percent > 0:
        out["max_ejection_percent"] = od.max_ejection_percent
    if od.split_external_local_origin_errors:
        out["split_external_local_origin_errors"] = True
        if od.consecutive_local_origin_failures is not None:
            out["consecutive_local_origin_failure"] = od.consecutive_local_origin_failures
    # Istio turns success-rate ejection off: only the consecutive-error detectors apply.
    out["enforcing_success_rate"] = 0
    cluster["outlier_detection"] = out
    # Istio's minHealthPercent is Envoy's panic threshold; 0 (the default) disables panic.
    cluster.setdefault("common_lb_config", {})["healthy_panic_threshold"] = {
        "value": float(od.min_health_percent)
    }


def apply_policy(
    cluster: dict[str, Any],
    policy: Policy,
    *,
    http: bool,
    http2: bool = False,
    tls: dict[str, Any] | None = None,
) -> None:
    """Fill ``cluster`` (a dict) with the policy's lb, circuit breakers, outlier detection,
    protocol options and TLS (``tls``: the transport socket built by the caller)."""
    if cluster.get("type") != "ORIGINAL_DST":
        _lb(cluster, policy.load_balancer)
    thresholds: dict[str, Any] = {
        "max_connections": MAX_U32,
        "max_pending_requests": MAX_U32,
        "max_requests": MAX_U32,
        "max_retries": MAX_U32,
        "track_remaining": True,
    }
    common: dict[str, Any] = {}
    cp = policy.connection_pool
    if cp is not None and cp.tcp is not None:
        if cp.tcp.max_connections > 0:
            thresholds["max_connections"] = cp.tcp.max_connections
        if cp.tcp.connect_timeout is not None:
            cluster["connect_timeout"] = duration(cp.tcp.connect_timeout)
        if cp.tcp.max_connection_duration is not None:
            common["max_connection_duration"] = duration(cp.tcp.max_connection_duration)
        ka = cp.tcp.tcp_keepalive
        if ka is not None:
            keepalive: dict[str, Any] = {}
            if ka.probes:
                keepalive["keepalive_probes"] = ka.probes
            if ka.time is not None:
                keepalive["keepalive_time"] = round(ka.time)
            if ka.interval is not None:
                keepalive["keepalive_interval"] = round(ka.interval)
            cluster["upstream_connection_options"] = {"tcp_keepalive": keepalive}
    if cp is not None and cp.http is not None:
        h = cp.http
        if h.http1_max_pending_requests > 0:
            thresholds["max_pending_requests"] = h.http1_max_pending_requests
        if h.http2_max_requests > 0:
            thresholds["max_requests"] = h.http2_max_requests
        if h.max_retries > 0:
            thresholds["max_retries"] = h.max_retries
        if h.max_requests_per_connection > 0:
            common["max_requests_per_connection"] = h.max_requests_per_connection
        if h.idle_timeout is not None:
            common["idle_timeout"] = duration(h.idle_timeout)
    cluster["circuit_breakers"] = {"thresholds": [thresholds]}
    if http and (common or http2):
        options: dict[str, Any] = {
            "explicit_http_config": (
                {"http2_protocol_options": {}} if http2 else {"http_protocol_options": {}}
            )
        }
        if common:
            options["common_http_protocol_options"] = common
        cluster["typed_extension_protocol_options"] = {HTTP_OPTIONS: typed("http_options", options)}
    if policy.outlier_detection is not None:
        _outlier(cluster, policy.outlier_detection)
    if tls is not None:
        cluster["transport_socket"] = tls


def hash_policies(policy: Policy) -> list[dict[str, Any]]:
    """The route ``hash_policy`` that goes with a consistent-hash load balancer."""
    lb = policy.load_balancer
    if lb is None or lb.consistent_hash is None:
        return []
    ch = lb.consistent_hash
    if ch.http_header_name:
        return [{"header": {"header_name": ch.http_header_name}}]
    if ch.http_cookie is not None:
        cookie: dict[str, Any] = {"name": ch.http_cookie.name}
        if ch.http_cookie.path:
            cookie["path"] = ch.http_cookie.path
        if ch.http_cookie.ttl is not None:
            cookie["ttl"] = duration(ch.http_cookie.ttl)
        return [{"cookie": cookie}]
    if ch.use_source_ip:
        return [{"connection_properties": {"source_ip": True}}]
    if ch.http_query_parameter_name:
        return [{"query_parameter": {"name": ch.http_query_parameter_name}}]
    return []


def tls_mode(policy: Policy) -> ClientTLSMode:
    return policy.tls.mode if policy.tls is not None else ClientTLSMode.DISABLE
