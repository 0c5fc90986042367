"""VirtualService checks, after Istio's admission webhook (``ValidateVirtualService``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from pymesh.config import hosts
from pymesh.config.issues import Reporter
from pymesh.config.model.networking import (
    CorsPolicy,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRedirect,
    HTTPRetry,
    HTTPRoute,
    HTTPRouteDestination,
    Headers,
    RouteDestination,
    TCPRoute,
    TLSRoute,
    VirtualService,
)
from pymesh.config.validate._common import (
    HEADER_NAME,
    check,
    check_destination,
    check_export_to,
    check_gateway_names,
    check_header_value,
    check_labels,
    check_percentage,
    check_port,
    check_regex,
    check_string_match,
)

__all__ = ["validate_virtual_service"]

_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})
_JWT_CLAIM = "@request.auth.claims"
_CORS_METHODS = frozenset("GET HEAD POST PUT PATCH DELETE CONNECT OPTIONS TRACE".split())
_RETRY_ON = frozenset(
    "5xx gateway-error reset reset-before-request connect-failure retriable-4xx refused-stream "
    "retriable-status-codes retriable-headers envoy-ratelimited http3-post-connect-failure "
    "cancelled deadline-exceeded internal resource-exhausted unavailable".split()
)
_GRPC_STATUS = frozenset(
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS "
    "PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE "
    "UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED".split()
)
_KB = 1024


def validate_virtual_service(
    vs: VirtualService, namespace: str, path: str, rep: Reporter
) -> None:
    delegate = not vs.hosts
    if delegate:
        if vs.gateways:
            rep.fail(f"{path}.gateways", "a delegate VirtualService (no hosts) has no gateways")
        if vs.tls or vs.tcp:
            rep.fail(path, "a delegate VirtualService (no hosts) supports only http routes")
    check_gateway_names(rep, f"{path}.gateways", vs.gateways)
    on_mesh = not vs.gateways or hosts.MESH_GATEWAY in vs.gateways
    for i, host in enumerate(vs.hosts):
        hpath = f"{path}.hosts[{i}]"
        if not hosts.is_ip(host):
            check(rep, hpath, hosts.check_wildcard_domain, host)
        if host == "*" and on_mesh:
            rep.fail(hpath, "wildcard host '*' is not allowed for VirtualServices bound to mesh")
    for i, a in enumerate(vs.hosts):
        for b in vs.hosts[i + 1 :]:
            if hosts.host_matches(a, b):
                rep.fail(f"{path}.hosts", f"duplicate hosts in VirtualService: {a} & {b}")
    if not (vs.http or vs.tcp or vs.tls):
        rep.fail(path, "at least one of http, tcp or tls routes must be set")
    for i, route in enumerate(vs.http):
        _http_route(route, f"{path}.http[{i}]", rep, in_delegate=delegate)
    for i, tls in enumerate(vs.tls):
        _tls_route(tls, vs, f"{path}.tls[{i}]", rep)
    for i, tcp in enumerate(vs.tcp):
        _tcp_route(tcp, f"{path}.tcp[{i}]", rep)
    check_export_to(rep, f"{path}.exportTo", vs.export_to, namespace, service_entry=False)
    _unreachable_rules(vs.http, path, rep)


def _unreachable_rules(routes: tuple[HTTPRoute, ...], path: str, rep: Reporter) -> None:
    """Warn like Istio's IST0130: rules after a catch-all, or repeating an earlier match."""
    seen: dict[HTTPMatchRequest, int] = {}
    for i, route in enumerate(routes):
        if not route.match and i < len(routes) - 1:
            rep.warn(f"{path}.http[{i + 1}]", f"rule not used: rule {i} has no match and takes all")
            return
        for j, match in enumerate(route.match):
            key = dataclasses.replace(match, name="")
            if key in seen:
                rep.warn(f"{path}.http[{i}].match[{j}]", f"match repeats one in rule {seen[key]}")
            seen.setdefault(key, i)


