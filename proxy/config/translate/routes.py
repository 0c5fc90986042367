"""``envoy.config.route.v3.RouteConfiguration`` → ``model.RouteConfiguration``."""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_components_pb2, route_pb2

from proxy.config.model import (
    DirectResponseAction,
    PathMatchKind,
    RedirectAction,
    RequireTls,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from proxy.config.translate.common import (
    at,
    fractional_percent,
    header_matcher,
    header_mutations,
    join,
    metadata,
    query_parameter_matcher,
    wrapped,
)
from proxy.config.translate.filters import FilterRegistry, cors_policy, typed_per_filter_config
from proxy.config.translate.ratelimit import rate_limit_policy
from proxy.config.translate.rbac import metadata_matcher
from proxy.config.translate.regex import regex_matcher
from proxy.config.translate.route_actions import (
    direct_response_action,
    redirect_action,
    retry_policy,
    route_action,
)
from proxy.config.translate.support import check_supported
from pymesh.errors import ValidationError

__all__ = [
    "route_configuration",
    "route_match",
    "translate_route_configuration",
]


def translate_route_configuration(
    proto: route_pb2.RouteConfiguration, registry: FilterRegistry, path: str = ""
) -> RouteConfiguration:
    """Translate an RDS resource (or an inline ``route_config``); errors carry paths relative
    to ``path``."""
    check_supported(proto, path)
    return route_configuration(proto, registry, path)


def route_configuration(proto: Any, registry: FilterRegistry, path: str) -> RouteConfiguration:
    """Translate an already-checked ``RouteConfiguration``."""
    virtual_hosts = []
    seen_domains: dict[bytes, str] = {}
    clusters: set[str] = set()
    for index, vhost in enumerate(proto.virtual_hosts):
        vhost_path = at(join(path, "virtual_hosts"), index)
        translated = _virtual_host(vhost, registry, vhost_path, clusters)
        for domain_index, domain in enumerate(translated.domains):
            if domain in seen_domains:
                message = (
                    "Only a single wildcard domain is permitted in route "
                    if domain == b"*"
                    else f"Only unique values for domains are permitted. Duplicate entry of "
                    f"domain {domain.decode()} in route "
                )
                raise ValidationError(
                    message + proto.name, path=at(join(vhost_path, "domains"), domain_index)
                )
            seen_domains[domain] = vhost.name
        virtual_hosts.append(translated)
    config = RouteConfiguration(
        name=proto.name,
        virtual_hosts=tuple(virtual_hosts),
        **header_mutations(proto, path),
        internal_only_headers=tuple(name.lower().encode() for name in proto.internal_only_headers),
        most_specific_header_mutations_wins=proto.most_specific_header_mutations_wins,
        validate_clusters=wrapped(proto, "validate_clusters", None),
        ignore_port_in_host_matching=proto.ignore_port_in_host_matching,
        max_direct_response_body_size_bytes=wrapped(
            proto, "max_direct_response_body_size_bytes", 4096
        ),
        cluster_names=frozenset(clusters),
    )
    _check_direct_response_sizes(config, path)
    return config


def _virtual_host(
    proto: Any, registry: FilterRegistry, path: str, clusters: set[str]
) -> VirtualHost:
    routes = tuple(
        _route(route, registry, at(join(path, "routes"), index), clusters)
        for index, route in enumerate(proto.routes)
    )
    return VirtualHost(
        name=proto.name,
        domains=tuple(domain.lower().encode() for domain in proto.domains),
        routes=routes,
        require_tls=RequireTls(
            route_components_pb2.VirtualHost.TlsRequirementType.Name(proto.require_tls)
        ),
        **header_mutations(proto, path),
        cors=cors_policy(proto.cors, join(path, "cors")) if proto.HasField("cors") else None,
        retry_policy=(
            retry_policy(proto.retry_policy, join(path, "retry_policy"))
            if proto.HasField("retry_policy")
            else None
        ),
        typed_per_filter_config=typed_per_filter_config(
            proto.typed_per_filter_config, registry, join(path, "typed_per_filter_config")
        ),
        include_request_attempt_count=proto.include_request_attempt_count,
        include_attempt_count_in_response=proto.include_attempt_count_in_response,
        rate_limits=rate_limit_policy(proto.rate_limits, join(path, "rate_limits")),
    )


def _route(proto: Any, registry: FilterRegistry, path: str, clusters: set[str]) -> Route:
    kind = proto.WhichOneof("action")
    action: RouteAction | RedirectAction | DirectResponseAction
    if kind == "route":
        action = route_action(proto.route, proto.match, registry, join(path, "route"), clusters)
    elif kind == "redirect":
        action = redirect_action(proto.redirect, join(path, "redirect"))
    elif kind == "direct_response":
        action = direct_response_action(proto.direct_response, join(path, "direct_response"))
    else:
        raise ValidationError(
            "one of [route, redirect, direct_response] is required", path=join(path, "action")
        )
    return Route(
        match=route_match(proto.match, join(path, "match")),
        action=action,
        name=proto.name,
        **header_mutations(proto, path),
        typed_per_filter_config=typed_per_filter_config(
            proto.typed_per_filter_config, registry, join(path, "typed_per_filter_config")
        ),
        decorator_operation=proto.decorator.operation if proto.HasField("decorator") else None,
        metadata=metadata(proto),
    )


def route_match(proto: Any, path: str) -> RouteMatch:
    kind = proto.WhichOneof("path_specifier")
    case_sensitive = wrapped(proto, "case_sensitive", True)
    regex = None
    literal = b""
    if kind == "safe_regex":
        regex = regex_matcher(proto.safe_regex, join(path, "safe_regex"))
    elif kind in ("prefix", "path", "path_separated_prefix"):
        value: str = getattr(proto, kind)
        literal = value.encode() if case_sensitive else value.lower().encode()
    elif kind != "connect_matcher":
        raise ValidationError(
            "one of [prefix, path, safe_regex, path_separated_prefix, connect_matcher] is required",
            path=join(path, "path_specifier"),
        )
    return RouteMatch(
        path_kind=PathMatchKind(kind),
        path=literal,
        regex=regex,
        case_sensitive=case_sensitive,
        headers=tuple(
            header_matcher(item, at(join(path, "headers"), index))
            for index, item in enumerate(proto.headers)
        ),
        query_parameters=tuple(
            query_parameter_matcher(item, at(join(path, "query_parameters"), index))
            for index, item in enumerate(proto.query_parameters)
        ),
        runtime_fraction=(
            fractional_percent(proto.runtime_fraction.default_value)
            if proto.HasField("runtime_fraction")
            else None
        ),
        dynamic_metadata=tuple(
            metadata_matcher(item, at(join(path, "dynamic_metadata"), index))
            for index, item in enumerate(proto.dynamic_metadata)
        ),
    )


def _check_direct_response_sizes(config: RouteConfiguration, path: str) -> None:
    """Envoy refuses direct-response bodies over ``max_direct_response_body_size_bytes``."""
    limit = config.max_direct_response_body_size_bytes
    for vh_index, vhost in enumerate(config.virtual_hosts):
        for route_index, route in enumerate(vhost.routes):
            action = route.action
            if (
                isinstance(action, DirectResponseAction)
                and action.body
                and len(action.body) > limit
            ):
                raise ValidationError(
                    f"response body size is {len(action.body)} bytes; maximum is {limit}",
                    path=f"{join(path, 'virtual_hosts')}[{vh_index}].routes[{route_index}]"
                    ".direct_response.body",
                )
