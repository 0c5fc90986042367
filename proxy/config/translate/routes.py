"""``envoy.config.route.v3.RouteConfiguration`` → ``model.RouteConfiguration``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

from proxy.config.model import (
    RETRY_ON_VALUES,
    DirectResponseAction,
    FilterDisabled,
    HashPolicy,
    HashPolicyKind,
    MaxStreamDuration,
    PathMatchKind,
    RedirectAction,
    RegexRewrite,
    RequestMirrorPolicy,
    RequireTls,
    RetryBackOff,
    RetryPolicy,
    Route,
    RouteAction,
    RouteActionType,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
    WeightedCluster,
    WeightedClusters,
)
from proxy.config.translate.common import (
    at,
    compile_regex,
    data_source,
    duration,
    fractional_percent,
    frozen_mapping,
    header_matcher,
    header_value_options,
    headers_to_remove,
    join,
    metadata,
    opt_duration,
    query_parameter_matcher,
    re2_substitution,
    regex_matcher,
    wrapped,
)
from proxy.config.translate.filters import FilterRegistry, cors_policy
from proxy.config.translate.support import check_supported, unpack
from pymesh.errors import UnsupportedError, ValidationError

__all__ = [
    "retry_policy",
    "route_configuration",
    "translate_route_configuration",
    "typed_per_filter_config",
]

_FILTER_CONFIG_URL = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
_PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
_GRPC_RETRY_ON = frozenset(
    {"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
)
_REDIRECT_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}
_NOT_FOUND_CODES = {0: 503, 1: 404, 2: 500}


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
        request_headers_to_add=header_value_options(
            proto.request_headers_to_add, join(path, "request_headers_to_add")
        ),
        request_headers_to_remove=headers_to_remove(
            proto.request_headers_to_remove, join(path, "request_headers_to_remove")
        ),
        response_headers_to_add=header_value_options(
            proto.response_headers_to_add, join(path, "response_headers_to_add")
        ),
        response_headers_to_remove=headers_to_remove(
            proto.response_headers_to_remove, join(path, "response_headers_to_remove")
        ),
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
        request_headers_to_add=header_value_options(
            proto.request_headers_to_add, join(path, "request_headers_to_add")
        ),
        request_headers_to_remove=headers_to_remove(
            proto.request_headers_to_remove, join(path, "request_headers_to_remove")
        ),
        response_headers_to_add=header_value_options(
            proto.response_headers_to_add, join(path, "response_headers_to_add")
        ),
        response_headers_to_remove=headers_to_remove(
            proto.response_headers_to_remove, join(path, "response_headers_to_remove")
        ),
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
    )


def typed_per_filter_config(
    entries: Mapping[str, Any], registry: FilterRegistry, path: str
) -> Mapping[str, object]:
    """Per-filter configs by filter name, translated by the filter's own translator."""
    result: dict[str, object] = {}
    for name in sorted(entries):
        entry_path = at(path, name)
        config = entries[name]
        is_optional = False
        if config.type_url == _FILTER_CONFIG_URL:
            wrapper = unpack(config, route_components_pb2.FilterConfig, entry_path)
            is_optional = wrapper.is_optional
            if wrapper.disabled:
                result[name] = FilterDisabled(is_optional=is_optional)
                continue
            if not wrapper.HasField("config"):
                raise ValidationError("config is required unless disabled", path=entry_path)
            config = wrapper.config
            entry_path = join(entry_path, "config")
        try:
            result[name] = registry.translate_per_route(name, config, entry_path)
        except UnsupportedError:
            # Envoy skips an optional filter's config when it lacks the filter; so do we.
            if not is_optional:
                raise
    return frozen_mapping(result)


