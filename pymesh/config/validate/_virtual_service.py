"""VirtualService checks, after Istio's admission webhook (``ValidateVirtualService``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from pymesh.config import hosts
from pymesh.config.issues import Reporter
from pymesh.config.model.networking import (
    HTTPMatchRequest,
    HTTPRoute,
    HTTPRouteDestination,
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
    check_labels,
    check_port,
    check_regex,
    check_string_match,
)
from pymesh.config.validate._http_policies import (
    check_cors,
    check_direct_response,
    check_fault,
    check_headers,
    check_percent_0_100,
    check_redirect,
    check_retries,
    check_rewrite,
)

__all__ = ["validate_virtual_service"]

_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})
_JWT_CLAIM = "@request.auth.claims"


def validate_virtual_service(vs: VirtualService, namespace: str, path: str, rep: Reporter) -> None:
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
    """Istio's IST0130/IST0131 warnings: rules shadowed by a catch-all or by earlier matches."""
    seen: dict[HTTPMatchRequest, int] = {}
    catch_all = -1
    for i, route in enumerate(routes):
        rpath = f"{path}.http[{i}]"
        name = f"{route.name!r}" if route.name else f"#{i}"
        if not route.match:
            if catch_all >= 0:
                rep.warn(
                    rpath,
                    f"VirtualServiceUnreachableRule: rule {name} not used "
                    "(only the last rule can have no matches)",
                )
            catch_all = i
            continue
        if catch_all >= 0:
            rep.warn(
                rpath,
                f"VirtualServiceUnreachableRule: rule {name} not used "
                f"(rule #{catch_all} without matches comes first)",
            )
            continue
        duplicates = 0
        for j, match in enumerate(route.match):
            key = dataclasses.replace(match, name="")
            if key in seen:
                duplicates += 1
                rep.warn(
                    f"{rpath}.match[{j}]",
                    f"VirtualServiceIneffectiveMatch: rule {name} "
                    f"match #{j} is not used (duplicate of a match in rule #{seen[key]})",
                )
            else:
                seen[key] = i
        if duplicates == len(route.match):
            rep.warn(
                rpath,
                f"VirtualServiceUnreachableRule: rule {name} not used "
                "(all matches used by prior rules)",
            )


def _http_route(route: HTTPRoute, path: str, rep: Reporter, *, in_delegate: bool) -> None:
    _route_conflicts(route, path, rep, in_delegate=in_delegate)
    for i, match in enumerate(route.match):
        _match(match, f"{path}.match[{i}]", rep)
    check_headers(route.headers, f"{path}.headers", rep)
    if route.cors_policy is not None:
        check_cors(route.cors_policy, f"{path}.corsPolicy", rep)
    if route.fault is not None:
        check_fault(route.fault, f"{path}.fault", rep)
    if route.mirror_percent is not None and route.mirror_percent > 100:
        rep.fail(f"{path}.mirrorPercent", f"must be at most 100, got {route.mirror_percent}")
    if route.mirror_percentage is not None:
        check_percent_0_100(rep, f"{path}.mirrorPercentage.value", route.mirror_percentage.value)
    if route.mirror is not None:
        check_destination(rep, f"{path}.mirror", route.mirror)
    for i, mirror in enumerate(route.mirrors):
        check_destination(rep, f"{path}.mirrors[{i}].destination", mirror.destination)
        if mirror.percentage is not None:
            check_percent_0_100(
                rep, f"{path}.mirrors[{i}].percentage.value", mirror.percentage.value
            )
    if route.redirect is not None:
        check_redirect(route.redirect, route.match, f"{path}.redirect", rep)
    if route.direct_response is not None:
        check_direct_response(route.direct_response, f"{path}.directResponse", rep)
    if route.retries is not None:
        check_retries(route.retries, f"{path}.retries", rep)
    check_rewrite(route, path, rep)
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


def _http_destinations(routes: tuple[HTTPRouteDestination, ...], path: str, rep: Reporter) -> None:
    for i, rd in enumerate(routes):
        check_headers(rd.headers, f"{path}[{i}].headers", rep)
    _weights(routes, path, rep)


def _weights(
    routes: Sequence[HTTPRouteDestination | RouteDestination],
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
        _l4_common(
            match.destination_subnets, match.port, match.source_labels, match.gateways, mpath, rep
        )
    if not tls.route:
        rep.fail(f"{path}.route", "a TLS route needs at least one destination")
    _weights(tls.route, f"{path}.route", rep)


def _tcp_route(tcp: TCPRoute, path: str, rep: Reporter) -> None:
    for i, match in enumerate(tcp.match):
        _l4_common(
            match.destination_subnets,
            match.port,
            match.source_labels,
            match.gateways,
            f"{path}.match[{i}]",
            rep,
        )
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