def _http_route(route: HTTPRoute, path: str, rep: Reporter, *, in_delegate: bool) -> None:
    _route_conflicts(route, path, rep, in_delegate=in_delegate)
    for i, match in enumerate(route.match):
        _match(match, f"{path}.match[{i}]", rep)
    _headers(route.headers, f"{path}.headers", rep)
    if route.cors_policy is not None:
        _cors(route.cors_policy, f"{path}.corsPolicy", rep)
    if route.fault is not None:
        _fault(route.fault, f"{path}.fault", rep)
    if route.mirror_percent is not None and route.mirror_percent > 100:
        rep.fail(f"{path}.mirrorPercent", f"must be at most 100, got {route.mirror_percent}")
    if route.mirror_percentage is not None:
        _percent_0_100(rep, f"{path}.mirrorPercentage.value", route.mirror_percentage.value)
    if route.mirror is not None:
        check_destination(rep, f"{path}.mirror", route.mirror)
    for i, mirror in enumerate(route.mirrors):
        check_destination(rep, f"{path}.mirrors[{i}].destination", mirror.destination)
        if mirror.percentage is not None:
            _percent_0_100(rep, f"{path}.mirrors[{i}].percentage.value", mirror.percentage.value)
    if route.redirect is not None:
        _redirect(route.redirect, route.match, f"{path}.redirect", rep)
    if route.direct_response is not None:
        dr = route.direct_response
        _http_status(rep, f"{path}.directResponse.status", dr.status)
        body = dr.body
        size = 0 if body is None else len(body.string or "") + len(body.body_bytes or b"")
        if size > _KB * _KB:
            rep.fail(f"{path}.directResponse.body", "direct response body must be under 1MB")
        if size > 100 * _KB:
            rep.warn(f"{path}.directResponse.body", "large direct responses slow the control plane")
    if route.retries is not None:
        _retries(route.retries, f"{path}.retries", rep)
    _rewrite(route, path, rep)
    _http_destinations(route.route, f"{path}.route", rep)


def _route_conflicts(route: HTTPRoute, path: str, rep: Reporter, *, in_delegate: bool) -> None:
    if route.delegate is not None:
        if in_delegate:
            rep.fail(f"{path}.delegate", "a delegate VirtualService cannot delegate again")
        if route.redirect is not None or route.route:
            rep.fail(path, "a route with delegate must not also set route or redirect")
        return
    if route.mirror is not None and route.mirrors:
        rep.fail(path, "mirror and mirrors cannot both be set")
    actions = [
        name
        for name, present in (
            ("route", bool(route.route)),
            ("redirect", route.redirect is not None),
            ("directResponse", route.direct_response is not None),
        )
        if present
    ]
    if not actions:
        rep.fail(path, "one of route, redirect, directResponse or delegate is required")
    if len(actions) > 1:
        rep.fail(path, f"{' and '.join(actions)} cannot be combined")
    if actions[0] != "route":
        for name, present in (("fault", route.fault), ("rewrite", route.rewrite)):
            if present is not None:
                rep.fail(f"{path}.{name}", f"{name} cannot be combined with {actions[0]}")


def _header_match_name(rep: Reporter, path: str, name: str) -> None:
    if name.lower().startswith(_JWT_CLAIM) or name in _PSEUDO_HEADERS:
        return
    if not HEADER_NAME.match(name):
        rep.fail(path, f"invalid header name {name!r}")


def _match(match: HTTPMatchRequest, path: str, rep: Reporter) -> None:
    for field in ("uri", "scheme", "method", "authority"):
        sm = getattr(match, field)
        if sm is None:
            continue
        # An empty uri prefix is valid (matches everything); elsewhere Envoy rejects it.
        if field == "uri" and sm.prefix == "":
            continue
        check_string_match(rep, f"{path}.{field}", sm)
    for field, label in (("headers", "headers"), ("without_headers", "withoutHeaders")):
        for name, sm in getattr(match, field).items():
            hpath = f"{path}.{label}[{name}]"
            _header_match_name(rep, hpath, name)
            # withoutHeaders regex "*" is Istio's "header absent", not an RE2 pattern.
            if not (field == "without_headers" and sm.regex == "*"):
                check_string_match(rep, hpath, sm, presence_ok=True)
    for name, sm in match.query_params.items():
        qpath = f"{path}.queryParams[{name}]"
        if sm.is_empty:
            rep.fail(qpath, "one of exact, prefix or regex must be set")
        if sm.regex is not None:
            check_regex(rep, f"{qpath}.regex", sm.regex)
    if match.port:
        check_port(rep, f"{path}.port", match.port)
    check_labels(rep, f"{path}.sourceLabels", match.source_labels)
    check_gateway_names(rep, f"{path}.gateways", match.gateways)
    if match.source_namespace and not hosts.is_dns1123_label(match.source_namespace):
        rep.fail(f"{path}.sourceNamespace", f"invalid namespace {match.source_namespace!r}")


def _headers(headers: Headers | None, path: str, rep: Reporter) -> None:
    if headers is None:
        return
    for part, ops in (("request", headers.request), ("response", headers.response)):
        if ops is None:
            continue
        for op in ("set", "add"):
            for name, value in getattr(ops, op).items():
                hpath = f"{path}.{part}.{op}[{name}]"
                authority = name.lower() in (":authority", "host")
                if not name:
                    rep.fail(hpath, "header name must not be empty")
                if name.startswith(":") and not (part == "request" and authority):
                    rep.fail(hpath, f"header {name!r} cannot be modified (':' prefix)")
                if part == "response" and name.lower() == "host":
                    rep.fail(hpath, "cannot set the Host header on a response")
                check_header_value(rep, hpath, value)
        for i, name in enumerate(ops.remove):
            if not name or name.startswith(":") or name.lower() == "host":
                rep.fail(f"{path}.{part}.remove[{i}]", f"header {name!r} cannot be removed")


