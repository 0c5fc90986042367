"""Rate limit policies of routes and virtual hosts (``envoy.config.route.v3.RateLimit``) and
the configs of the global rate limit filter (``envoy.filters.http.ratelimit``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from proxy.config.model_common import HeaderMatcher

__all__ = [
    "GrpcTarget",
    "RateLimitAction",
    "RateLimitActionKind",
    "RateLimitFilterConfig",
    "RateLimitPerRoute",
    "RateLimitPolicyEntry",
    "VhRateLimits",
]


class RateLimitActionKind(StrEnum):
    SOURCE_CLUSTER = "source_cluster"
    DESTINATION_CLUSTER = "destination_cluster"
    REQUEST_HEADERS = "request_headers"
    REMOTE_ADDRESS = "remote_address"
    GENERIC_KEY = "generic_key"
    HEADER_VALUE_MATCH = "header_value_match"


@dataclass(frozen=True, slots=True)
class RateLimitAction:
    """One descriptor entry producer. ``key`` is the descriptor key (fixed for the cluster
    and address kinds); ``value`` the fixed value of generic_key / header_value_match;
    ``header`` the lower-case request header of request_headers; ``headers`` the matchers of
    header_value_match, whose result must equal ``expect_match``."""

    kind: RateLimitActionKind
    key: str
    value: str = ""
    header: bytes = b""
    skip_if_absent: bool = False
    headers: tuple[HeaderMatcher, ...] = ()
    expect_match: bool = True


@dataclass(frozen=True, slots=True)
class RateLimitPolicyEntry:
    """``RateLimit``: its actions make one descriptor, for the filters of ``stage``; a
    ``disable_key`` switch is a runtime key (no runtime layers here: always on)."""

    actions: tuple[RateLimitAction, ...]
    stage: int = 0
    disable_key: str = ""


class VhRateLimits(StrEnum):
    """How a route's policy combines with its virtual host's (``RateLimitPerRoute``)."""

    OVERRIDE = "OVERRIDE"  # the virtual host's only when the route has none (the default)
    INCLUDE = "INCLUDE"  # both
    IGNORE = "IGNORE"  # the route's only


@dataclass(frozen=True, slots=True)
class RateLimitPerRoute:
    """``envoy.filters.http.ratelimit``'s per-route config."""

    vh_rate_limits: VhRateLimits = VhRateLimits.OVERRIDE


@dataclass(frozen=True, slots=True)
class GrpcTarget:
    """``grpc_service.envoy_grpc``: a cluster of the proxy, called over HTTP/2."""

    cluster_name: str
    authority: str = ""
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class RateLimitFilterConfig:
    """``envoy.filters.http.ratelimit`` (``extensions.filters.http.ratelimit.v3.RateLimit``).

    ``timeout`` defaults to Envoy's 20 ms. Without ``failure_mode_deny`` an RLS error lets the
    request through (counted ``ratelimit.failure_mode_allowed``); with it the answer is
    ``status_on_error`` (500). ``request_type`` is ``both``, ``internal`` or ``external``."""

    domain: str
    service: GrpcTarget
    stage: int = 0
    request_type: str = "both"
    timeout: float = 0.02
    failure_mode_deny: bool = False
    rate_limited_as_resource_exhausted: bool = False
    enable_x_ratelimit_headers: bool = False
    disable_x_envoy_ratelimited_header: bool = False
    status_on_error: int = 500
    stat_prefix: str = ""