def _route(proto: Any, registry: FilterRegistry, path: str, clusters: set[str]) -> Route:
    kind = proto.WhichOneof("action")
    action: RouteAction | RedirectAction | DirectResponseAction
    if kind == "route":
        action = _route_action(proto.route, proto.match, join(path, "route"), clusters)
    elif kind == "redirect":
        action = _redirect(proto.redirect, join(path, "redirect"))
    elif kind == "direct_response":
        action = _direct_response(proto.direct_response, join(path, "direct_response"))
    else:
        raise ValidationError(
            "one of [route, redirect, direct_response] is required", path=join(path, "action")
        )
    return Route(
        match=_route_match(proto.match, join(path, "match")),
        action=action,
        name=proto.name,
        request_headers_to_add=header_value_options(
            proto.request_headers_to_add, join(path, "request_headers_to_add")
        ),
        request_headers_to_remove=headers_to_remove(
            proto.request_headers_to_remove, join(path, "request_headers_to_remove")
        ),
        response_headers_to_add=header_value_options(
            proto.response_headers_to_add, join(path, "response_headers_to_add")
        ),
        response_headers_to_remove=headers_to_remove(
            proto.response_headers_to_remove, join(path, "response_headers_to_remove")
        ),
        typed_per_filter_config=typed_per_filter_config(
            proto.typed_per_filter_config, registry, join(path, "typed_per_filter_config")
        ),
        decorator_operation=proto.decorator.operation if proto.HasField("decorator") else None,
        metadata=metadata(proto),
    )


def _route_match(proto: Any, path: str) -> RouteMatch:
    kind = proto.WhichOneof("path_specifier")
    case_sensitive = wrapped(proto, "case_sensitive", True)
    regex = None
    literal = b""
    if kind == "safe_regex":
        regex = regex_matcher(proto.safe_regex, join(path, "safe_regex"))
    elif kind in ("prefix", "path", "path_separated_prefix"):
        value: str = getattr(proto, kind)
        literal = value.encode() if case_sensitive else value.lower().encode()
    else:
        raise ValidationError(
            "one of [prefix, path, safe_regex, path_separated_prefix] is required",
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
    )


def _regex_rewrite(proto: Any, path: str) -> RegexRewrite:
    return RegexRewrite(
        pattern=regex_matcher(proto.pattern, join(path, "pattern")),
        substitution=re2_substitution(proto.substitution),
    )


def _route_action(proto: Any, match: Any, path: str, clusters: set[str]) -> RouteAction:
    kind = proto.WhichOneof("cluster_specifier")
    weighted = None
    if kind == "cluster":
        clusters.add(proto.cluster)
    elif kind == "weighted_clusters":
        weighted = _weighted_clusters(proto.weighted_clusters, join(path, "weighted_clusters"))
        clusters.update(item.name for item in weighted.clusters)
    elif kind != "cluster_header":
        raise ValidationError(
            "one of [cluster, cluster_header, weighted_clusters] is required",
            path=join(path, "cluster_specifier"),
        )
    if proto.prefix_rewrite and proto.HasField("regex_rewrite"):
        raise ValidationError(
            "Cannot specify both prefix_rewrite and regex_rewrite",
            path=join(path, "prefix_rewrite"),
        )
    if proto.prefix_rewrite and match.WhichOneof("path_specifier") == "path_separated_prefix":
        if proto.prefix_rewrite.endswith("/"):
            raise ValidationError(
                "prefix_rewrite must not end with '/' when using path_separated_prefix",
                path=join(path, "prefix_rewrite"),
            )
    mirrors = []
    for index, mirror in enumerate(proto.request_mirror_policies):
        mirror_path = at(join(path, "request_mirror_policies"), index)
        if not mirror.cluster:
            raise ValidationError("cluster is required", path=join(mirror_path, "cluster"))
        clusters.add(mirror.cluster)
        mirrors.append(
            RequestMirrorPolicy(
                cluster=mirror.cluster,
                runtime_fraction=(
                    fractional_percent(mirror.runtime_fraction.default_value)
                    if mirror.HasField("runtime_fraction")
                    else 1.0
                ),
                trace_sampled=wrapped(mirror, "trace_sampled", None),
                disable_shadow_host_suffix_append=mirror.disable_shadow_host_suffix_append,
            )
        )
    timeout = opt_duration(proto, "timeout")
    return RouteAction(
        kind=RouteActionType(kind),
        cluster=proto.cluster or None,
        cluster_header=proto.cluster_header.lower().encode() if kind == "cluster_header" else None,
        weighted_clusters=weighted,
        cluster_not_found_response_code=_NOT_FOUND_CODES[proto.cluster_not_found_response_code],
        prefix_rewrite=proto.prefix_rewrite.encode() if proto.prefix_rewrite else None,
        regex_rewrite=(
            _regex_rewrite(proto.regex_rewrite, join(path, "regex_rewrite"))
            if proto.HasField("regex_rewrite")
            else None
        ),
        host_rewrite_literal=proto.host_rewrite_literal.encode() or None,
        auto_host_rewrite=wrapped(proto, "auto_host_rewrite", False),
        host_rewrite_header=proto.host_rewrite_header.lower().encode() or None,
        append_x_forwarded_host=proto.append_x_forwarded_host,
        timeout=15.0 if timeout is None else timeout,
        idle_timeout=opt_duration(proto, "idle_timeout"),
        retry_policy=(
            retry_policy(proto.retry_policy, join(path, "retry_policy"))
            if proto.HasField("retry_policy")
            else None
        ),
        request_mirror_policies=tuple(mirrors),
        hash_policy=tuple(
            _hash_policy(item, at(join(path, "hash_policy"), index))
            for index, item in enumerate(proto.hash_policy)
        ),
        cors=cors_policy(proto.cors, join(path, "cors")) if proto.HasField("cors") else None,
        max_stream_duration=(
            MaxStreamDuration(
                max_stream_duration=opt_duration(proto.max_stream_duration, "max_stream_duration")
            )
            if proto.HasField("max_stream_duration")
            else None
        ),
        priority_high=proto.priority == 1,
    )


