"""Route configuration model (``envoy.config.route.v3``). See ``model_common`` for conventions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from proxy.config.model_common import (
    HeaderMatcher,
    HeaderValueOption,
    QueryParameterMatcher,
    StringMatcher,
    empty_mapping,
)
from proxy.config.model_ratelimit import RateLimitPolicyEntry
from proxy.security.matchers import MetadataMatcher

__all__ = [
    "RETRY_ON_VALUES",
    "CorsPolicy",
    "DirectResponseAction",
    "FilterDisabled",
    "HashPolicy",
    "HashPolicyKind",
    "MaxStreamDuration",
    "PathMatchKind",
    "RedirectAction",
    "RegexRewrite",
    "RequestMirrorPolicy",
    "RequireTls",
    "RetryBackOff",
    "RetryPolicy",
    "Route",
    "RouteAction",
    "RouteActionType",
    "RouteConfiguration",
    "RouteMatch",
    "RouteUpgrade",
    "VirtualHost",
    "WeightedCluster",
    "WeightedClusters",
]

# Envoy's ``retry_on`` conditions that pymesh implements, HTTP then gRPC.
RETRY_ON_VALUES = frozenset(
    {
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
    }
)


class PathMatchKind(StrEnum):
    PREFIX = "prefix"
    PATH = "path"
    SAFE_REGEX = "safe_regex"
    PATH_SEPARATED_PREFIX = "path_separated_prefix"
    # Matches CONNECT requests only, which no path matcher matches (they have no path).
    CONNECT = "connect_matcher"


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """``path`` is the prefix / exact path literal (already lower-cased when
    ``case_sensitive`` is False). For SAFE_REGEX, ``regex`` must fullmatch the path without its
    query string, and ``case_sensitive`` does not apply. ``runtime_fraction`` is the fraction
    of requests the route matches (``None`` = all)."""

    path_kind: PathMatchKind
    path: bytes = b""
    regex: re.Pattern[bytes] | None = None
    case_sensitive: bool = True
    headers: tuple[HeaderMatcher, ...] = ()
    query_parameters: tuple[QueryParameterMatcher, ...] = ()
    runtime_fraction: float | None = None
    # Matched against the request's dynamic metadata (a JWT's claims, once verified).
    dynamic_metadata: tuple[MetadataMatcher, ...] = ()


@dataclass(frozen=True, slots=True)
class RegexRewrite:
    """Replace every match of ``pattern`` in the path (without query) with ``substitution``
    (already converted from RE2's ``\\1`` style, which Python's ``re.sub`` also accepts)."""

    pattern: re.Pattern[bytes]
    substitution: bytes


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    name: str
    weight: int
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[bytes, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_remove: tuple[bytes, ...] = ()
    host_rewrite_literal: bytes | None = None
    typed_per_filter_config: Mapping[str, object] = field(default_factory=empty_mapping)


@dataclass(frozen=True, slots=True)
class WeightedClusters:
    """``total_weight`` is the sum of the weights (Envoy v3 deprecated the explicit total)."""

    clusters: tuple[WeightedCluster, ...]
    total_weight: int


@dataclass(frozen=True, slots=True)
class RetryBackOff:
    """Envoy: base 25 ms; max defaults to 10 x base."""

    base_interval: float = 0.025
    max_interval: float = 0.25


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retry_on`` holds Envoy's names (see ``RETRY_ON_VALUES``). ``per_try_timeout=None``
    means each try gets the remaining route timeout. ``retry_host_predicate_previous_hosts``
    is ``envoy.retry_host_predicates.previous_hosts`` (avoid hosts already tried, re-picking
    up to ``host_selection_retry_max_attempts`` times)."""

    retry_on: frozenset[str] = frozenset()
    num_retries: int = 1
    per_try_timeout: float | None = None
    per_try_idle_timeout: float | None = None
    retry_back_off: RetryBackOff = field(default_factory=RetryBackOff)
    retriable_status_codes: frozenset[int] = frozenset()
    retriable_headers: tuple[HeaderMatcher, ...] = ()
    retriable_request_headers: tuple[HeaderMatcher, ...] = ()
    retry_host_predicate_previous_hosts: bool = False
    host_selection_retry_max_attempts: int = 1


@dataclass(frozen=True, slots=True)
class RequestMirrorPolicy:
    """Shadow a fraction of requests to ``cluster`` (Envoy default: all of them). The shadow's
    Host gets ``-shadow`` appended unless ``disable_shadow_host_suffix_append``."""

    cluster: str
    runtime_fraction: float = 1.0
    trace_sampled: bool | None = None
    disable_shadow_host_suffix_append: bool = False


class HashPolicyKind(StrEnum):
    HEADER = "header"
    COOKIE = "cookie"
    CONNECTION_PROPERTIES = "connection_properties"
    QUERY_PARAMETER = "query_parameter"
    FILTER_STATE = "filter_state"


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """One hash input. ``name`` is the header name (lower-case), cookie name, query parameter
    or filter-state key depending on ``kind``. A cookie policy with a ``cookie_ttl`` makes the
    proxy set the cookie when absent (Envoy's behaviour)."""

    kind: HashPolicyKind
    name: bytes = b""
    regex_rewrite: RegexRewrite | None = None
    cookie_ttl: float | None = None
    cookie_path: bytes | None = None
    source_ip: bool = False
    terminal: bool = False


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """CORS policy (route/virtual-host ``cors`` or the cors filter's per-route ``CorsPolicy``).

    Header values are the bytes to send. ``filter_enabled`` defaults to 1.0 (Envoy: enabled
    unless configured); ``shadow_enabled`` evaluates without enforcing."""

    allow_origin_string_match: tuple[StringMatcher, ...] = ()
    allow_methods: bytes | None = None
    allow_headers: bytes | None = None
    expose_headers: bytes | None = None
    max_age: bytes | None = None
    allow_credentials: bool | None = None
    allow_private_network_access: bool | None = None
    filter_enabled: float = 1.0
    shadow_enabled: float | None = None
    forward_not_matching_preflights: bool = True


