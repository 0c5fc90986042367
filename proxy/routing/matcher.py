"""Virtual host and route selection (Envoy's ``RouteMatcher``), built once per snapshot.

Virtual hosts: the ``:authority`` (Host) is lower-cased and looked up as an exact domain,
then against ``*suffix`` wildcards longest first, then ``prefix*`` wildcards longest first,
then ``*``. A wildcard never matches the empty string (``*.foo.com`` does not match
``.foo.com``). By default the port stays part of the authority (``foo.com:8080`` matches only
domains written with that port, or wildcards covering it); ``ignore_port_in_host_matching``
strips it first. Stripping at the connection manager (``strip_any_host_port``) is the
runtime's job.

Routes: first match in order wins. The path is matched without its query string and fragment;
``prefix`` / ``path`` / ``path_separated_prefix`` honour ``case_sensitive``, ``safe_regex``
must match the whole path. Header matchers see pseudo-headers ``:method``, ``:path``,
``:authority`` (the Host header) and ``:scheme`` (when given). A ``runtime_fraction`` is
decided with one random draw per request shared by all routes, as Envoy shares the stream's
random value, so complementary fractions split traffic exactly.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from proxy.config.model import (
    HeaderMatcher,
    PathMatchKind,
    QueryParameterMatcher,
    Route,
    RouteAction,
    RouteConfiguration,
    VirtualHost,
    WeightedCluster,
    WeightedClusters,
)
from proxy.routing.header_match import (
    Headers,
    header_index,
    headers_match_indexed,
    parse_int,
    parse_query,
    query_matches,
)
from pymesh.errors import ValidationError

__all__ = ["RouteTable", "pick_weighted_cluster", "strip_port"]

_PREFIX = 0
_PATH = 1
_REGEX = 2
_SEPARATED = 3
_CONNECT = 4
_KINDS = {
    PathMatchKind.PREFIX: _PREFIX,
    PathMatchKind.PATH: _PATH,
    PathMatchKind.SAFE_REGEX: _REGEX,
    PathMatchKind.PATH_SEPARATED_PREFIX: _SEPARATED,
    PathMatchKind.CONNECT: _CONNECT,
}
# Bound on remembered authority -> virtual host answers (arbitrary Host headers must not grow
# it without limit).
_HOST_CACHE_MAX = 1024


def strip_port(authority: bytes) -> bytes:
    """``authority`` without a trailing ``:port`` (Envoy's ``HeaderUtility::getPortStart``:
    only a numeric port is stripped, and a bracketed IPv6 literal keeps its colons)."""
    colon = authority.rfind(b":")
    if colon < 0:
        return authority
    bracket = authority.rfind(b"]")
    if bracket > colon:
        return authority
    port = authority[colon + 1 :]
    if not port.isdigit() or parse_int(port) is None:
        return authority
    return authority[:colon]


class _CompiledRoute:
    __slots__ = (
        "case_sensitive",
        "headers",
        "kind",
        "literal",
        "metadata",
        "query",
        "regex",
        "route",
        "runtime_fraction",
        "separated",
    )

    def __init__(self, route: Route) -> None:
        m = route.match
        self.route = route
        self.kind = _KINDS[m.path_kind]
        self.literal = m.path
        self.separated = m.path + b"/"
        self.regex = m.regex
        self.case_sensitive = m.case_sensitive
        self.headers: tuple[HeaderMatcher, ...] = m.headers
        self.query: tuple[QueryParameterMatcher, ...] = m.query_parameters
        self.metadata = m.dynamic_metadata
        self.runtime_fraction = m.runtime_fraction
        if self.kind == _REGEX and self.regex is None:
            raise ValidationError("safe_regex route without a regex", path=f"route {route.name}")


class _CompiledVirtualHost:
    __slots__ = ("needs_lower", "routes", "vhost")

    def __init__(self, vhost: VirtualHost) -> None:
        self.vhost = vhost
        self.routes = tuple(_CompiledRoute(r) for r in vhost.routes)
        self.needs_lower = any(not r.case_sensitive and r.kind != _REGEX for r in self.routes)


def _wildcard_tables(
    entries: dict[bytes, VirtualHost],
) -> tuple[tuple[int, dict[bytes, VirtualHost]], ...]:
    by_len: dict[int, dict[bytes, VirtualHost]] = {}
    for key, vh in entries.items():
        by_len.setdefault(len(key), {})[key] = vh
    return tuple(sorted(by_len.items(), key=lambda item: -item[0]))


class RouteTable:
    """Built from one ``RouteConfiguration``; immutable apart from a bounded lookup cache."""

    __slots__ = (
        "_compiled",
        "_default",
        "_exact",
        "_host_cache",
        "_ignore_port",
        "_only_default",
        "_prefixes",
        "_rng",
        "_suffixes",
        "config",
    )

    def __init__(
        self,
        config: RouteConfiguration,
        exact: dict[bytes, VirtualHost],
        suffixes: dict[bytes, VirtualHost],
        prefixes: dict[bytes, VirtualHost],
        default: VirtualHost | None,
        rng: random.Random,
    ) -> None:
        self.config = config
        self._exact = exact
        self._suffixes = _wildcard_tables(suffixes)
        self._prefixes = _wildcard_tables(prefixes)
        self._default = default
        self._only_default = not exact and not suffixes and not prefixes
        self._ignore_port = config.ignore_port_in_host_matching
        self._rng = rng
        self._host_cache: dict[bytes, VirtualHost | None] = {}
        # Keyed by id(): hashing a frozen VirtualHost would hash all its routes.
        self._compiled = {id(vh): _CompiledVirtualHost(vh) for vh in config.virtual_hosts}

    @classmethod
    def build(
        cls, route_config: RouteConfiguration, *, rng: random.Random | None = None
    ) -> RouteTable:
        """Index ``route_config``; ``rng`` is the default for ``runtime_fraction`` draws.
        Raises ``ValidationError`` for duplicate domains, as Envoy rejects them."""
        exact: dict[bytes, VirtualHost] = {}
        suffixes: dict[bytes, VirtualHost] = {}
        prefixes: dict[bytes, VirtualHost] = {}
        default: VirtualHost | None = None
        seen: set[bytes] = set()
        for i, vh in enumerate(route_config.virtual_hosts):
            for domain in vh.domains:
                domain = domain.lower()
                where = f"virtual_hosts[{i}].domains"
                if domain in seen:
                    raise ValidationError(
                        "only unique values for domains are permitted, duplicate entry of "
                        f"domain {domain.decode(errors='replace')}",
                        path=where,
                    )
                seen.add(domain)
                if domain == b"*":
                    default = vh
                elif domain.startswith(b"*"):
                    suffixes[domain[1:]] = vh
                elif domain.endswith(b"*"):
                    prefixes[domain[:-1]] = vh
                else:
                    exact[domain] = vh
        return cls(
            route_config,
            exact,
            suffixes,
            prefixes,
            default,
            rng if rng is not None else random.Random(),
        )

    @property
    def virtual_hosts(self) -> Sequence[VirtualHost]:
        return self.config.virtual_hosts

    def find_virtual_host(self, authority: bytes) -> VirtualHost | None:
        if self._only_default:
            return self._default
        cache = self._host_cache
        try:
            return cache[authority]
        except KeyError:
            pass
        vh = self._lookup(authority)
        if len(cache) >= _HOST_CACHE_MAX:
            cache.clear()
        cache[authority] = vh
        return vh

    def _lookup(self, authority: bytes) -> VirtualHost | None:
        host = authority.lower()
        if self._ignore_port:
            host = strip_port(host)
        vh = self._exact.get(host)
        if vh is not None:
            return vh
        n = len(host)
        for length, table in self._suffixes:
            # Strictly shorter: the wildcard must cover at least one character.
            if length < n:
                vh = table.get(host[n - length :])
                if vh is not None:
                    return vh
        for length, table in self._prefixes:
            if length < n:
                vh = table.get(host[:length])
                if vh is not None:
                    return vh
        return self._default

    def match(
        self,
        vhost: VirtualHost,
        method: bytes,
        path: bytes,
        headers: Headers,
        rng: random.Random | None = None,
        *,
        scheme: bytes | None = None,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Route | None:
        """The first route of ``vhost`` matching the request, or None. ``metadata`` is the
        request's dynamic metadata, for routes that match on it."""
        compiled = self._compiled.get(id(vhost))
        if compiled is None or compiled.vhost is not vhost:
            compiled = _CompiledVirtualHost(vhost)
            self._compiled[id(vhost)] = compiled
        q = path.find(b"?")
        frag = path.find(b"#")
        if frag >= 0 and (q < 0 or frag < q):
            cut = frag
            q = -1
        else:
            cut = q if q >= 0 else len(path)
        bare = path[:cut]
        lowered = bare.lower() if compiled.needs_lower else bare
        index: dict[bytes, bytes] | None = None
        params: dict[bytes, bytes] | None = None
        draw = -1.0
        is_connect = method == b"CONNECT"
        for r in compiled.routes:
            kind = r.kind
            if is_connect is (kind != _CONNECT):
                # A CONNECT request has no path: only connect_matcher matches it, and only it.
                continue
            candidate = bare if r.case_sensitive else lowered
            if kind == _PREFIX:
                if not candidate.startswith(r.literal):
                    continue
            elif kind == _PATH:
                if candidate != r.literal:
                    continue
            elif kind == _REGEX:
                assert r.regex is not None
                if r.regex.fullmatch(bare) is None:
                    continue
            elif (
                kind == _SEPARATED
                and candidate != r.literal
                and not candidate.startswith(r.separated)
            ):
                continue
            if r.headers:
                if index is None:
                    index = header_index(headers)
                    index[b":method"] = method
                    index[b":path"] = path
                    if (host := index.get(b"host")) is not None:
                        index[b":authority"] = host
                    if scheme is not None:
                        index[b":scheme"] = scheme
                if not headers_match_indexed(r.headers, index):
                    continue
            if r.query:
                if params is None:
                    params = parse_query(
                        None if q < 0 else path[q + 1 : frag if frag > q else len(path)]
                    )
                if not all(query_matches(q, params) for q in r.query):
                    continue
            if r.metadata:
                found = metadata if metadata is not None else {}
                if not all(m.matches(found) for m in r.metadata):
                    continue
            if r.runtime_fraction is not None:
                if draw < 0.0:
                    draw = (rng if rng is not None else self._rng).random()
                if not draw < r.runtime_fraction:
                    continue
            return r.route
        return None


def pick_weighted_cluster(
    action: RouteAction | WeightedClusters, rng: random.Random
) -> WeightedCluster:
    """Pick a cluster with probability ``weight / total_weight`` (clusters of weight 0 never)."""
    wc = action if isinstance(action, WeightedClusters) else action.weighted_clusters
    if wc is None or not wc.clusters:
        raise ValueError("route action has no weighted clusters")
    r = int(rng.random() * wc.total_weight)
    for cluster in wc.clusters:
        r -= cluster.weight
        if r < 0:
            return cluster
    return wc.clusters[-1]