def _weighted_clusters(proto: Any, path: str) -> WeightedClusters:
    items = []
    for index, item in enumerate(proto.clusters):
        item_path = at(join(path, "clusters"), index)
        if not item.name:
            raise ValidationError(
                "At least one of name or cluster_header need to be specified", path=item_path
            )
        items.append(
            WeightedCluster(
                name=item.name,
                weight=wrapped(item, "weight", 0),
                request_headers_to_add=header_value_options(
                    item.request_headers_to_add, join(item_path, "request_headers_to_add")
                ),
                request_headers_to_remove=headers_to_remove(
                    item.request_headers_to_remove, join(item_path, "request_headers_to_remove")
                ),
                response_headers_to_add=header_value_options(
                    item.response_headers_to_add, join(item_path, "response_headers_to_add")
                ),
                response_headers_to_remove=headers_to_remove(
                    item.response_headers_to_remove, join(item_path, "response_headers_to_remove")
                ),
                host_rewrite_literal=item.host_rewrite_literal.encode() or None,
            )
        )
    total = sum(item.weight for item in items)
    if total == 0:
        raise ValidationError(
            "Sum of weights in the weighted_cluster must be greater than 0", path=path
        )
    if proto.HasField("total_weight") and proto.total_weight.value != total:
        raise ValidationError(
            f"Sum of weights in the weighted_cluster should add up to {proto.total_weight.value}",
            path=join(path, "total_weight"),
        )
    return WeightedClusters(tuple(items), total)