@dataclass(frozen=True, slots=True)
class MaxStreamDuration:
    max_stream_duration: float | None = None
    grpc_timeout_header_max: float | None = None
    grpc_timeout_header_offset: float | None = None


@dataclass(frozen=True, slots=True)
class RouteUpgrade:
    """A route's ``upgrade_configs`` entry: ``upgrade_type`` lower-cased (``websocket``,
    ``connect``), whether the route allows it, and for CONNECT whether the proxy terminates
    the tunnel itself (``connect_config``: 200 to the client, raw TCP to the upstream)."""

    upgrade_type: str
    enabled: bool = True
    terminate_connect: bool = False


class RouteActionType(StrEnum):
    CLUSTER = "cluster"
    CLUSTER_HEADER = "cluster_header"
    WEIGHTED_CLUSTERS = "weighted_clusters"


@dataclass(frozen=True, slots=True)
class RouteAction:
    """Forward upstream. Exactly one of ``cluster`` / ``cluster_header`` / ``weighted_clusters``
    is set, as ``kind`` says. ``timeout`` defaults to Envoy's 15 s; 0 disables it.
    ``idle_timeout=None`` means the connection manager's stream_idle_timeout applies."""

    kind: RouteActionType
    cluster: str | None = None
    cluster_header: bytes | None = None
    weighted_clusters: WeightedClusters | None = None
    cluster_not_found_response_code: int = 503
    prefix_rewrite: bytes | None = None
    regex_rewrite: RegexRewrite | None = None
    host_rewrite_literal: bytes | None = None
    auto_host_rewrite: bool = False
    host_rewrite_header: bytes | None = None
    append_x_forwarded_host: bool = False
    timeout: float = 15.0
    idle_timeout: float | None = None
    retry_policy: RetryPolicy | None = None
    request_mirror_policies: tuple[RequestMirrorPolicy, ...] = ()
    hash_policy: tuple[HashPolicy, ...] = ()
    cors: CorsPolicy | None = None
    max_stream_duration: MaxStreamDuration | None = None
    priority_high: bool = False
    rate_limits: tuple[RateLimitPolicyEntry, ...] = ()
    include_vh_rate_limits: bool = False
    upgrade_configs: tuple[RouteUpgrade, ...] = ()


@dataclass(frozen=True, slots=True)
class RedirectAction:
    """Answer with a redirect. ``response_code`` defaults to 301. At most one of
    ``path_redirect`` / ``prefix_rewrite`` / ``regex_rewrite``; ``scheme_redirect`` is
    ``b"https"`` for ``https_redirect: true``."""

    scheme_redirect: bytes | None = None
    host_redirect: bytes | None = None
    port_redirect: int | None = None
    path_redirect: bytes | None = None
    prefix_rewrite: bytes | None = None
    regex_rewrite: RegexRewrite | None = None
    response_code: int = 301
    strip_query: bool = False


@dataclass(frozen=True, slots=True)
class DirectResponseAction:
    status: int
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """``typed_per_filter_config`` maps an HTTP filter name to that filter's TRANSLATED
    per-route config (e.g. ``FaultConfig``), or ``FilterDisabled``."""

    match: RouteMatch
    action: RouteAction | RedirectAction | DirectResponseAction
    name: str = ""
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[bytes, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_remove: tuple[bytes, ...] = ()
    typed_per_filter_config: Mapping[str, object] = field(default_factory=empty_mapping)
    decorator_operation: str | None = None
    metadata: Mapping[str, object] = field(default_factory=empty_mapping)


class RequireTls(StrEnum):
    NONE = "NONE"
    EXTERNAL_ONLY = "EXTERNAL_ONLY"
    ALL = "ALL"


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """``domains`` are lower-case bytes: exact, ``*.suffix``, ``prefix.*`` or ``*``, each with
    an optional ``:port``. Envoy picks exact, then longest suffix wildcard, then longest
    prefix wildcard, then ``*``."""

    name: str
    domains: tuple[bytes, ...]
    routes: tuple[Route, ...] = ()
    require_tls: RequireTls = RequireTls.NONE
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[bytes, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_remove: tuple[bytes, ...] = ()
    cors: CorsPolicy | None = None
    retry_policy: RetryPolicy | None = None
    typed_per_filter_config: Mapping[str, object] = field(default_factory=empty_mapping)
    include_request_attempt_count: bool = False
    include_attempt_count_in_response: bool = False
    rate_limits: tuple[RateLimitPolicyEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteConfiguration:
    """``validate_clusters=None`` is Envoy's default: validate when the configuration is
    inlined in the connection manager, not when it came over RDS."""

    name: str = ""
    virtual_hosts: tuple[VirtualHost, ...] = ()
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[bytes, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_remove: tuple[bytes, ...] = ()
    internal_only_headers: tuple[bytes, ...] = ()
    most_specific_header_mutations_wins: bool = False
    validate_clusters: bool | None = None
    ignore_port_in_host_matching: bool = False
    max_direct_response_body_size_bytes: int = 4096
    # every cluster name a route can pick statically (cluster, weighted, mirror)
    cluster_names: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class FilterDisabled:
    """The value in a ``typed_per_filter_config`` for a filter disabled on this route or
    virtual host (``config.route.v3.FilterConfig`` with ``disabled: true``)."""

    is_optional: bool = False
