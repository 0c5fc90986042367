"""DestinationRule checks, after Istio's ``ValidateDestinationRule``."""

from __future__ import annotations

import math

from pymesh.config import hosts
from pymesh.config.issues import Reporter
from pymesh.config.model.networking import (
    ClientTLSMode,
    ClientTLSSettings,
    ConnectionPoolSettings,
    DestinationRule,
    H2UpgradePolicy,
    LoadBalancerSettings,
    LocalityLoadBalancerSetting,
    OutlierDetection,
    PortTrafficPolicy,
    TrafficPolicy,
)
from pymesh.config.validate._common import (
    check,
    check_export_to,
    check_labels,
    check_port,
    check_selector_labels,
    check_subset_name,
)

__all__ = ["validate_connection_pool", "validate_destination_rule"]

_TOPOLOGY_LABELS = frozenset(
    {"topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"}
)
_MAGLEV_MAX = 5000011


def validate_destination_rule(
    dr: DestinationRule, namespace: str, path: str, rep: Reporter
) -> None:
    check(rep, f"{path}.host", hosts.check_wildcard_domain, dr.host)
    if dr.traffic_policy is not None:
        _traffic_policy(dr.traffic_policy, f"{path}.trafficPolicy", rep)
    names: set[str] = set()
    for i, subset in enumerate(dr.subsets):
        spath = f"{path}.subsets[{i}]"
        check_subset_name(rep, f"{spath}.name", subset.name)
        if subset.name in names:
            rep.fail(f"{spath}.name", f"duplicate subset name {subset.name!r}")
        names.add(subset.name)
        check_labels(rep, f"{spath}.labels", subset.labels)
        if subset.traffic_policy is not None:
            _traffic_policy(subset.traffic_policy, f"{spath}.trafficPolicy", rep)
    check_export_to(rep, f"{path}.exportTo", dr.export_to, namespace, service_entry=False)
    if dr.workload_selector is not None:
        check_selector_labels(
            rep, f"{path}.workloadSelector.matchLabels", dr.workload_selector.match_labels
        )
        if any(e not in (".", namespace) for e in dr.export_to):
            rep.fail(
                f"{path}.exportTo",
                "a DestinationRule with workloadSelector cannot be exported beyond its namespace",
            )


def _traffic_policy(tp: TrafficPolicy, path: str, rep: Reporter) -> None:
    if tp == TrafficPolicy():
        rep.fail(path, "traffic policy must set at least one field")
    if tp.tunnel is not None and tp.proxy_protocol is not None:
        rep.fail(path, "tunnel and proxyProtocol cannot both be set")
    _port_policy(tp, path, rep)
    for i, pl in enumerate(tp.port_level_settings):
        ppath = f"{path}.portLevelSettings[{i}]"
        if pl.port is None:
            rep.fail(f"{ppath}.port", "port-level settings need a port")
        check_port(rep, f"{ppath}.port.number", pl.port.number)
        if pl == PortTrafficPolicy(port=pl.port):
            rep.fail(ppath, "port traffic policy must set at least one field")
        _port_policy(pl, ppath, rep)
    if (tunnel := tp.tunnel) is not None:
        tpath = f"{path}.tunnel"
        if tunnel.protocol not in ("", "CONNECT", "POST"):
            rep.fail(f"{tpath}.protocol", 'tunnel protocol must be "CONNECT" or "POST"')
        if not hosts.is_ip(tunnel.target_host):
            check(rep, f"{tpath}.targetHost", hosts.check_fqdn, tunnel.target_host)
        check_port(rep, f"{tpath}.targetPort", tunnel.target_port)
    budget = tp.retry_budget.percent if tp.retry_budget is not None else None
    if budget is not None and not 0 <= budget <= 100:
        rep.fail(f"{path}.retryBudget.percent", "percent must be in range 0..100")


def _port_policy(tp: TrafficPolicy | PortTrafficPolicy, path: str, rep: Reporter) -> None:
    if tp.outlier_detection is not None:
        _outlier(tp.outlier_detection, f"{path}.outlierDetection", rep)
    if tp.connection_pool is not None:
        validate_connection_pool(tp.connection_pool, f"{path}.connectionPool", rep)
    if tp.load_balancer is not None:
        _load_balancer(tp.load_balancer, tp.outlier_detection, f"{path}.loadBalancer", rep)
    if tp.tls is not None:
        _client_tls(tp.tls, f"{path}.tls", rep)


def _outlier(od: OutlierDetection, path: str, rep: Reporter) -> None:
    if od.consecutive_local_origin_failures and not od.split_external_local_origin_errors:
        rep.fail(
            f"{path}.consecutiveLocalOriginFailures",
            "needs splitExternalLocalOriginErrors: true",
        )
    for name, value in (
        ("maxEjectionPercent", od.max_ejection_percent),
        ("minHealthPercent", od.min_health_percent),
    ):
        if not 0 <= value <= 100:
            rep.fail(f"{path}.{name}", f"percentage {value} is not in range 0..100")
    for i, code in enumerate(od.outlier_detection_http_error_codes):
        if not 100 <= code <= 599:
            rep.fail(f"{path}.outlierDetectionHttpErrorCodes[{i}]", f"{code} is not an HTTP status")