def retry_policy(proto: Any, path: str) -> RetryPolicy:
    """``route.v3.RetryPolicy`` (route or virtual host level)."""
    retry_on = frozenset(item.strip() for item in proto.retry_on.split(",") if item.strip())
    for name in sorted(retry_on):
        if name in _GRPC_RETRY_ON or name == "http3-post-connect-failure":
            raise UnsupportedError(
                f"retry_on '{name}' is not supported by pymesh (HTTP/1.1 only)",
                path=join(path, "retry_on"),
            )
    back_off = RetryBackOff()
    if proto.HasField("retry_back_off"):
        base = duration(proto.retry_back_off.base_interval)
        maximum = opt_duration(proto.retry_back_off, "max_interval")
        if maximum is not None and maximum < base:
            raise ValidationError(
                "max_interval must be greater than or equal to the base_interval",
                path=join(path, "retry_back_off.max_interval"),
            )
        back_off = RetryBackOff(base, base * 10 if maximum is None else maximum)
    previous_hosts = False
    for index, predicate in enumerate(proto.retry_host_predicate):
        predicate_path = at(join(path, "retry_host_predicate"), index)
        if predicate.HasField("typed_config"):
            unpack(
                predicate.typed_config,
                previous_hosts_pb2.PreviousHostsPredicate,
                join(predicate_path, "typed_config"),
            )
        elif predicate.name != _PREVIOUS_HOSTS:
            raise UnsupportedError(
                f"retry host predicate '{predicate.name}' is not supported by pymesh",
                path=predicate_path,
            )
        previous_hosts = True
    return RetryPolicy(
        retry_on=retry_on,
        num_retries=wrapped(proto, "num_retries", 1),
        per_try_timeout=opt_duration(proto, "per_try_timeout"),
        per_try_idle_timeout=opt_duration(proto, "per_try_idle_timeout"),
        retry_back_off=back_off,
        retriable_status_codes=frozenset(proto.retriable_status_codes),
        retriable_headers=tuple(
            header_matcher(item, at(join(path, "retriable_headers"), index))
            for index, item in enumerate(proto.retriable_headers)
        ),
        retriable_request_headers=tuple(
            header_matcher(item, at(join(path, "retriable_request_headers"), index))
            for index, item in enumerate(proto.retriable_request_headers)
        ),
        retry_host_predicate_previous_hosts=previous_hosts,
        host_selection_retry_max_attempts=proto.host_selection_retry_max_attempts or 1,
    )


def _hash_policy(proto: Any, path: str) -> HashPolicy:
    kind = proto.WhichOneof("policy_specifier")
    terminal = proto.terminal
    if kind == "header":
        return HashPolicy(
            HashPolicyKind.HEADER,
            name=proto.header.header_name.lower().encode(),
            regex_rewrite=(
                _regex_rewrite(proto.header.regex_rewrite, join(path, "header.regex_rewrite"))
                if proto.header.HasField("regex_rewrite")
                else None
            ),
            terminal=terminal,
        )
    if kind == "cookie":
        return HashPolicy(
            HashPolicyKind.COOKIE,
            name=proto.cookie.name.encode(),
            cookie_ttl=opt_duration(proto.cookie, "ttl"),
            cookie_path=proto.cookie.path.encode() or None,
            terminal=terminal,
        )
    if kind == "connection_properties":
        return HashPolicy(
            HashPolicyKind.CONNECTION_PROPERTIES,
            source_ip=proto.connection_properties.source_ip,
            terminal=terminal,
        )
    if kind == "query_parameter":
        return HashPolicy(
            HashPolicyKind.QUERY_PARAMETER,
            name=proto.query_parameter.name.encode(),
            terminal=terminal,
        )
    if kind == "filter_state":
        return HashPolicy(
            HashPolicyKind.FILTER_STATE, name=proto.filter_state.key.encode(), terminal=terminal
        )
    raise ValidationError("a hash policy specifier is required", path=path)


def _redirect(proto: Any, path: str) -> RedirectAction:
    scheme = b"https" if proto.https_redirect else (proto.scheme_redirect.lower().encode() or None)
    return RedirectAction(
        scheme_redirect=scheme,
        host_redirect=proto.host_redirect.encode() or None,
        port_redirect=proto.port_redirect or None,
        path_redirect=proto.path_redirect.encode()
        if proto.WhichOneof("path_rewrite_specifier") == "path_redirect"
        else None,
        prefix_rewrite=proto.prefix_rewrite.encode()
        if proto.WhichOneof("path_rewrite_specifier") == "prefix_rewrite"
        else None,
        regex_rewrite=(
            _regex_rewrite(proto.regex_rewrite, join(path, "regex_rewrite"))
            if proto.HasField("regex_rewrite")
            else None
        ),
        response_code=_REDIRECT_CODES[proto.response_code],
        strip_query=proto.strip_query,
    )


def _direct_response(proto: Any, path: str) -> DirectResponseAction:
    body = None
    if proto.HasField("body"):
        body, _ = data_source(proto.body, join(path, "body"))
    return DirectResponseAction(status=proto.status, body=body)


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
