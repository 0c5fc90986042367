"""Listener model (``envoy.config.listener.v3``). See ``model_common`` for conventions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import cast

from proxy.config.model_common import (
    EMPTY_MAPPING,
    CidrRange,
    PipeAddress,
    SocketAddress,
    empty_mapping,
)
from proxy.config.model_http import HttpConnectionManager, TcpProxy
from proxy.config.model_tls import DownstreamTls

__all__ = [
    "LISTENER_FILTERS",
    "ConnectionSourceType",
    "DrainType",
    "FilterChain",
    "FilterChainMatch",
    "Listener",
    "NetworkFilter",
    "PortPredicate",
    "TrafficDirection",
]

# The listener filters pymesh implements, by their canonical Envoy names.
LISTENER_FILTERS = frozenset(
    {
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.tls_inspector",
        "envoy.filters.listener.http_inspector",
    }
)


@dataclass(frozen=True, slots=True)
class PortPredicate:
    """Envoy's ``ListenerFilterChainMatchPredicate`` as far as it reads the destination port
    (``filter_disabled`` of a listener filter): ``kind`` is ``any``, ``port`` (``low`` to
    ``high``, half open), ``not``, ``or`` or ``and`` over ``operands``."""

    kind: str
    low: int = 0
    high: int = 0
    operands: tuple[PortPredicate, ...] = ()

    def matches(self, port: int | None) -> bool:
        if self.kind == "any":
            return True
        if self.kind == "port":
            return port is not None and self.low <= port < self.high
        if self.kind == "not":
            return not self.operands[0].matches(port)
        if self.kind == "or":
            return any(o.matches(port) for o in self.operands)
        return all(o.matches(port) for o in self.operands)


class ConnectionSourceType(StrEnum):
    ANY = "ANY"
    SAME_IP_OR_LOOPBACK = "SAME_IP_OR_LOOPBACK"
    EXTERNAL = "EXTERNAL"


@dataclass(frozen=True, slots=True)
class FilterChainMatch:
    """Envoy picks the most specific chain, criteria in this order: destination_port,
    prefix_ranges, server_names, transport_protocol, application_protocols,
    direct_source_prefix_ranges, source_type, source_prefix_ranges, source_ports.
    Empty / None criteria match anything. ``server_names`` are lower-case (``*.x`` allowed)."""

    destination_port: int | None = None
    prefix_ranges: tuple[CidrRange, ...] = ()
    server_names: tuple[str, ...] = ()
    transport_protocol: str = ""
    application_protocols: tuple[str, ...] = ()
    direct_source_prefix_ranges: tuple[CidrRange, ...] = ()
    source_type: ConnectionSourceType = ConnectionSourceType.ANY
    source_prefix_ranges: tuple[CidrRange, ...] = ()
    source_ports: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class NetworkFilter:
    """A network filter: one of the two terminal ones pymesh implements
    (``HttpConnectionManager``, ``TcpProxy``), or a read filter before the TCP proxy whose
    ``config`` is what its registered translator returned (``type_url`` finds the entry)."""

    name: str
    config: HttpConnectionManager | TcpProxy | object
    type_url: str = ""


@dataclass(frozen=True, slots=True)
class FilterChain:
    """``transport_socket`` None is plain TCP (``raw_buffer``)."""

    filters: tuple[NetworkFilter, ...]
    match: FilterChainMatch = field(default_factory=FilterChainMatch)
    name: str = ""
    transport_socket: DownstreamTls | None = None
    transport_socket_connect_timeout: float | None = None
    metadata: Mapping[str, object] = field(default_factory=empty_mapping)


class TrafficDirection(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    INBOUND = "INBOUND"
    OUTBOUND = "OUTBOUND"


class DrainType(StrEnum):
    DEFAULT = "DEFAULT"
    MODIFY_ONLY = "MODIFY_ONLY"


@dataclass(frozen=True, slots=True)
class Listener:
    """``listener_filters`` are canonical names from ``LISTENER_FILTERS``, in order.
    ``filter_enabled`` says whether one runs for a destination port.
    ``use_original_dst`` hands connections to the listener bound to the original destination
    (Envoy's iptables redirection mode). Defaults: bind_to_port true, 1 MiB buffer limit,
    listener_filters_timeout 15 s."""

    name: str
    address: SocketAddress | PipeAddress
    filter_chains: tuple[FilterChain, ...] = ()
    default_filter_chain: FilterChain | None = None
    listener_filters: tuple[str, ...] = ()
    # A listener filter's ``filter_disabled``, by its canonical name: it does not run on a
    # connection whose destination matches.
    listener_filters_disabled: Mapping[str, PortPredicate] = field(
        default_factory=lambda: cast(Mapping[str, PortPredicate], EMPTY_MAPPING)
    )
    listener_filters_timeout: float = 15.0
    continue_on_listener_filters_timeout: bool = False
    use_original_dst: bool = False
    bind_to_port: bool = True
    per_connection_buffer_limit_bytes: int = 1024 * 1024
    traffic_direction: TrafficDirection = TrafficDirection.UNSPECIFIED
    drain_type: DrainType = DrainType.DEFAULT
    stat_prefix: str = ""
    metadata: Mapping[str, object] = field(default_factory=empty_mapping)

    def filter_enabled(self, name: str, port: int | None) -> bool:
        """Whether the listener filter ``name`` (one of ``listener_filters``) runs on a
        connection to destination ``port``."""
        disabled = self.listener_filters_disabled.get(name)
        return disabled is None or not disabled.matches(port)
