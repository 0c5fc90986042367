"""``envoy.config.cluster.v3.Cluster`` and ``endpoint.v3.ClusterLoadAssignment`` → model."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from proxy.config.model import (
    Cluster,
    ClusterLoadAssignment,
    CommonLbConfig,
    DiscoveryType,
    DnsLookupFamily,
    Endpoint,
    HashFunction,
    HealthStatus,
    LbPolicy,
    LeastRequestConfig,
    MaglevConfig,
    OriginalDstLbConfig,
    RingHashConfig,
)
from proxy.config.translate.common import (
    at,
    config_source,
    join,
    locality,
    metadata,
    opt_duration,
    percent,
    socket_address,
    wrapped,
)
from proxy.config.translate.support import check_supported
from proxy.config.translate.upstream import (
    circuit_breakers,
    health_check,
    outlier_detection,
    tcp_keepalive,
    transport_socket_matches,
    upstream_http_options,
    upstream_socket,
)
from pymesh.errors import UnsupportedError, ValidationError

__all__ = ["PIPE_PREFIX", "translate_cluster", "translate_cluster_load_assignment"]

#: How an endpoint on a Unix socket (``pipe``) is written in the model: ``unix:<path>``,
#: port 0 (gRPC's own spelling of such a target).
PIPE_PREFIX = "unix:"

_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_C = cluster_pb2.Cluster


def translate_cluster(
    proto: cluster_pb2.Cluster, path: str = "", *, allow_http2: bool = False
) -> Cluster:
    """Translate a CDS resource or a static cluster; errors carry paths under ``path``.
    ``allow_http2`` is for the bootstrap's xDS cluster only (used by the gRPC client)."""
    if proto.HasField("cluster_type"):
        raise UnsupportedError(
            f"cluster type extension '{proto.cluster_type.name}' "
            f"({proto.cluster_type.typed_config.type_url}) is not supported by pymesh",
            path=join(path, "cluster_type"),
        )
    check_supported(proto, path)
    kind = DiscoveryType(_C.DiscoveryType.Name(proto.type))
    lb_policy_name = _C.LbPolicy.Name(proto.lb_policy)
    if lb_policy_name == "LOAD_BALANCING_POLICY_CONFIG":
        raise UnsupportedError(
            "lb_policy LOAD_BALANCING_POLICY_CONFIG is not supported by pymesh",
            path=join(path, "lb_policy"),
        )
    lb_policy = LbPolicy(lb_policy_name)
    if (kind is DiscoveryType.ORIGINAL_DST) != (lb_policy is LbPolicy.CLUSTER_PROVIDED):
        raise ValidationError(
            f"cluster: LB policy {lb_policy_name} is not valid for Cluster type {kind.value}. "
            "Only 'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'",
            path=join(path, "lb_policy"),
        )
    load_assignment = None
    if proto.HasField("load_assignment"):
        load_assignment = _load_assignment(
            proto.load_assignment,
            join(path, "load_assignment"),
            allow_hostnames=kind in (DiscoveryType.STRICT_DNS, DiscoveryType.LOGICAL_DNS),
        )
    _check_hosts(kind, load_assignment, path)
    eds_service_name = None
    eds = None
    if kind is DiscoveryType.EDS:
        eds_path = join(path, "eds_cluster_config")
        if not proto.eds_cluster_config.HasField("eds_config"):
            raise ValidationError("EDS clusters need eds_cluster_config.eds_config", path=eds_path)
        eds = config_source(proto.eds_cluster_config.eds_config, join(eds_path, "eds_config"))
        eds_service_name = proto.eds_cluster_config.service_name or None
        # Envoy does not use load_assignment for EDS clusters: endpoints only come over EDS.
        load_assignment = None
    hashing = proto.common_lb_config.consistent_hashing_lb_config
    return Cluster(
        name=proto.name,
        type=kind,
        eds_service_name=eds_service_name,
        eds_config=eds,
        connect_timeout=_or(opt_duration(proto, "connect_timeout"), 5.0),
        lb_policy=lb_policy,
        least_request=LeastRequestConfig(
            choice_count=wrapped(proto.least_request_lb_config, "choice_count", 2),
            active_request_bias=(
                proto.least_request_lb_config.active_request_bias.default_value
                if proto.least_request_lb_config.HasField("active_request_bias")
                else 1.0
            ),
        ),
        ring_hash=_ring_hash(proto, hashing, join(path, "ring_hash_lb_config")),
        maglev=_maglev(proto, hashing, join(path, "maglev_lb_config")),
        load_assignment=load_assignment,
        circuit_breakers=circuit_breakers(proto.circuit_breakers),
        outlier_detection=(
            outlier_detection(proto.outlier_detection, join(path, "outlier_detection"))
            if proto.HasField("outlier_detection")
            else None
        ),
        health_checks=tuple(
            health_check(item, at(join(path, "health_checks"), index))
            for index, item in enumerate(proto.health_checks)
        ),
        dns_refresh_rate=_or(opt_duration(proto, "dns_refresh_rate"), 5.0),
        dns_lookup_family=DnsLookupFamily(_C.DnsLookupFamily.Name(proto.dns_lookup_family)),
        respect_dns_ttl=proto.respect_dns_ttl,
        per_connection_buffer_limit_bytes=wrapped(
            proto, "per_connection_buffer_limit_bytes", 1024 * 1024
        ),
        http_protocol_options=upstream_http_options(proto, path, allow_http2),
        transport_socket=upstream_socket(proto, path),
        transport_socket_matches=transport_socket_matches(proto, path),
        common_lb_config=CommonLbConfig(
            healthy_panic_threshold=percent(proto.common_lb_config, "healthy_panic_threshold", 0.5),
            close_connections_on_host_set_change=(
                proto.common_lb_config.close_connections_on_host_set_change
            ),
            ignore_new_hosts_until_first_hc=proto.common_lb_config.ignore_new_hosts_until_first_hc,
        ),
        original_dst_lb_config=OriginalDstLbConfig(
            use_http_header=proto.original_dst_lb_config.use_http_header,
            http_header_name=(
                proto.original_dst_lb_config.http_header_name.lower() or "x-envoy-original-dst-host"
            ).encode(),
            upstream_port_override=wrapped(
                proto.original_dst_lb_config, "upstream_port_override", None
            ),
        ),
        cleanup_interval=_or(opt_duration(proto, "cleanup_interval"), 5.0),
        close_connections_on_host_health_failure=proto.close_connections_on_host_health_failure,
        ignore_health_on_host_removal=proto.ignore_health_on_host_removal,
        tcp_keepalive=tcp_keepalive(proto),
        alt_stat_name=proto.alt_stat_name,
        metadata=metadata(proto),
        source_address=_source_address(proto, path),
    )


