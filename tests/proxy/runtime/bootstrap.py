"""Envoy v3 bootstrap pieces as plain dicts, for the runtime and differential tests.

Small builders that read like the YAML they produce: a test spells out the routes, filters
and clusters it is about, and the builders add what every bootstrap needs around them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "JSON_ACCESS_LOG_FORMAT",
    "ROUTER",
    "bootstrap",
    "cluster",
    "cors_filter",
    "direct",
    "fault_filter",
    "fault_per_route",
    "file_access_log",
    "hcm",
    "listener",
    "local_ratelimit_filter",
    "route",
    "sa",
    "stdout_access_log",
    "vhost",
]

_T = "type.googleapis.com/"
HCM_TYPE = _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": _T + "envoy.extensions.filters.http.router.v3.Router"},
}

# Istio's default JSON access-log keys, with the command operators pymesh implements.
JSON_ACCESS_LOG_FORMAT = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "route_name": "%ROUTE_NAME%",
}


def sa(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def route(
    prefix: str | None = "/",
    cluster: str | None = "backend",
    *,
    match: Mapping[str, Any] | None = None,
    name: str | None = None,
    **action: Any,
) -> dict[str, Any]:
    """A route to ``cluster``; ``match`` replaces the prefix match; kwargs go in the action.

    Keys of ``action`` that belong to the route itself (``request_headers_to_add``,
    ``typed_per_filter_config``, ``redirect``, ``direct_response``, …) are lifted out.
    """
    route_level = {
        "request_headers_to_add",
        "request_headers_to_remove",
        "response_headers_to_add",
        "response_headers_to_remove",
        "typed_per_filter_config",
        "redirect",
        "direct_response",
    }
    out: dict[str, Any] = {"match": dict(match) if match is not None else {"prefix": prefix}}
    if name:
        out["name"] = name
    inner = {k: v for k, v in action.items() if k not in route_level}
    out.update({k: v for k, v in action.items() if k in route_level})
    if "redirect" not in out and "direct_response" not in out:
        if cluster is not None and "weighted_clusters" not in inner:
            inner["cluster"] = cluster
        out["route"] = inner
    return out


def direct(
    status: int, body: str | None = None, *, match: Mapping[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    resp: dict[str, Any] = {"status": status}
    if body is not None:
        resp["body"] = {"inline_string": body}
    return route(match=match or {"prefix": "/"}, direct_response=resp, cluster=None, **kw)


def vhost(
    routes: Sequence[Mapping[str, Any]],
    domains: Sequence[str] = ("*",),
    name: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name or f"vh-{domains[0]}",
        "domains": list(domains),
        "routes": list(routes),
        **extra,
    }


def hcm(
    vhosts: Sequence[Mapping[str, Any]],
    *,
    http_filters: Sequence[Mapping[str, Any]] = (),
    stat_prefix: str = "ingress",
    route_config_extra: Mapping[str, Any] | None = None,
    router: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An HTTP connection manager filter with an inline route config; ``extra`` goes into
    the HCM (``server_name``, ``request_headers_timeout``, ``access_log``, …)."""
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": stat_prefix,
            "route_config": {
                "name": "local",
                "virtual_hosts": list(vhosts),
                **(route_config_extra or {}),
            },
            "http_filters": [*http_filters, router or ROUTER],
            **extra,
        },
    }


def listener(
    address: tuple[str, int], hcm_filter: Mapping[str, Any], name: str = "main"
) -> dict[str, Any]:
    return {
        "name": name,
        "address": sa(*address),
        "filter_chains": [{"filters": [dict(hcm_filter)]}],
    }


def cluster(
    name: str,
    endpoints: Iterable[tuple[str, int]],
    *,
    type: str = "STATIC",
    connect_timeout: str = "1s",
    **extra: Any,
) -> dict[str, Any]:
    lb_endpoints = [{"endpoint": {"address": sa(h, p)}} for h, p in endpoints]
    out: dict[str, Any] = {"name": name, "type": type, "connect_timeout": connect_timeout}
    if type != "ORIGINAL_DST":
        out["load_assignment"] = {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": lb_endpoints}],
        }
    out.update(extra)
    return out


def bootstrap(
    listeners: Sequence[Mapping[str, Any]],
    clusters: Sequence[Mapping[str, Any]] = (),
    *,
    admin: tuple[str, int] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "static_resources": {"listeners": list(listeners), "clusters": list(clusters)}
    }
    if admin is not None:
        out["admin"] = {"address": sa(*admin)}
    return out


def fault_filter(**config: Any) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.fault",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.fault.v3.HTTPFault",
            **config,
        },
    }


def fault_per_route(**config: Any) -> dict[str, Any]:
    return {
        "envoy.filters.http.fault": {
            "@type": _T + "envoy.extensions.filters.http.fault.v3.HTTPFault",
            **config,
        }
    }


def local_ratelimit_filter(
    max_tokens: int, fill_interval: str = "60s", **extra: Any
) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "http_local_rate_limiter",
            "token_bucket": {
                "max_tokens": max_tokens,
                "tokens_per_fill": max_tokens,
                "fill_interval": fill_interval,
            },
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            **extra,
        },
    }


def cors_filter() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.cors",
        "typed_config": {"@type": _T + "envoy.extensions.filters.http.cors.v3.Cors"},
    }


def stdout_access_log(
    json_format: Mapping[str, str] = JSON_ACCESS_LOG_FORMAT,
) -> list[dict[str, Any]]:
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": _T + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {"json_format": dict(json_format)},
            },
        }
    ]


def file_access_log(
    path: str, json_format: Mapping[str, str] = JSON_ACCESS_LOG_FORMAT
) -> list[dict[str, Any]]:
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": _T + "envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": path,
                "log_format": {"json_format": dict(json_format)},
            },
        }
    ]