def _cors(cors: CorsPolicy, path: str, rep: Reporter) -> None:
    for i, origin in enumerate(cors.allow_origins):
        opath = f"{path}.allowOrigins[{i}]"
        check_string_match(rep, opath, origin)
        if origin.exact == "":
            rep.fail(opath, "allowOrigins entries must not be empty")
    for i, method in enumerate(cors.allow_methods):
        if method not in _CORS_METHODS:
            rep.fail(f"{path}.allowMethods[{i}]", f"{method!r} is not a supported HTTP method")
    for field, label in (("allow_headers", "allowHeaders"), ("expose_headers", "exposeHeaders")):
        for i, name in enumerate(getattr(cors, field)):
            if name != "*" and not HEADER_NAME.match(name):
                rep.fail(f"{path}.{label}[{i}]", f"invalid header name {name!r}")
    if cors.max_age is not None and cors.max_age != int(cors.max_age):
        rep.fail(f"{path}.maxAge", "maxAge is accurate to whole seconds only")


def _fault(fault: HTTPFaultInjection, path: str, rep: Reporter) -> None:
    if fault.abort is None and fault.delay is None:
        rep.fail(path, "fault injection needs an abort and/or a delay")
    if (abort := fault.abort) is not None:
        apath = f"{path}.abort"
        check_percentage(rep, f"{apath}.percentage.value", abort.percentage)
        if abort.http_status is not None:
            _http_status(rep, f"{apath}.httpStatus", abort.http_status)
        elif abort.grpc_status is not None:
            if abort.grpc_status not in _GRPC_STATUS:
                rep.fail(f"{apath}.grpcStatus", f"unknown gRPC status {abort.grpc_status!r}")
        elif abort.http2_error is not None:
            rep.fail(f"{apath}.http2Error", "HTTP/2 error abort is not supported")
        else:
            rep.warn(apath, "abort configured, but no httpStatus or grpcStatus set")
    if (delay := fault.delay) is not None:
        dpath = f"{path}.delay"
        check_percentage(rep, f"{dpath}.percentage.value", delay.percentage)
        if not 0 <= delay.percent <= 100:
            rep.fail(f"{dpath}.percent", f"percent {delay.percent} is not in range 0..100")
        if delay.exponential_delay is not None:
            rep.fail(f"{dpath}.exponentialDelay", "exponentialDelay is not supported")
        if delay.fixed_delay is None:
            rep.warn(dpath, "delay configured, but fixedDelay not set")


def _http_status(rep: Reporter, path: str, status: int) -> None:
    if not 200 <= status <= 599:
        rep.fail(path, f"HTTP status {status} is not in range 200..599")


def _percent_0_100(rep: Reporter, path: str, value: float) -> None:
    if not 0 <= value <= 100:
        rep.fail(path, f"percentage {value:g} is not in range 0..100")


def _redirect(
    redirect: HTTPRedirect, matches: Iterable[HTTPMatchRequest], path: str, rep: Reporter
) -> None:
    if redirect.uri and redirect.prefix_rewrite:
        rep.fail(path, "redirect may set only one of uri and prefixRewrite")
    if redirect.prefix_rewrite and any(
        m.uri is not None and m.uri.prefix is None for m in matches
    ):
        rep.fail(f"{path}.prefixRewrite", "prefixRewrite requires every uri match to be a prefix")
    if not (
        redirect.uri
        or redirect.prefix_rewrite
        or redirect.authority
        or redirect.scheme
        or redirect.port is not None
        or redirect.derive_port is not None
    ):
        rep.fail(path, "redirect must set uri, prefixRewrite, authority, scheme or port")
    if redirect.redirect_code and not 300 <= redirect.redirect_code <= 399:
        rep.fail(f"{path}.redirectCode", f"{redirect.redirect_code} is not a 3xx code")
    if redirect.scheme and redirect.scheme not in ("http", "https"):
        rep.fail(f"{path}.scheme", 'redirect scheme must be "http" or "https"')
    if redirect.port:
        check_port(rep, f"{path}.port", redirect.port)


