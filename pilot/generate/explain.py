"""``pymesh explain``: what the mesh does with one request from one proxy, read off the very
resources :func:`pilot.generate.generate` produces for it (listener → route configuration →
virtual host → route → clusters → endpoints), not from a second model of the config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from google.protobuf import json_format

from pilot.generate.common import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    PROCESS_OUTBOUND_ROUTE,
    ROUTE_TYPE,
    parse_cluster_name,
)
from pilot.generate.dispatch import generate
from pilot.generate.explain_authz import explain_authorization
from pilot.generate.simulate import Request, match_route, match_virtual_host, parse_duration
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pymesh.errors import ValidationError

__all__ = ["Explanation", "FaultInfo", "RetryInfo", "WeightedCluster", "explain"]


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    """One destination of the route: its weight, the chance (percent) a request goes there,
    and its endpoints."""

    name: str
    weight: int
    subset: str = ""
    chance: float = 100.0
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RetryInfo:
    attempts: int
    retry_on: str
    per_try_timeout: float | None = None
    status_codes: tuple[int, ...] = ()

    def render(self) -> str:
        text = f"{self.attempts} attempts on {self.retry_on}"
        if self.status_codes:
            text += f" (status {', '.join(map(str, self.status_codes))})"
        if self.per_try_timeout is not None:
            text += f", per try timeout {_seconds(self.per_try_timeout)}"
        return text


@dataclass(frozen=True, slots=True)
class FaultInfo:
    delay: float | None = None
    delay_percent: float | None = None
    abort_status: int | None = None
    abort_percent: float | None = None

    def render(self) -> str:
        parts = []
        if self.delay is not None:
            parts.append(f"delay {self.delay:g}s for {self.delay_percent or 0:g}% of requests")
        if self.abort_status is not None:
            parts.append(f"abort {self.abort_status} for {self.abort_percent or 0:g}% of requests")
        return "; ".join(parts) or "none"


@dataclass(frozen=True, slots=True)
class Explanation:
    """The route taken; ``error`` says where matching stopped when it did."""

    url: str
    listener: str | None = None
    route_config: str | None = None
    virtual_host: str | None = None
    route: str | None = None
    route_index: int | None = None
    virtual_service: str | None = None
    rule_index: int | None = None
    clusters: tuple[WeightedCluster, ...] = ()
    #: the destination when there is one (no weighted split), its subset and endpoints
    cluster: str | None = None
    subset: str | None = None
    endpoints: tuple[str, ...] = ()
    timeout: float | None = None
    retries: RetryInfo | None = None
    fault: FaultInfo | None = None
    mirrors: tuple[tuple[str, float], ...] = ()
    direct_response: int | None = None
    redirect: Mapping[str, Any] | None = None
    rewrite: Mapping[str, str] = field(default_factory=dict)
    #: the destination sidecar's AuthorizationPolicy verdict, naming the deciding policy/rule
    authorization: str | None = None
    error: str | None = None

    def render(self) -> str:
        rows: list[tuple[str, object]] = [("url", self.url)]
        for label in ("listener", "route_config", "virtual_host"):
            rows.append((label.replace("_", " "), getattr(self, label)))
        matched = self.route_index is not None
        if matched:
            # Shown as configured: Envoy's route name and timeout, "none" when there is none.
            rows.append(("route", self.route or "none"))
        rows += [("virtual service", self.virtual_service), ("rule index", self.rule_index)]
        split = len(self.clusters) > 1
        for c in self.clusters:
            share = f" (weight {c.weight}: {c.chance:g}% of requests)" if split else ""
            rows.append(("cluster", f"{c.name}{share}"))
            rows.append(("  endpoints", ", ".join(c.endpoints) or "none"))
        if self.clusters or (matched and self.direct_response is None and not self.redirect):
            rows.append(("timeout", _seconds(self.timeout)))
        rows += [
            ("retries", self.retries and self.retries.render()),
            ("fault", self.fault and self.fault.render()),
            ("mirrors", ", ".join(f"{c} ({p:g}%)" for c, p in self.mirrors) or None),
            ("direct response", self.direct_response),
            ("redirect", self.redirect),
            ("rewrite", dict(self.rewrite) or None),
            ("authorization", self.authorization),
            ("error", self.error),
        ]
        return "\n".join(f"{k:16} {v}" for k, v in rows if v is not None)


def _seconds(value: float | None) -> str:
    if value is None:
        return "none"
    return "0s (disabled)" if value == 0 else f"{value:g}s"


def _dicts(ctx: PushContext, node: ProxyNode, type_url: str) -> list[dict[str, Any]]:
    return [
        json_format.MessageToDict(m, preserving_proto_field_name=True)
        for m in generate(ctx, node, type_url)
    ]


def _hcm_rds(listener: Mapping[str, Any], server_name: str | None) -> str | None:
    for chain in listener.get("filter_chains", ()):
        names = chain.get("filter_chain_match", {}).get("server_names")
        if (
            names
            and server_name not in names
            and not any(n.startswith("*") and (server_name or "").endswith(n[1:]) for n in names)
        ):
            continue
        for f in chain.get("filters", ()):
            rds = f.get("typed_config", {}).get("rds")
            if rds:
                return str(rds["route_config_name"])
    return None


def _retries(policy: Mapping[str, Any] | None) -> RetryInfo | None:
    if not policy:
        return None
    return RetryInfo(
        attempts=int(policy.get("num_retries", 1)),
        retry_on=policy.get("retry_on", ""),
        per_try_timeout=parse_duration(policy.get("per_try_timeout")),
        status_codes=tuple(int(c) for c in policy.get("retriable_status_codes", ())),
    )


def _percent(fraction: Mapping[str, Any] | None) -> float:
    if not fraction:
        return 0.0
    scale = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}
    return int(fraction.get("numerator", 0)) * 100 / scale[fraction.get("denominator", "HUNDRED")]


def _fault(route: Mapping[str, Any]) -> FaultInfo | None:
    config = route.get("typed_per_filter_config", {}).get("envoy.filters.http.fault")
    if not config:
        return None
    delay, abort = config.get("delay", {}), config.get("abort", {})
    return FaultInfo(
        delay=parse_duration(delay.get("fixed_delay")),
        delay_percent=_percent(delay.get("percentage")) if delay else None,
        abort_status=abort.get("http_status"),
        abort_percent=_percent(abort.get("percentage")) if abort else None,
    )


def _endpoints(
    name: str, clusters: Mapping[str, Any], assignments: Mapping[str, Any]
) -> tuple[str, ...]:
    cluster = clusters.get(name, {})
    cla = assignments.get(name) if cluster.get("type") == "EDS" else cluster.get("load_assignment")
    found = []
    for group in (cla or {}).get("endpoints", ()):
        for lb in group.get("lb_endpoints", ()):
            sa = lb["endpoint"]["address"]["socket_address"]
            found.append(f"{sa['address']}:{sa.get('port_value', 0)}")
    return tuple(found)


def _request(url: str, headers: Mapping[str, str]) -> tuple[Request, int]:
    """The request for ``url``; ValidationError when it is not an http(s) URL with a host."""
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValidationError(f"malformed URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"malformed URL {url!r}: expected http://HOST[:PORT]/PATH")
    lowered = {k.lower(): v for k, v in headers.items()}
    host = lowered.pop("host", None) or lowered.pop(":authority", None) or parts.netloc
    path = parts.path or "/"
    method = lowered.pop(":method", "GET")
    request = Request(
        host=host,
        path=path + (f"?{parts.query}" if parts.query else ""),
        method=method,
        scheme=parts.scheme,
        headers=lowered,
        query=tuple(parse_qsl(parts.query, keep_blank_values=True)),
    )
    return request, port


def _route_config_name(
    node: ProxyNode, listeners: list[dict[str, Any]], port: int, request: Request
) -> tuple[str | None, str | None]:
    if node.process_mode and not node.is_router:
        return "virtualOutbound", PROCESS_OUTBOUND_ROUTE
    by_name = {item["name"]: item for item in listeners}
    listener = by_name.get(f"0.0.0.0_{port}")
    if listener is None:
        return None, None
    return listener["name"], _hcm_rds(listener, request.host.split(":")[0])


def _authorization(
    ctx: PushContext, node: ProxyNode, endpoints: tuple[str, ...], request: Request
) -> str | None:
    """The verdict of the first endpoint whose sidecar pilot knows."""
    for endpoint in endpoints:
        ip, _, port = endpoint.rpartition(":")
        destination = ctx.registry.proxy_by_ip(ip)
        if destination is None:
            continue
        step = explain_authorization(
            ctx,
            node,
            destination,
            int(port),
            request.method,
            request.path,
            request.host,
            request.headers or {},
        )
        return step.render()
    return None


def explain(
    ctx: PushContext, node: ProxyNode, url: str, headers: Mapping[str, str] | None = None
) -> Explanation:
    """Follow ``url`` (with ``headers``) through the node's generated configuration."""
    request, port = _request(url, headers or {})
    listeners = _dicts(ctx, node, LISTENER_TYPE)
    listener, rc_name = _route_config_name(node, listeners, port, request)
    if rc_name is None:
        return Explanation(url, listener=listener, error=f"no HTTP listener for port {port}")
    configs = {rc["name"]: rc for rc in _dicts(ctx, node, ROUTE_TYPE)}
    vhost = match_virtual_host(configs.get(rc_name, {}), request.host)
    base = Explanation(url, listener=listener, route_config=rc_name)
    if vhost is None:
        return replace(base, error=f"no virtual host for {request.host!r}")
    found = match_route(vhost, request)
    if found is None:
        return replace(base, virtual_host=vhost["name"], error="no route matched (404)")
    index, route = found
    meta = route.get("metadata", {}).get("filter_metadata", {})
    # ``/apis/<group>/<version>/namespaces/<ns>/virtual-service/<name>``
    config_path = meta.get("istio", {}).get("config", "").split("/")
    vs = f"{config_path[-3]}/{config_path[-1]}" if len(config_path) >= 4 else None
    rule = meta.get("pymesh", {}).get("rule")
    result = replace(
        base,
        virtual_host=vhost["name"],
        route=route.get("name") or None,
        route_index=index,
        virtual_service=vs,
        rule_index=int(rule) if rule is not None else None,
        fault=_fault(route),
    )
    if "direct_response" in route:
        return replace(result, direct_response=int(route["direct_response"]["status"]))
    if "redirect" in route:
        return replace(result, redirect=route["redirect"])
    action = route["route"]
    if "weighted_clusters" in action:
        pairs = [
            (c["name"], int(c.get("weight", 0))) for c in action["weighted_clusters"]["clusters"]
        ]
    else:
        pairs = [(action["cluster"], 100)]
    clusters = {c["name"]: c for c in _dicts(ctx, node, CLUSTER_TYPE)}
    assignments = {a["cluster_name"]: a for a in _dicts(ctx, node, ENDPOINT_TYPE)}
    total = sum(w for _, w in pairs) or 1
    weighted = tuple(
        WeightedCluster(
            n,
            w,
            (parse_cluster_name(n) or ("", 0, "", ""))[2],
            round(100 * w / total, 2),
            _endpoints(n, clusters, assignments),
        )
        for n, w in pairs
    )
    only = weighted[0] if len(weighted) == 1 else None
    rewrite = {k: action[k] for k in ("prefix_rewrite", "host_rewrite_literal") if k in action}
    mirrors = tuple(
        (m["cluster"], _percent(m.get("runtime_fraction", {}).get("default_value")))
        for m in action.get("request_mirror_policies", ())
    )
    # The verdict of the destination most requests go to (a split's subsets are one service).
    heaviest = max(weighted, key=lambda c: c.weight)
    return replace(
        result,
        clusters=weighted,
        cluster=only.name if only else None,
        subset=only.subset if only else None,
        endpoints=only.endpoints if only else (),
        authorization=_authorization(ctx, node, heaviest.endpoints, request),
        timeout=parse_duration(action.get("timeout")),
        retries=_retries(action.get("retry_policy")),
        mirrors=mirrors,
        rewrite=rewrite,
    )
