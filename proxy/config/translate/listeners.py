"""``envoy.config.listener.v3.Listener`` → ``model.Listener`` (filter chains, the HTTP
connection manager, the TCP proxy, listener filters, downstream TLS)."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from proxy.config.model import (
    ConnectionSourceType,
    DownstreamTls,
    DrainType,
    FilterChain,
    FilterChainMatch,
    HttpConnectionManager,
    Listener,
    NetworkFilter,
    PortPredicate,
    TcpProxy,
    TcpProxyWeightedCluster,
    TrafficDirection,
)
from proxy.config.translate.access_log import access_logs
from proxy.config.translate.common import (
    at,
    cidr_range,
    join,
    listener_address,
    metadata,
    opt_duration,
    wrapped,
)
from proxy.config.translate.filters import FilterRegistry
from proxy.config.translate.hcm import HCM_TYPE_URL, http_connection_manager
from proxy.config.translate.support import check_supported, unpack
from proxy.config.translate.tls import downstream_tls
from pymesh.errors import UnsupportedError, ValidationError

__all__ = ["translate_listener", "transport_socket_type"]

_TYPE = "type.googleapis.com/"
_TCP_PROXY_URL = _TYPE + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
_LISTENER_FILTERS: dict[str, tuple[str, type[Any]]] = {
    _TYPE + original_dst_pb2.OriginalDst.DESCRIPTOR.full_name: (
        "envoy.filters.listener.original_dst",
        original_dst_pb2.OriginalDst,
    ),
    _TYPE + tls_inspector_pb2.TlsInspector.DESCRIPTOR.full_name: (
        "envoy.filters.listener.tls_inspector",
        tls_inspector_pb2.TlsInspector,
    ),
    _TYPE + http_inspector_pb2.HttpInspector.DESCRIPTOR.full_name: (
        "envoy.filters.listener.http_inspector",
        http_inspector_pb2.HttpInspector,
    ),
}
_LISTENER_FILTER_NAMES = {name: name for name, _ in _LISTENER_FILTERS.values()} | {
    "envoy.listener.original_dst": "envoy.filters.listener.original_dst",
    "envoy.listener.tls_inspector": "envoy.filters.listener.tls_inspector",
    "envoy.listener.http_inspector": "envoy.filters.listener.http_inspector",
}
_RAW_BUFFER_URL = _TYPE + raw_buffer_pb2.RawBuffer.DESCRIPTOR.full_name
_DOWNSTREAM_TLS_URL = _TYPE + tls_pb2.DownstreamTlsContext.DESCRIPTOR.full_name
_UPSTREAM_TLS_URL = _TYPE + tls_pb2.UpstreamTlsContext.DESCRIPTOR.full_name


def translate_listener(
    proto: listener_pb2.Listener, registry: FilterRegistry, path: str = ""
) -> Listener:
    """Translate an LDS resource or a static listener; errors carry paths under ``path``."""
    check_supported(proto, path)
    if not proto.HasField("address"):
        raise ValidationError(
            f"error adding listener named '{proto.name}': address is necessary",
            path=join(path, "address"),
        )
    chains = tuple(
        _filter_chain(chain, registry, at(join(path, "filter_chains"), index))
        for index, chain in enumerate(proto.filter_chains)
    )
    _check_distinct_chains(proto.name, chains, join(path, "filter_chains"))
    default_chain = (
        _filter_chain(proto.default_filter_chain, registry, join(path, "default_filter_chain"))
        if proto.HasField("default_filter_chain")
        else None
    )
    if not chains and default_chain is None:
        raise ValidationError(
            f"error adding listener named '{proto.name}': no filter chains specified",
            path=join(path, "filter_chains"),
        )
    return Listener(
        name=proto.name,
        address=listener_address(proto.address, join(path, "address")),
        filter_chains=chains,
        default_filter_chain=default_chain,
        listener_filters=tuple(
            _listener_filter(item, at(join(path, "listener_filters"), index))
            for index, item in enumerate(proto.listener_filters)
        ),
        listener_filters_disabled={
            _listener_filter(item, at(join(path, "listener_filters"), index)): _port_predicate(
                item.filter_disabled,
                join(at(join(path, "listener_filters"), index), "filter_disabled"),
            )
            for index, item in enumerate(proto.listener_filters)
            if item.HasField("filter_disabled")
        },
        listener_filters_timeout=(
            15.0
            if not proto.HasField("listener_filters_timeout")
            else opt_duration(proto, "listener_filters_timeout") or 0.0
        ),
        continue_on_listener_filters_timeout=proto.continue_on_listener_filters_timeout,
        use_original_dst=wrapped(proto, "use_original_dst", False),
        bind_to_port=wrapped(proto, "bind_to_port", True),
        per_connection_buffer_limit_bytes=wrapped(
            proto, "per_connection_buffer_limit_bytes", 1024 * 1024
        ),
        traffic_direction=TrafficDirection(base_pb2.TrafficDirection.Name(proto.traffic_direction)),
        drain_type=DrainType(listener_pb2.Listener.DrainType.Name(proto.drain_type)),
        stat_prefix=proto.stat_prefix,
        metadata=metadata(proto),
    )


def _check_distinct_chains(listener: str, chains: tuple[FilterChain, ...], path: str) -> None:
    seen_matches: dict[FilterChainMatch, int] = {}
    seen_names: set[str] = set()
    for index, chain in enumerate(chains):
        if chain.match in seen_matches:
            raise ValidationError(
                f"error adding listener '{listener}': filter chain '{chain.name}' has the same "
                f"matching rules defined as filter chain {seen_matches[chain.match]}",
                path=at(path, index),
            )
        seen_matches[chain.match] = index
        if chain.name:
            if chain.name in seen_names:
                raise ValidationError(
                    f"error adding listener '{listener}': multiple filter chains with the same "
                    f"name '{chain.name}'",
                    path=at(path, index),
                )
            seen_names.add(chain.name)


def _listener_filter(proto: Any, path: str) -> str:
    if proto.HasField("typed_config"):
        url = proto.typed_config.type_url
        known = _LISTENER_FILTERS.get(url)
        if known is None:
            raise UnsupportedError(
                f"listener filter '{proto.name}' ({url}) is not supported by pymesh", path=path
            )
        unpack(proto.typed_config, known[1], join(path, "typed_config"))
        return known[0]
    canonical = _LISTENER_FILTER_NAMES.get(proto.name)
    if canonical is None:
        raise UnsupportedError(
            f"listener filter '{proto.name}' is not supported by pymesh", path=path
        )
    return canonical


def _port_predicate(proto: Any, path: str) -> PortPredicate:
    """``filter_disabled``: the destination-port rules and their combinations (the only
    rules a listener filter's connection is known by before any byte is read)."""
    rule = proto.WhichOneof("rule")
    if rule == "any_match":
        return PortPredicate("any")
    if rule == "destination_port_range":
        r = proto.destination_port_range
        return PortPredicate("port", r.start, r.end)
    if rule == "not_match":
        return PortPredicate("not", operands=(_port_predicate(proto.not_match, join(path, rule)),))
    if rule in ("or_match", "and_match"):
        rules = getattr(proto, rule).rules
        return PortPredicate(
            rule.removesuffix("_match"),
            operands=tuple(
                _port_predicate(r, at(join(join(path, rule), "rules"), i))
                for i, r in enumerate(rules)
            ),
        )
    raise UnsupportedError(
        f"listener filter match rule {rule} is not supported by pymesh", path=path
    )


def _filter_chain(proto: Any, registry: FilterRegistry, path: str) -> FilterChain:
    filters: list[NetworkFilter] = []
    count = len(proto.filters)
    for index, item in enumerate(proto.filters):
        filter_path = at(join(path, "filters"), index)
        network_filter = _network_filter(item, registry, filter_path)
        terminal = isinstance(network_filter.config, HttpConnectionManager | TcpProxy)
        if terminal and index != count - 1:
            raise ValidationError(
                f"Error: terminal filter named {item.name} of type "
                f"{item.typed_config.type_url.removeprefix(_TYPE)} must be the last filter in "
                "a network filter chain.",
                path=filter_path,
            )
        if not terminal and index == count - 1:
            raise ValidationError(
                f"Error: non-terminal filter named {item.name} of type "
                f"{item.typed_config.type_url.removeprefix(_TYPE)} is the last filter in a "
                "network filter chain.",
                path=filter_path,
            )
        if isinstance(network_filter.config, HttpConnectionManager) and filters:
            raise UnsupportedError(
                f"network filter '{filters[0].name}' before the HTTP connection manager is not "
                "supported by pymesh (only before the TCP proxy)",
                path=at(join(path, "filters"), 0),
            )
        filters.append(network_filter)
    return FilterChain(
        filters=tuple(filters),
        match=_filter_chain_match(proto.filter_chain_match, join(path, "filter_chain_match")),
        name=proto.name,
        transport_socket=(
            _downstream_socket(proto.transport_socket, join(path, "transport_socket"))
            if proto.HasField("transport_socket")
            else None
        ),
        transport_socket_connect_timeout=opt_duration(proto, "transport_socket_connect_timeout"),
        metadata=metadata(proto),
    )


def _network_filter(proto: Any, registry: FilterRegistry, path: str) -> NetworkFilter:
    if not proto.HasField("typed_config"):
        raise UnsupportedError(
            f"network filter '{proto.name}' without typed_config is not supported by pymesh",
            path=path,
        )
    url = proto.typed_config.type_url
    config_path = join(path, "typed_config")
    if url == HCM_TYPE_URL:
        return NetworkFilter(
            proto.name, http_connection_manager(proto.typed_config, registry, config_path)
        )
    if url == _TCP_PROXY_URL:
        message = unpack(proto.typed_config, tcp_proxy_pb2.TcpProxy, config_path)
        return NetworkFilter(proto.name, _tcp_proxy(message, config_path))
    entry = registry.by_type_url.get(url)
    if entry is not None and entry.network:
        message = unpack(proto.typed_config, entry.message, config_path, entry.supported)
        return NetworkFilter(proto.name, entry.translate(message, config_path), url)
    raise UnsupportedError(
        f"network filter '{proto.name}' ({url}) is not supported by pymesh", path=path
    )


def _tcp_proxy(proto: Any, path: str) -> TcpProxy:
    kind = proto.WhichOneof("cluster_specifier")
    weighted: tuple[TcpProxyWeightedCluster, ...] = ()
    if kind == "weighted_clusters":
        weighted = tuple(
            TcpProxyWeightedCluster(item.name, item.weight)
            for item in proto.weighted_clusters.clusters
        )
    elif kind != "cluster":
        raise ValidationError(
            "one of [cluster, weighted_clusters] is required", path=join(path, "cluster_specifier")
        )
    idle = opt_duration(proto, "idle_timeout")
    return TcpProxy(
        stat_prefix=proto.stat_prefix,
        cluster=proto.cluster or None,
        weighted_clusters=weighted,
        idle_timeout=3600.0 if idle is None else (idle or None),
        max_connect_attempts=wrapped(proto, "max_connect_attempts", 1),
        max_downstream_connection_duration=opt_duration(
            proto, "max_downstream_connection_duration"
        ),
        access_log=access_logs(proto.access_log, join(path, "access_log")),
    )


def _filter_chain_match(proto: Any, path: str) -> FilterChainMatch:
    for index, name in enumerate(proto.server_names):
        if "*" in name and not name.startswith("*."):
            raise ValidationError(
                f'partial wildcards are not supported in "server_names": {name}',
                path=at(join(path, "server_names"), index),
            )

    def ranges(field: str) -> tuple[Any, ...]:
        return tuple(
            cidr_range(item, at(join(path, field), index))
            for index, item in enumerate(getattr(proto, field))
        )

    return FilterChainMatch(
        destination_port=wrapped(proto, "destination_port", None),
        prefix_ranges=ranges("prefix_ranges"),
        server_names=tuple(name.lower() for name in proto.server_names),
        transport_protocol=proto.transport_protocol,
        application_protocols=tuple(proto.application_protocols),
        direct_source_prefix_ranges=ranges("direct_source_prefix_ranges"),
        source_type=ConnectionSourceType(
            listener_components_pb2.FilterChainMatch.ConnectionSourceType.Name(proto.source_type)
        ),
        source_prefix_ranges=ranges("source_prefix_ranges"),
        source_ports=frozenset(proto.source_ports),
    )


def transport_socket_type(proto: Any, path: str, *, upstream: bool) -> str | None:
    """The transport socket's type URL after checking pymesh implements it (None = raw)."""
    tls_url = _UPSTREAM_TLS_URL if upstream else _DOWNSTREAM_TLS_URL
    if not proto.HasField("typed_config"):
        if proto.name in ("envoy.transport_sockets.raw_buffer", "raw_buffer"):
            return None
        raise UnsupportedError(
            f"transport socket '{proto.name}' without typed_config is not supported by pymesh",
            path=path,
        )
    url: str = proto.typed_config.type_url
    if url == _RAW_BUFFER_URL:
        unpack(proto.typed_config, raw_buffer_pb2.RawBuffer, join(path, "typed_config"))
        return None
    if url != tls_url:
        raise UnsupportedError(
            f"transport socket '{proto.name}' ({url}) is not supported by pymesh", path=path
        )
    return url


def _downstream_socket(proto: Any, path: str) -> DownstreamTls | None:
    if transport_socket_type(proto, path, upstream=False) is None:
        return None
    config_path = join(path, "typed_config")
    message = unpack(proto.typed_config, tls_pb2.DownstreamTlsContext, config_path)
    return downstream_tls(message, config_path)
