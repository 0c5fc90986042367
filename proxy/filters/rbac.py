"""``envoy.filters.http.rbac``: the RBAC engine (``proxy.security.rbac``) on each request.

The shadow engine runs first and only counts and records its verdict in dynamic metadata
(``<shadow prefix>shadow_effective_policy_id`` / ``shadow_engine_result`` under
``envoy.filters.http.rbac``: what Istio's dry-run and CUSTOM policies read); then the enforced
engine, whose denial is Envoy's 403 ``RBAC: access denied`` with the details
``rbac_access_denied_matched_policy[<policy>|none]``. A LOG engine allows and sets
``envoy.common`` ``access_log_hint``. Stats are Envoy's ``http.<hcm>.rbac.<prefix>.allowed``
and friends. A route's ``RBACPerRoute`` replaces the filter's engines.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from proxy.config.model_route import FilterDisabled
from proxy.config.translate.rbac import RbacFilterConfig
from proxy.http.filter import (
    DownstreamCallbacks,
    FilterContext,
    FilterHeadersStatus,
    Headers,
    HttpFilter,
)
from proxy.routing.header_match import get_header
from proxy.security.rbac import PeerCertificate, RbacAction

if TYPE_CHECKING:
    from proxy.http.stream_info import Address, ConnectionInfo
    from proxy.stats import Counter, StatsStore

__all__ = [
    "RBAC_METADATA",
    "ConnectionAttributes",
    "EngineStats",
    "HttpAttributes",
    "RbacFilter",
    "denied_details",
    "factory",
    "peer_certificate",
]

RBAC_METADATA = "envoy.filters.http.rbac"
COMMON_METADATA = "envoy.common"
_ALLOWED = "allowed"
_DENIED = "denied"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def denied_details(policy: str | None) -> str:
    return f"rbac_access_denied_matched_policy[{policy or 'none'}]"


def _ip(address: Address | None) -> IpAddress | None:
    if address is None:
        return None
    try:
        return ipaddress.ip_address(address[0])
    except ValueError:
        return None


def peer_certificate(conn: ConnectionInfo) -> PeerCertificate | None:
    """What RBAC's ``authenticated`` reads: None on plaintext; on TLS the peer certificate's
    SANs and subject (all empty when the client sent none)."""
    if not conn.tls:
        return None
    present = conn.peer_certificate_sha256 is not None
    return PeerCertificate(
        conn.peer_uri_sans, conn.peer_dns_sans, conn.peer_subject or "", present=present
    )


class ConnectionAttributes:
    """The connection's side of :class:`proxy.security.rbac.RbacInput`, read lazily: a request
    whose policies never ask for an address parses none."""

    __slots__ = ("_conn", "_direct", "_local", "_tls")

    _UNSET: Any = object()

    def __init__(self, conn: ConnectionInfo) -> None:
        self._conn = conn
        self._direct: Any = self._UNSET
        self._local: Any = self._UNSET
        self._tls: Any = self._UNSET

    @property
    def direct_remote_ip(self) -> IpAddress | None:
        if self._direct is self._UNSET:
            self._direct = _ip(self._conn.remote_address)
        return self._direct  # type: ignore[no-any-return]

    @property
    def remote_ip(self) -> IpAddress | None:
        return self.direct_remote_ip

    @property
    def local_ip(self) -> IpAddress | None:
        # Envoy's destination is the downstream local address, which the original_dst
        # listener filter restores to where the client meant to go.
        if self._local is self._UNSET:
            self._local = _ip(self._conn.original_destination)
        return self._local  # type: ignore[no-any-return]

    @property
    def local_port(self) -> int:
        destination = self._conn.original_destination
        return destination[1] if destination is not None else 0

    @property
    def requested_server_name(self) -> str:
        return self._conn.requested_server_name or ""

    @property
    def tls(self) -> PeerCertificate | None:
        if self._tls is self._UNSET:
            self._tls = peer_certificate(self._conn)
        return self._tls  # type: ignore[no-any-return]

    @property
    def metadata(self) -> Mapping[str, Mapping[str, Any]]:
        return {}

    @property
    def path(self) -> bytes | None:
        return None

    def header(self, name: bytes) -> bytes | None:
        return None


class HttpAttributes(ConnectionAttributes):
    """A request's attributes: the connection's, plus headers (``:method``, ``:path``,
    ``:authority`` and ``:scheme`` as pseudo-headers), the client ``x-forwarded-for`` names
    when it is trusted, and the dynamic metadata earlier filters wrote."""

    __slots__ = ("_cb", "_headers", "_remote")

    def __init__(self, cb: DownstreamCallbacks, headers: Headers) -> None:
        info = cb.stream_info
        super().__init__(info.connection)
        self._cb = cb
        self._headers = headers
        self._remote: Any = self._UNSET

    @property
    def remote_ip(self) -> IpAddress | None:
        if self._remote is self._UNSET:
            self._remote = _ip(self._cb.stream_info.downstream_remote_address)
        return self._remote  # type: ignore[no-any-return]

    @property
    def metadata(self) -> Mapping[str, Mapping[str, Any]]:
        return self._cb.stream_info.all_dynamic_metadata

    @property
    def path(self) -> bytes | None:
        return self._cb.path

    def header(self, name: bytes) -> bytes | None:
        if name[:1] == b":":
            cb = self._cb
            if name == b":method":
                return cb.method
            if name == b":path":
                return cb.path
            if name == b":authority":
                return get_header(self._headers, b"host")
            if name == b":scheme":
                return cb.stream_info.connection.scheme
            return None
        return get_header(self._headers, name)


class EngineStats:
    """``<prefix>rbac.<rules_prefix>.allowed|denied`` and ``...shadow_allowed|shadow_denied``,
    made when the config is (so they show as 0 before the first request, as in Envoy)."""

    __slots__ = ("allowed", "denied", "shadow_allowed", "shadow_denied")

    def __init__(self, store: StatsStore, prefix: str, config: RbacFilterConfig) -> None:
        def name(extra: str, stat: str) -> str:
            return f"{prefix}rbac.{extra}.{stat}" if extra else f"{prefix}rbac.{stat}"

        rules, shadow = config.rules_stat_prefix, config.shadow_rules_stat_prefix
        self.allowed: Counter = store.counter(name(rules, "allowed"))
        self.denied: Counter = store.counter(name(rules, "denied"))
        self.shadow_allowed: Counter = store.counter(name(shadow, "shadow_allowed"))
        self.shadow_denied: Counter = store.counter(name(shadow, "shadow_denied"))


class _Engines:
    """One filter config (the filter's own or a route's) with its metadata keys."""

    __slots__ = (
        "enforced_id",
        "enforced_result",
        "rules",
        "shadow",
        "shadow_id",
        "shadow_result",
    )

    def __init__(self, config: RbacFilterConfig, base: RbacFilterConfig) -> None:
        self.rules = config.rules
        self.shadow = config.shadow_rules
        # A route's config keeps the filter's stat and metadata prefixes, as in Envoy.
        rules_prefix, shadow_prefix = base.rules_stat_prefix, base.shadow_rules_stat_prefix
        self.enforced_id = rules_prefix + "enforced_effective_policy_id"
        self.enforced_result = rules_prefix + "enforced_engine_result"
        self.shadow_id = shadow_prefix + "shadow_effective_policy_id"
        self.shadow_result = shadow_prefix + "shadow_engine_result"


class _Shared:
    __slots__ = ("by_route", "config", "default", "name", "stats")

    def __init__(self, config: RbacFilterConfig, context: FilterContext, name: str) -> None:
        self.name = name
        self.config = config
        self.default = _Engines(config, config)
        self.stats = EngineStats(context.stats, f"http.{context.stat_prefix}.", config)
        self.by_route: dict[int, tuple[RbacFilterConfig, _Engines]] = {}

    def engines(self, cb: DownstreamCallbacks) -> _Engines | None:
        override = cb.per_route_config(self.name)
        if override is None:
            return self.default
        if isinstance(override, FilterDisabled) or not isinstance(override, RbacFilterConfig):
            return None
        found = self.by_route.get(id(override))
        if found is None:
            found = self.by_route[id(override)] = (override, _Engines(override, self.config))
        return found[1]


class RbacFilter(HttpFilter):
    __slots__ = ("_shared",)

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared

    def decode_headers(
        self, cb: DownstreamCallbacks, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        shared = self._shared
        engines = shared.engines(cb)
        if engines is None:
            return FilterHeadersStatus.CONTINUE
        attrs = HttpAttributes(cb, headers)
        stats = shared.stats
        shadow = engines.shadow
        if shadow is not None:
            verdict = shadow.evaluate(attrs)
            (stats.shadow_allowed if verdict.allowed else stats.shadow_denied).value += 1
            meta = cb.stream_info.dynamic_metadata(RBAC_METADATA)
            if verdict.policy is not None:
                meta[engines.shadow_id] = verdict.policy
            meta[engines.shadow_result] = _ALLOWED if verdict.allowed else _DENIED
        rules = engines.rules
        if rules is None:
            return FilterHeadersStatus.CONTINUE
        verdict = rules.evaluate(attrs)
        meta = cb.stream_info.dynamic_metadata(RBAC_METADATA)
        if verdict.policy is not None:
            meta[engines.enforced_id] = verdict.policy
        if rules.action is RbacAction.LOG:
            cb.stream_info.dynamic_metadata(COMMON_METADATA)["access_log_hint"] = verdict.log
        if verdict.allowed:
            meta[engines.enforced_result] = _ALLOWED
            stats.allowed.value += 1
            return FilterHeadersStatus.CONTINUE
        meta[engines.enforced_result] = _DENIED
        stats.denied.value += 1
        cb.send_local_reply(403, b"RBAC: access denied", details=denied_details(verdict.policy))
        return FilterHeadersStatus.STOP_ITERATION


def factory(config: object, context: FilterContext) -> Callable[[], HttpFilter]:
    assert isinstance(config, RbacFilterConfig)
    shared = _Shared(config, context, "envoy.filters.http.rbac")
    return lambda: RbacFilter(shared)