def _retries(retries: HTTPRetry, path: str, rep: Reporter) -> None:
    if retries.attempts < 0:
        rep.fail(f"{path}.attempts", "attempts must not be negative")
    if retries.attempts == 0 and (
        retries.per_try_timeout is not None
        or retries.retry_on
        or retries.retry_remote_localities is not None
    ):
        rep.fail(path, "retry policy set while attempts is 0 (retries disabled)")
    for policy in filter(None, retries.retry_on.split(",")):
        code = policy.strip()
        if code not in _RETRY_ON and not (code.isdigit() and 100 <= int(code) <= 599):
            rep.fail(f"{path}.retryOn", f"{code!r} is not a valid retryOn policy")


def _rewrite(route: HTTPRoute, path: str, rep: Reporter) -> None:
    rw = route.rewrite
    authority = rw.authority if rw is not None else ""
    if rw is not None:
        if rw.uri and rw.uri_regex_rewrite is not None:
            rep.fail(f"{path}.rewrite", "rewrite may set only one of uri and uriRegexRewrite")
        if not (rw.uri or rw.uri_regex_rewrite is not None or rw.authority):
            rep.fail(f"{path}.rewrite", "rewrite must set uri, uriRegexRewrite or authority")
        if (rr := rw.uri_regex_rewrite) is not None:
            rpath = f"{path}.rewrite.uriRegexRewrite"
            if not rr.match or not rr.rewrite:
                rep.fail(rpath, "uriRegexRewrite needs both match and rewrite")
            check_regex(rep, f"{rpath}.match", rr.match)
    request = route.headers.request if route.headers is not None else None
    if request is not None:
        for name in (*request.set, *request.add):
            if name.lower() in (":authority", "host"):
                if authority:
                    rep.fail(f"{path}.headers.request", "the authority is rewritten twice")
                authority = name


def _http_destinations(
    routes: tuple[HTTPRouteDestination, ...], path: str, rep: Reporter
) -> None:
    for i, rd in enumerate(routes):
        _headers(rd.headers, f"{path}[{i}].headers", rep)
    _weights(routes, path, rep)


def _weights(
    routes: tuple[HTTPRouteDestination, ...] | tuple[RouteDestination, ...],
    path: str,
    rep: Reporter,
) -> None:
    for i, rd in enumerate(routes):
        check_destination(rep, f"{path}[{i}].destination", rd.destination)
        if rd.weight < 0:
            rep.fail(f"{path}[{i}].weight", f"weight {rd.weight} must not be negative")
    # Weights are relative; only an all-zero split across several destinations is meaningless.
    if len(routes) > 1 and sum(rd.weight for rd in routes) == 0:
        rep.fail(path, "total destination weight is 0")


def _tls_route(tls: TLSRoute, vs: VirtualService, path: str, rep: Reporter) -> None:
    if not tls.match:
        rep.fail(f"{path}.match", "a TLS route needs at least one match")
    for i, match in enumerate(tls.match):
        mpath = f"{path}.match[{i}]"
        if not match.sni_hosts:
            rep.fail(f"{mpath}.sniHosts", "a TLS match needs at least one SNI host")
        for j, sni in enumerate(match.sni_hosts):
            spath = f"{mpath}.sniHosts[{j}]"
            if hosts.is_ip(sni):
                rep.warn(spath, f"IP address {sni!r} as SNI host is not supported by most clients")
                continue
            check(rep, spath, hosts.check_wildcard_domain, sni)
            if not any(hosts.host_subset_of(sni, h) for h in vs.hosts):
                rep.fail(spath, f"SNI host {sni!r} is not within the VirtualService hosts")
        _l4_common(match.destination_subnets, match.port, match.source_labels, match.gateways,
                   mpath, rep)
    if not tls.route:
        rep.fail(f"{path}.route", "a TLS route needs at least one destination")
    _weights(tls.route, f"{path}.route", rep)


def _tcp_route(tcp: TCPRoute, path: str, rep: Reporter) -> None:
    for i, match in enumerate(tcp.match):
        _l4_common(match.destination_subnets, match.port, match.source_labels, match.gateways,
                   f"{path}.match[{i}]", rep)
    if not tcp.route:
        rep.fail(f"{path}.route", "a TCP route needs at least one destination")
    _weights(tcp.route, f"{path}.route", rep)


def _l4_common(
    subnets: tuple[str, ...],
    port: int,
    source_labels: Mapping[str, str],
    gateways: tuple[str, ...],
    path: str,
    rep: Reporter,
) -> None:
    for i, subnet in enumerate(subnets):
        check(rep, f"{path}.destinationSubnets[{i}]", hosts.check_ip_or_cidr, subnet)
    if port:
        check_port(rep, f"{path}.port", port)
    check_labels(rep, f"{path}.sourceLabels", source_labels)
    check_gateway_names(rep, f"{path}.gateways", gateways)