def _source_address(proto: Any, path: str) -> tuple[str, int] | None:
    if not proto.HasField("upstream_bind_config"):
        return None
    bind = proto.upstream_bind_config
    if not bind.HasField("source_address"):
        return None
    address = socket_address(bind.source_address, join(path, "upstream_bind_config.source_address"))
    return (address.host, address.port)


def translate_cluster_load_assignment(
    proto: endpoint_pb2.ClusterLoadAssignment, path: str = "", *, allow_hostnames: bool = False
) -> ClusterLoadAssignment:
    """Translate an EDS resource (endpoint addresses must be IPs unless ``allow_hostnames``)."""
    check_supported(proto, path)
    return _load_assignment(proto, path, allow_hostnames=allow_hostnames)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _check_hosts(kind: DiscoveryType, assignment: ClusterLoadAssignment | None, path: str) -> None:
    hosts = assignment.endpoints if assignment is not None else ()
    if kind is DiscoveryType.ORIGINAL_DST and hosts:
        raise ValidationError(
            "ORIGINAL_DST clusters must have no load assignment configured",
            path=join(path, "load_assignment"),
        )
    if kind is DiscoveryType.LOGICAL_DNS and len(hosts) != 1:
        raise ValidationError(
            "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint",
            path=join(path, "load_assignment"),
        )


