"""Route actions: forward (clusters, rewrites, retries, mirrors, hashing), redirect, direct
response."""

from __future__ import annotations

from typing import Any

from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

from proxy.config.model import (
    RETRY_ON_VALUES,
    DirectResponseAction,
    HashPolicy,
    HashPolicyKind,
    MaxStreamDuration,
    RedirectAction,
    RegexRewrite,
    RequestMirrorPolicy,
    RetryBackOff,
    RetryPolicy,
    RouteAction,
    RouteActionType,
    WeightedCluster,
    WeightedClusters,
)
from proxy.config.model_route import RouteUpgrade
from proxy.config.translate.common import (
    at,
    data_source,
    duration,
    fractional_percent,
    header_matcher,
    header_mutations,
    join,
    opt_duration,
    wrapped,
)
from proxy.config.translate.filters import FilterRegistry, cors_policy, typed_per_filter_config
from proxy.config.translate.ratelimit import rate_limit_policy
from proxy.config.translate.regex import re2_substitution, regex_matcher
from proxy.config.translate.support import unpack
from pymesh.errors import UnsupportedError, ValidationError

__all__ = ["direct_response_action", "redirect_action", "retry_policy", "route_action"]

_PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
_REDIRECT_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}
_NOT_FOUND_CODES = {0: 503, 1: 404, 2: 500}


def _regex_rewrite(proto: Any, path: str) -> RegexRewrite:
    pattern = regex_matcher(proto.pattern, join(path, "pattern"))
    return RegexRewrite(
        pattern=pattern,
        substitution=re2_substitution(
            proto.substitution, pattern.groups, join(path, "substitution")
        ),
    )


def route_action(
    proto: Any, match: Any, registry: FilterRegistry, path: str, clusters: set[str]
) -> RouteAction:
    kind = proto.WhichOneof("cluster_specifier")
    weighted = None
    if kind == "cluster":
        clusters.add(proto.cluster)
    elif kind == "weighted_clusters":
        weighted = _weighted_clusters(
            proto.weighted_clusters, registry, join(path, "weighted_clusters")
        )
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
    if (
        proto.prefix_rewrite.endswith("/")
        and match.WhichOneof("path_specifier") == "path_separated_prefix"
    ):
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
                max_stream_duration=opt_duration(proto.max_stream_duration, "max_stream_duration"),
                grpc_timeout_header_max=opt_duration(
                    proto.max_stream_duration, "grpc_timeout_header_max"
                ),
                grpc_timeout_header_offset=opt_duration(
                    proto.max_stream_duration, "grpc_timeout_header_offset"
                ),
            )
            if proto.HasField("max_stream_duration")
            else None
        ),
        priority_high=proto.priority == 1,
        rate_limits=rate_limit_policy(proto.rate_limits, join(path, "rate_limits")),
        include_vh_rate_limits=wrapped(proto, "include_vh_rate_limits", False),
        upgrade_configs=tuple(
            _upgrade(item, at(join(path, "upgrade_configs"), index))
            for index, item in enumerate(proto.upgrade_configs)
        ),
    )


def _upgrade(proto: Any, path: str) -> RouteUpgrade:
    kind = proto.upgrade_type.lower()
    terminate = proto.HasField("connect_config")
    if terminate and kind != "connect":
        raise ValidationError(
            f"Non-CONNECT upgrade type {proto.upgrade_type} has ConnectConfig",
            path=join(path, "connect_config"),
        )
    return RouteUpgrade(kind, wrapped(proto, "enabled", True), terminate)


def _weighted_clusters(proto: Any, registry: FilterRegistry, path: str) -> WeightedClusters:
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
                **header_mutations(item, item_path),
                host_rewrite_literal=item.host_rewrite_literal.encode() or None,
                typed_per_filter_config=typed_per_filter_config(
                    item.typed_per_filter_config,
                    registry,
                    join(item_path, "typed_per_filter_config"),
                ),
            )
        )
    total = sum(item.weight for item in items)
    if total == 0:
        raise ValidationError(
            "Sum of weights in the weighted_cluster must be greater than 0", path=path
        )
    return WeightedClusters(tuple(items), total)


def retry_policy(proto: Any, path: str) -> RetryPolicy:
    """``route.v3.RetryPolicy`` (route or virtual host level)."""
    names = {item.strip() for item in proto.retry_on.split(",") if item.strip()}
    # Envoy ignores names it does not know; dropping them here keeps that behaviour.
    retry_on = frozenset(names & RETRY_ON_VALUES)
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


def redirect_action(proto: Any, path: str) -> RedirectAction:
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


def direct_response_action(proto: Any, path: str) -> DirectResponseAction:
    body = None
    if proto.HasField("body"):
        body, _ = data_source(proto.body, join(path, "body"))
    return DirectResponseAction(status=proto.status, body=body)
