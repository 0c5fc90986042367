"""Translate routes' ``rate_limits`` and the ``envoy.filters.http.ratelimit`` filter configs.

``support.check_supported`` runs first: it refuses the fields pymesh does not implement and
applies Envoy's PGV rules (required strings, list lengths), so only the checks PGV does not
express are here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from proxy.config.model_ratelimit import (
    GrpcTarget,
    RateLimitAction,
    RateLimitActionKind,
    RateLimitFilterConfig,
    RateLimitPerRoute,
    RateLimitPolicyEntry,
    VhRateLimits,
)
from proxy.config.translate.common import duration, header_matcher, header_name, join, wrapped
from pymesh.errors import UnsupportedError, ValidationError

__all__ = [
    "rate_limit_filter",
    "rate_limit_per_route",
    "rate_limit_policy",
    "rate_limit_service_clusters",
]

# Envoy: RateLimitPolicyImpl::MAX_STAGE_NUMBER
MAX_STAGE = 10

_KIND = RateLimitActionKind
_REQUEST_TYPES = ("both", "internal", "external")
_STAGE_RULE = "stage must be <= 10"


def rate_limit_policy(messages: Iterable[Any], path: str) -> tuple[RateLimitPolicyEntry, ...]:
    """``repeated envoy.config.route.v3.RateLimit`` of a route action or virtual host."""
    entries = []
    for index, message in enumerate(messages):
        entry_path = f"{path}[{index}]"
        stage = wrapped(message, "stage", 0)
        if stage > MAX_STAGE:
            raise ValidationError(_STAGE_RULE, path=join(entry_path, "stage"))
        actions = tuple(
            _action(action, f"{join(entry_path, 'actions')}[{position}]")
            for position, action in enumerate(message.actions)
        )
        entries.append(RateLimitPolicyEntry(actions, stage, message.disable_key))
    return tuple(entries)


def _action(message: Any, path: str) -> RateLimitAction:
    kind = message.WhichOneof("action_specifier")
    if kind is None:
        raise ValidationError("action_specifier: value is required", path=path)
    if kind == "source_cluster":
        return RateLimitAction(_KIND.SOURCE_CLUSTER, "source_cluster")
    if kind == "destination_cluster":
        return RateLimitAction(_KIND.DESTINATION_CLUSTER, "destination_cluster")
    if kind == "remote_address":
        return RateLimitAction(_KIND.REMOTE_ADDRESS, "remote_address")
    spec = getattr(message, kind)
    spec_path = join(path, kind)
    if kind == "request_headers":
        return RateLimitAction(
            _KIND.REQUEST_HEADERS,
            spec.descriptor_key,
            header=header_name(spec.header_name, join(spec_path, "header_name")),
            skip_if_absent=spec.skip_if_absent,
        )
    if kind == "generic_key":
        return RateLimitAction(
            _KIND.GENERIC_KEY, spec.descriptor_key or "generic_key", spec.descriptor_value
        )
    if kind == "header_value_match":
        return RateLimitAction(
            _KIND.HEADER_VALUE_MATCH,
            spec.descriptor_key or "header_match",
            spec.descriptor_value,
            headers=tuple(
                header_matcher(item, f"{join(spec_path, 'headers')}[{position}]")
                for position, item in enumerate(spec.headers)
            ),
            expect_match=wrapped(spec, "expect_match", True),
        )
    raise UnsupportedError(f"rate limit action '{kind}' is not supported by pymesh", path=spec_path)


def rate_limit_filter(message: Any, path: str) -> RateLimitFilterConfig:
    """``envoy.extensions.filters.http.ratelimit.v3.RateLimit``."""
    if not message.domain:
        raise ValidationError("domain: value length must be at least 1 characters", path=path)
    if message.stage > MAX_STAGE:
        raise ValidationError(_STAGE_RULE, path=join(path, "stage"))
    request_type = message.request_type or "both"
    if request_type not in _REQUEST_TYPES:
        raise ValidationError(
            f"request_type: value must be in list {list(_REQUEST_TYPES)}",
            path=join(path, "request_type"),
        )
    if not message.HasField("rate_limit_service"):
        raise ValidationError("rate_limit_service: value is required", path=path)
    service_path = join(path, "rate_limit_service")
    if message.rate_limit_service.transport_api_version != 2:  # V3
        raise ValidationError(
            "rate limit service config only supports transport_api_version V3",
            path=join(service_path, "transport_api_version"),
        )
    grpc = message.rate_limit_service.grpc_service
    grpc_path = join(service_path, "grpc_service")
    if grpc.WhichOneof("target_specifier") != "envoy_grpc":
        raise UnsupportedError(
            "only envoy_grpc rate limit services are supported by pymesh", path=grpc_path
        )
    if not grpc.envoy_grpc.cluster_name:
        raise ValidationError(
            "cluster_name: value length must be at least 1 characters",
            path=join(grpc_path, "envoy_grpc"),
        )
    target = GrpcTarget(
        grpc.envoy_grpc.cluster_name,
        grpc.envoy_grpc.authority,
        duration(grpc.timeout) if grpc.HasField("timeout") else None,
    )
    status_on_error = message.status_on_error.code if message.HasField("status_on_error") else 500
    return RateLimitFilterConfig(
        domain=message.domain,
        service=target,
        stage=message.stage,
        request_type=request_type,
        timeout=duration(message.timeout) if message.HasField("timeout") else 0.02,
        failure_mode_deny=message.failure_mode_deny,
        rate_limited_as_resource_exhausted=message.rate_limited_as_resource_exhausted,
        enable_x_ratelimit_headers=message.enable_x_ratelimit_headers != 0,
        disable_x_envoy_ratelimited_header=message.disable_x_envoy_ratelimited_header,
        status_on_error=status_on_error,
    )


def rate_limit_per_route(message: Any, path: str) -> RateLimitPerRoute:
    """``RateLimitPerRoute``: ``vh_rate_limits`` (the other fields are refused as
    unsupported before this runs)."""
    return RateLimitPerRoute(_VH_RATE_LIMITS[message.vh_rate_limits])


_VH_RATE_LIMITS = {0: VhRateLimits.OVERRIDE, 1: VhRateLimits.INCLUDE, 2: VhRateLimits.IGNORE}


def rate_limit_service_clusters(listeners: Iterable[Any]) -> set[str]:
    """The clusters the rate limit filters of ``listeners`` call: gRPC side calls, so they
    may speak HTTP/2 like the ADS cluster (the filter's own client does, not the data path)."""
    found: set[str] = set()
    hcm = hcm_pb2.HttpConnectionManager()
    for listener in listeners:
        for chain in listener.filter_chains:
            for item in chain.filters:
                if not item.typed_config.Is(hcm.DESCRIPTOR):
                    continue
                item.typed_config.Unpack(hcm)
                for http_filter in hcm.http_filters:
                    config = rate_limit_pb2.RateLimit()
                    if http_filter.typed_config.Unpack(config):
                        service = config.rate_limit_service.grpc_service.envoy_grpc
                        found.add(service.cluster_name)
    return found
