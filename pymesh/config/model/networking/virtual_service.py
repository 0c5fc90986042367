"""``networking.istio.io`` VirtualService (istio.networking.v1alpha3.VirtualService).

Field names, types and meaning follow Istio's API reference; durations are float seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from pymesh.config.model.common import EMPTY_MAP, FrozenMap, Oneofs, spec_field

__all__ = [
    "Abort",
    "CorsPolicy",
    "Delay",
    "Delegate",
    "Destination",
    "HTTPBody",
    "HTTPDirectResponse",
    "HTTPFaultInjection",
    "HTTPMatchRequest",
    "HTTPMirrorPolicy",
    "HTTPRedirect",
    "HTTPRetry",
    "HTTPRewrite",
    "HTTPRoute",
    "HTTPRouteDestination",
    "HeaderOperations",
    "Headers",
    "L4MatchAttributes",
    "Percent",
    "PortSelector",
    "RedirectPortSelection",
    "RegexRewrite",
    "RouteDestination",
    "StringMatch",
    "TCPRoute",
    "TLSMatchAttributes",
    "TLSRoute",
    "UnmatchedPreflights",
    "VirtualService",
]


@dataclass(frozen=True, slots=True)
class Percent:
    """A percentage in [0, 100] with fractional precision."""

    value: float = 0.0


@dataclass(frozen=True, slots=True)
class PortSelector:
    """Selects a port of the destination service by number."""

    number: int = spec_field(0, unsigned=True)


@dataclass(frozen=True, slots=True)
class Destination:
    """A service (``host``, short name resolved in the rule's namespace), subset and port."""

    host: str = spec_field(required=True)
    subset: str = ""
    port: PortSelector | None = None


@dataclass(frozen=True, slots=True)
class StringMatch:
    """Exactly one of ``exact``/``prefix``/``regex`` (RE2 syntax); an empty header match
    (``{}``) means "header present"."""

    ONEOFS: ClassVar[Oneofs] = (("exact", "prefix", "regex"),)

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @property
    def is_empty(self) -> bool:
        return self.exact is None and self.prefix is None and self.regex is None


@dataclass(frozen=True, slots=True)
class HeaderOperations:
    """``set`` overwrites, ``add`` appends, ``remove`` deletes headers."""

    set: FrozenMap[str, str] = EMPTY_MAP
    add: FrozenMap[str, str] = EMPTY_MAP
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Headers:
    """Header manipulation for the request (before forwarding) and the response."""

    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


@dataclass(frozen=True, slots=True)
class Delegate:
    """Routes delegated to another VirtualService (namespace defaults to the root's)."""

    name: str = ""
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class HTTPMatchRequest:
    """Conditions ANDed together; a route's ``match`` list is ORed."""

    name: str = ""
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    #: header names are lower-case; ``{}`` as value checks presence only
    headers: FrozenMap[str, StringMatch] = EMPTY_MAP
    port: int = spec_field(0, unsigned=True)
    source_labels: FrozenMap[str, str] = EMPTY_MAP
    gateways: tuple[str, ...] = ()
    query_params: FrozenMap[str, StringMatch] = EMPTY_MAP
    ignore_uri_case: bool = False
    without_headers: FrozenMap[str, StringMatch] = EMPTY_MAP
    source_namespace: str = ""
    stat_prefix: str = ""


@dataclass(frozen=True, slots=True)
class HTTPRouteDestination:
    """A weighted HTTP destination. Weights are relative proportions (need not sum to 100)."""

    destination: Destination = spec_field(required=True)  # noqa: RUF009
    weight: int = 0
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class RouteDestination:
    """A weighted L4 (TCP/TLS) destination."""

    destination: Destination = spec_field(required=True)  # noqa: RUF009
    weight: int = 0


@dataclass(frozen=True, slots=True)
class L4MatchAttributes:
    """TCP route match conditions."""

    destination_subnets: tuple[str, ...] = ()
    port: int = spec_field(0, unsigned=True)
    source_subnet: str = spec_field("", deprecated="it has no effect")
    source_labels: FrozenMap[str, str] = EMPTY_MAP
    gateways: tuple[str, ...] = ()
    source_namespace: str = ""


@dataclass(frozen=True, slots=True)
class TLSMatchAttributes:
    """TLS (SNI) route match conditions."""

    sni_hosts: tuple[str, ...] = spec_field(required=True)
    destination_subnets: tuple[str, ...] = ()
    port: int = spec_field(0, unsigned=True)
    source_labels: FrozenMap[str, str] = EMPTY_MAP
    gateways: tuple[str, ...] = ()
    source_namespace: str = ""


class RedirectPortSelection(StrEnum):
    FROM_PROTOCOL_DEFAULT = "FROM_PROTOCOL_DEFAULT"
    FROM_REQUEST_PORT = "FROM_REQUEST_PORT"


@dataclass(frozen=True, slots=True)
class HTTPRedirect:
    """Answer with a 3xx redirect; default code 301."""

    ONEOFS: ClassVar[Oneofs] = (("port", "derive_port"),)

    uri: str = ""
    authority: str = ""
    port: int | None = spec_field(None, unsigned=True)
    derive_port: RedirectPortSelection | None = None
    scheme: str = ""
    redirect_code: int = spec_field(0, unsigned=True)
    prefix_rewrite: str = ""


@dataclass(frozen=True, slots=True)
class HTTPBody:
    """A direct response body: text, or bytes given as base64."""

    ONEOFS: ClassVar[Oneofs] = (("string", "body_bytes"),)

    string: str | None = None
    body_bytes: bytes | None = spec_field(None, json="bytes")


@dataclass(frozen=True, slots=True)
class HTTPDirectResponse:
    """Answer directly with a fixed status and body."""

    status: int = spec_field(required=True, unsigned=True)
    body: HTTPBody | None = None


@dataclass(frozen=True, slots=True)
class RegexRewrite:
    """Rewrite the path with an RE2 regex and a substitution (``\\1`` groups)."""

    match: str = ""
    rewrite: str = ""


@dataclass(frozen=True, slots=True)
class HTTPRewrite:
    """Rewrite URI (prefix of the matched part) or authority before forwarding."""

    uri: str = ""
    authority: str = ""
    uri_regex_rewrite: RegexRewrite | None = None


@dataclass(frozen=True, slots=True)
class HTTPRetry:
    """Retry policy; ``retry_on`` is Envoy's comma-separated ``x-envoy-retry-on`` list."""

    attempts: int = 0
    per_try_timeout: float | None = spec_field(None, duration=True)
    retry_on: str = ""
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: float | None = spec_field(None, duration=True)


class UnmatchedPreflights(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    FORWARD = "FORWARD"
    IGNORE = "IGNORE"


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Cross-origin resource sharing policy."""

    allow_origin: tuple[str, ...] = spec_field((), deprecated="use allowOrigins")
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: float | None = spec_field(None, duration=True)
    allow_credentials: bool | None = None
    unmatched_preflights: UnmatchedPreflights = UnmatchedPreflights.UNSPECIFIED


@dataclass(frozen=True, slots=True)
class Delay:
    """Delay a share of requests before forwarding."""

    ONEOFS: ClassVar[Oneofs] = (("fixed_delay", "exponential_delay"),)

    percent: int = spec_field(0, deprecated="use percentage")
    fixed_delay: float | None = spec_field(None, duration=True)
    exponential_delay: float | None = spec_field(None, duration=True)
    percentage: Percent | None = None


@dataclass(frozen=True, slots=True)
class Abort:
    """Abort a share of requests with an HTTP status, a gRPC status or an HTTP/2 error."""

    ONEOFS: ClassVar[Oneofs] = (("http_status", "grpc_status", "http2_error"),)

    http_status: int | None = None
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percent | None = None


@dataclass(frozen=True, slots=True)
class HTTPFaultInjection:
    """Fault injection applied to matched requests (not combined with retries/timeouts)."""

    delay: Delay | None = None
    abort: Abort | None = None


@dataclass(frozen=True, slots=True)
class HTTPMirrorPolicy:
    """One mirror destination and the share of traffic copied to it (100% if unset)."""

    destination: Destination = spec_field(required=True)  # noqa: RUF009
    percentage: Percent | None = None


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    """One HTTP rule: matches, then exactly one action (route, redirect, direct response or
    delegate) with the policies around it."""

    name: str = ""
    match: tuple[HTTPMatchRequest, ...] = ()
    route: tuple[HTTPRouteDestination, ...] = ()
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: float | None = spec_field(None, duration=True)
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: tuple[HTTPMirrorPolicy, ...] = ()
    mirror_percent: int | None = spec_field(
        None, unsigned=True, aliases=("mirror_percent",), deprecated="use mirrorPercentage"
    )
    mirror_percentage: Percent | None = None
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None

    @property
    def effective_mirror_percentage(self) -> float:
        """The share of traffic sent to ``mirror``: 100 unless either percentage field is set."""
        if self.mirror_percentage is not None:
            return self.mirror_percentage.value
        if self.mirror_percent is not None:
            return float(self.mirror_percent)
        return 100.0


@dataclass(frozen=True, slots=True)
class TLSRoute:
    """Route for non-terminated TLS, by SNI."""

    match: tuple[TLSMatchAttributes, ...] = spec_field(required=True)
    route: tuple[RouteDestination, ...] = ()


@dataclass(frozen=True, slots=True)
class TCPRoute:
    """Route for opaque TCP traffic."""

    match: tuple[L4MatchAttributes, ...] = ()
    route: tuple[RouteDestination, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualService:
    """Routing rules for traffic addressed to ``hosts``, applied at ``gateways`` (``mesh``
    = every sidecar, the default when the list is empty). No hosts makes it a delegate."""

    KIND: ClassVar[str] = "VirtualService"

    hosts: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    http: tuple[HTTPRoute, ...] = ()
    tls: tuple[TLSRoute, ...] = ()
    tcp: tuple[TCPRoute, ...] = ()
    export_to: tuple[str, ...] = ()