def _load_assignment(proto: Any, path: str, *, allow_hostnames: bool) -> ClusterLoadAssignment:
    endpoints = []
    for loc_index, group in enumerate(proto.endpoints):
        group_path = at(join(path, "endpoints"), loc_index)
        group_locality = locality(group.locality)
        for index, item in enumerate(group.lb_endpoints):
            item_path = at(join(group_path, "lb_endpoints"), index)
            if item.WhichOneof("host_identifier") != "endpoint":
                raise ValidationError("endpoint is required", path=join(item_path, "endpoint"))
            endpoint = item.endpoint
            address_path = join(item_path, "endpoint.address")
            kind = endpoint.address.WhichOneof("address")
            if kind == "pipe":
                # A Unix socket: the gRPC side calls (the identity agent's SDS) use it.
                host, port = PIPE_PREFIX + endpoint.address.pipe.path, 0
            elif kind == "socket_address":
                address = socket_address(
                    endpoint.address.socket_address,
                    join(address_path, "socket_address"),
                    resolve=allow_hostnames,
                )
                host, port = address.host, address.port
            else:
                raise UnsupportedError(
                    "only socket_address and pipe endpoints are supported by pymesh",
                    path=address_path,
                )
            endpoints.append(
                Endpoint(
                    address=host,
                    port=port,
                    hostname=endpoint.hostname,
                    weight=wrapped(item, "load_balancing_weight", 1),
                    health_status=HealthStatus(
                        health_check_pb2.HealthStatus.Name(item.health_status)
                    ),
                    priority=group.priority,
                    locality=group_locality,
                    locality_weight=wrapped(group, "load_balancing_weight", None),
                    health_check_port=endpoint.health_check_config.port_value or None,
                    metadata=metadata(item),
                )
            )
    policy = proto.policy
    return ClusterLoadAssignment(
        cluster_name=proto.cluster_name,
        endpoints=tuple(endpoints),
        overprovisioning_factor=wrapped(policy, "overprovisioning_factor", 140) / 100.0,
        weighted_priority_health=policy.weighted_priority_health,
        endpoint_stale_after=opt_duration(policy, "endpoint_stale_after") or None,
    )


def _ring_hash(proto: Any, hashing: Any, path: str) -> RingHashConfig:
    config = proto.ring_hash_lb_config
    minimum = wrapped(config, "minimum_ring_size", 1024)
    maximum = wrapped(config, "maximum_ring_size", 8 * 1024 * 1024)
    if minimum > maximum:
        raise ValidationError(
            f"ring hash: minimum_ring_size ({minimum}) > maximum_ring_size ({maximum})",
            path=path,
        )
    return RingHashConfig(
        minimum_ring_size=minimum,
        maximum_ring_size=maximum,
        hash_function=HashFunction(_C.RingHashLbConfig.HashFunction.Name(config.hash_function)),
        use_hostname_for_hashing=hashing.use_hostname_for_hashing,
        hash_balance_factor=wrapped(hashing, "hash_balance_factor", None),
    )


def _maglev(proto: Any, hashing: Any, path: str) -> MaglevConfig:
    size = wrapped(proto.maglev_lb_config, "table_size", 65537)
    if size < 2 or any(size % divisor == 0 for divisor in range(2, int(size**0.5) + 1)):
        raise ValidationError(
            f"The table size of maglev must be prime number (got {size})",
            path=join(path, "table_size"),
        )
    return MaglevConfig(table_size=size, use_hostname_for_hashing=hashing.use_hostname_for_hashing)