def validate_connection_pool(cp: ConnectionPoolSettings, path: str, rep: Reporter) -> None:
    if cp.http is None and cp.tcp is None:
        rep.fail(path, "connection pool must set tcp and/or http")
    if (http := cp.http) is not None:
        for name, value in (
            ("http1MaxPendingRequests", http.http1_max_pending_requests),
            ("http2MaxRequests", http.http2_max_requests),
            ("maxRequestsPerConnection", http.max_requests_per_connection),
            ("maxRetries", http.max_retries),
            ("maxConcurrentStreams", http.max_concurrent_streams),
        ):
            if value < 0:
                rep.fail(f"{path}.http.{name}", f"must not be negative, got {value}")
        if http.h2_upgrade_policy is H2UpgradePolicy.UPGRADE and http.use_client_protocol:
            rep.fail(
                f"{path}.http", "useClientProtocol cannot be true with h2UpgradePolicy UPGRADE"
            )
        if (ka := http.http2_keep_alive) is not None:
            if ka.interval is None:
                rep.fail(f"{path}.http.http2KeepAlive.interval", "required field is missing")
            if ka.timeout is None:
                rep.fail(f"{path}.http.http2KeepAlive.timeout", "required field is missing")
    if cp.tcp is not None and cp.tcp.max_connections < 0:
        rep.fail(f"{path}.tcp.maxConnections", "must not be negative")


def _is_prime(n: int) -> bool:
    if n < 4:
        return n > 1
    if n % 2 == 0:
        return False
    return all(n % f for f in range(3, math.isqrt(n) + 1, 2))


def _load_balancer(
    lb: LoadBalancerSettings, outlier: OutlierDetection | None, path: str, rep: Reporter
) -> None:
    if (ch := lb.consistent_hash) is not None:
        cpath = f"{path}.consistentHash"
        if ch.http_cookie is not None:
            names: set[str] = set()
            for i, attr in enumerate(ch.http_cookie.attributes):
                if not attr.name:
                    rep.fail(f"{cpath}.httpCookie.attributes[{i}].name", "must not be empty")
                if attr.name in names:
                    rep.fail(f"{cpath}.httpCookie.attributes[{i}]", "duplicate cookie attribute")
                names.add(attr.name)
        if ch.minimum_ring_size and (ch.ring_hash is not None or ch.maglev is not None):
            rep.fail(cpath, "only one of minimumRingSize, ringHash or maglev may be set")
        if ch.maglev is not None:
            size = ch.maglev.table_size
            if size == 0 or size >= _MAGLEV_MAX or not _is_prime(size):
                rep.fail(f"{cpath}.maglev.tableSize", f"must be a prime below {_MAGLEV_MAX}")
    if lb.locality_lb_setting is not None and lb.zone_aware_lb_setting is not None:
        rep.fail(path, "only one of localityLbSetting and zoneAwareLbSetting may be set")
    if lb.locality_lb_setting is not None:
        _locality(lb.locality_lb_setting, outlier, f"{path}.localityLbSetting", rep)
    if lb.warmup is not None and lb.warmup_duration_secs is not None:
        rep.fail(path, "only one of warmupDurationSecs or warmup may be set")
    if (warm := lb.warmup) is not None:
        if warm.minimum_percent is not None and not 0 <= warm.minimum_percent <= 100:
            rep.fail(f"{path}.warmup.minimumPercent", "must be in range 0..100")
        if warm.aggression is not None and warm.aggression <= 0:
            rep.fail(f"{path}.warmup.aggression", "must be greater than 0")


def _locality(
    loc: LocalityLoadBalancerSetting, outlier: OutlierDetection | None, path: str, rep: Reporter
) -> None:
    if loc.distribute and loc.failover:
        rep.fail(path, "distribute and failover cannot both be set")
    if loc.failover:
        for i, label in enumerate(loc.failover_priority):
            if label in _TOPOLOGY_LABELS:
                rep.fail(f"{path}.failoverPriority[{i}]", f"{label} conflicts with failover")
    for i, dist in enumerate(loc.distribute):
        weights = dist.to.values()
        if any(not 1 <= w <= 100 for w in weights):
            rep.fail(f"{path}.distribute[{i}].to", "locality weights must be in range 1..100")
        if sum(weights) != 100:
            rep.fail(
                f"{path}.distribute[{i}].to", f"locality weights sum to {sum(weights)}, not 100"
            )
    if (loc.failover or loc.failover_priority) and outlier is None:
        rep.warn(path, "locality failover needs outlierDetection to take effect")
    for i, fo in enumerate(loc.failover):
        fpath = f"{path}.failover[{i}]"
        if fo.from_ == fo.to:
            rep.fail(fpath, "failover must name two different regions")
        if "/" in fo.from_ + fo.to or "*" in fo.from_ + fo.to:
            rep.fail(fpath, "failover takes plain region names (no '/' or '*')")


def _client_tls(tls: ClientTLSSettings, path: str, rep: Reporter) -> None:
    if tls.insecure_skip_verify:
        if tls.mode is ClientTLSMode.SIMPLE and (
            tls.ca_certificates or tls.credential_name or tls.subject_alt_names
        ):
            rep.fail(path, "insecureSkipVerify excludes caCertificates, credentialName and SANs")
        if tls.mode is ClientTLSMode.MUTUAL and (tls.ca_certificates or tls.subject_alt_names):
            rep.fail(path, "insecureSkipVerify excludes caCertificates and subjectAltNames")
    if tls.mode in (ClientTLSMode.SIMPLE, ClientTLSMode.MUTUAL) and tls.credential_name:
        if tls.client_certificate or tls.private_key or tls.ca_certificates or tls.ca_crl:
            rep.fail(path, "with credentialName, certificates and keys come from the credential")
        return
    if tls.mode is ClientTLSMode.MUTUAL:
        if not tls.client_certificate:
            rep.fail(f"{path}.clientCertificate", "required for MUTUAL TLS")
        if not tls.private_key:
            rep.fail(f"{path}.privateKey", "required for MUTUAL TLS")
