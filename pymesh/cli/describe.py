"""``pymesh describe pod POD [-n NS]``: what the mesh does for one pod, the role of
``istioctl x describe pod``.

The pod (its ports, address, sidecar state), the Services that select it, per Service the
DestinationRule for its host (which subsets this pod is in, the traffic policy) and the
VirtualServices that route to it (which routes reach this pod's subsets and which do not,
with their weights and matches), whether an ingress gateway exposes it, and the effective
PeerAuthentication mode.
"""

from __future__ import annotations

import argparse
import fnmatch
from collections.abc import Iterator, Mapping
from typing import Any

from pymesh.cli.context import find_pod, require_demo
from pymesh.cli.get import select
from pymesh.cli.pilot_client import PilotClient, add_pilot_arguments, client_from_args, guarded
from pymesh.demo.state import DemoState, PodState
from pymesh.errors import ValidationError

__all__ = ["add_arguments", "run"]

_RULE = "-" * 20
_DOMAIN = "svc.cluster.local"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help="pod (po, pods)")
    parser.add_argument("pod", help="the pod's name (NAME or NAME.NAMESPACE)")
    parser.add_argument("-n", "--namespace", help="the pod's namespace (default)")
    add_pilot_arguments(parser)


def _fqdn(host: str, namespace: str) -> str:
    """``reviews`` / ``reviews.default`` / the full name, as Istio reads a short host."""
    dots = host.count(".")
    if host.startswith("*") or dots >= 2:
        return host
    return f"{host}.{namespace}.{_DOMAIN}" if dots == 0 else f"{host}.{_DOMAIN}"


def _host_matches(pattern: str, pattern_ns: str, service: str) -> bool:
    return fnmatch.fnmatchcase(service, _fqdn(pattern, pattern_ns))


def _items(client: PilotClient, kind: str) -> list[dict[str, Any]]:
    _, data = client.call("GET", "/resources", query={"kind": kind})
    return list(data.get("items", []))


def _ns(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"].get("namespace") or "default")


def _match_text(match: Mapping[str, Any]) -> str:
    parts = []
    for key in ("uri", "authority"):
        if key in match:
            kind, value = next(iter(match[key].items()))
            parts.append(f"{key} {kind} {value}")
    for name, rule in (match.get("headers") or {}).items():
        kind, value = next(iter(rule.items()))
        parts.append(f"header {name} {'=' if kind == 'exact' else kind} {value}")
    return " and ".join(parts) or "everything"


def _when(route: Mapping[str, Any]) -> str:
    matches = route.get("match") or []
    return "(" + " or ".join(_match_text(m) for m in matches) + ")" if matches else "(everything)"


def _policy(policy: Mapping[str, Any]) -> str:
    if not policy:
        return "No Traffic Policy"
    pieces = []
    pool = policy.get("connectionPool") or {}
    limits = [
        f"{proto}.{k}={v}" for proto in ("tcp", "http") for k, v in (pool.get(proto) or {}).items()
    ]
    if limits:
        pieces.append(f"connection pool ({', '.join(limits)})")
    outlier = policy.get("outlierDetection") or {}
    if outlier:
        pieces.append(
            "outlier detection (" + ", ".join(f"{k}={v}" for k, v in outlier.items()) + ")"
        )
    lb = policy.get("loadBalancer") or {}
    if lb:
        pieces.append(f"load balancer {lb.get('simple') or next(iter(lb), '')}")
    tls = policy.get("tls") or {}
    if tls:
        pieces.append(f"TLS mode {tls.get('mode', '')}")
    return "Traffic Policy: " + "; ".join(pieces) if pieces else "No Traffic Policy"


def _destination_rule(pod: PodState, service: str, rules: list[dict[str, Any]]) -> Iterator[str]:
    found = [r for r in rules if _host_matches(str(r["spec"].get("host", "")), _ns(r), service)]
    for rule in found:
        spec = rule["spec"]
        yield f'DestinationRule: {rule["metadata"]["name"]} for "{spec.get("host")}"'
        subsets = spec.get("subsets") or []
        mine = [s["name"] for s in subsets if select(pod.labels, _selector(s.get("labels")))]
        others = [s["name"] for s in subsets if s["name"] not in mine]
        if subsets:
            yield f"   Matching subsets: {','.join(mine) or '(none)'}"
            if others:
                yield f"      (Non-matching subsets {','.join(others)})"
        yield f"   {_policy(spec.get('trafficPolicy') or {})}"


def _selector(labels: Mapping[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in (labels or {}).items())


def _subsets_of(pod: PodState, service: str, rules: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for rule in rules:
        if _host_matches(str(rule["spec"].get("host", "")), _ns(rule), service):
            for s in rule["spec"].get("subsets") or []:
                if select(pod.labels, _selector(s.get("labels"))):
                    out.add(str(s["name"]))
    return out


def _virtual_services(
    pod: PodState, service: str, vss: list[dict[str, Any]], rules: list[dict[str, Any]]
) -> Iterator[str]:
    mine = _subsets_of(pod, service, rules)
    for vs in vss:
        lines, checked, matching = [], 0, 0
        for route in vs["spec"].get("http") or []:
            dests = [
                d
                for d in route.get("route") or []
                if _host_matches(
                    str((d.get("destination") or {}).get("host", "")), _ns(vs), service
                )
            ]
            if not dests:
                continue
            checked += 1
            total = sum(int(d.get("weight", 0) or 0) for d in route.get("route") or []) or 100
            for d in dests:
                subset = (d.get("destination") or {}).get("subset")
                weight = int(d.get("weight", 0) or 0) if len(route.get("route") or []) > 1 else 100
                share = f" {100 * weight / total:g}%" if weight != 100 else ""
                if subset is None or subset in mine:
                    matching += 1
                    lines.append(f"   Route to {subset or 'any subset'}{share} for {_when(route)}")
                else:
                    lines.append(
                        f"      Route to non-matching subset {subset}{share} for {_when(route)}"
                    )
        if not checked:
            continue
        gateways = vs["spec"].get("gateways") or ["mesh"]
        where = "" if gateways == ["mesh"] else f" (gateways {', '.join(gateways)})"
        yield f"VirtualService: {vs['metadata']['name']}{where}"
        if not matching:
            yield f"   WARNING: No destinations match pod subsets (checked {checked} HTTP routes)"
        yield from lines


def _exposed(
    pod: PodState,
    service: str,
    vss: list[dict[str, Any]],
    gateways: list[dict[str, Any]],
    state: DemoState,
) -> Iterator[str]:
    for vs in vss:
        bound = [g for g in vs["spec"].get("gateways") or [] if g != "mesh"]
        routes = [
            r
            for r in vs["spec"].get("http") or []
            if any(
                _host_matches(str((d.get("destination") or {}).get("host", "")), _ns(vs), service)
                for d in r.get("route") or []
            )
        ]
        if not bound or not routes:
            continue
        for gw in gateways:
            if gw["metadata"]["name"] not in {b.rpartition("/")[2] for b in bound}:
                continue
            for server in gw["spec"].get("servers") or []:
                port = (server.get("port") or {}).get("number")
                yield f"Exposed on Ingress Gateway http://{state.control_address}:{port}"
            uris = []
            for r in routes:
                for m in r.get("match") or []:
                    uri = m.get("uri") or {}
                    if "exact" in uri:
                        uris.append(uri["exact"])
                    elif "prefix" in uri:
                        uris.append(uri["prefix"] + "*")
            yield f"VirtualService: {vs['metadata']['name']}"
            yield f"   {', '.join(uris) or '/*'}"


def _mtls_mode(pod: PodState, policies: list[dict[str, Any]]) -> str:
    """Workload policy, else the namespace's, else the mesh's (istio-system), else PERMISSIVE."""

    def mode(p: dict[str, Any]) -> str:
        return str(((p["spec"].get("mtls") or {}).get("mode")) or "PERMISSIVE")

    for scope in ("workload", "namespace", "mesh"):
        for p in policies:
            selector = (p["spec"].get("selector") or {}).get("matchLabels")
            if scope == "workload":
                hit = bool(selector) and _ns(p) == pod.namespace
                hit = hit and select(pod.labels, _selector(selector))
            else:
                wanted = pod.namespace if scope == "namespace" else "istio-system"
                hit = not selector and _ns(p) == wanted
            if hit:
                return mode(p)
    return "PERMISSIVE"


def _describe(pod: PodState, client: PilotClient, state: DemoState) -> Iterator[str]:
    yield f"Pod: {pod.name}"
    ports = [f"{pod.port} ({pod.container or pod.name})"] if pod.port is not None else []
    yield f"   Pod Ports: {', '.join([*ports, '15000 (istio-proxy)'])}"
    yield f"   Address: {pod.ip}   Sidecar: {pod.sync}" + (
        f" ({pod.sync_detail})" if pod.sync_detail else ""
    )
    if pod.warning:
        yield f"   WARNING: {pod.warning}"
    services = [
        s
        for s in _items(client, "Service")
        if _ns(s) == pod.namespace
        and (sel := (s["spec"].get("selector") or {}))
        and select(pod.labels, _selector(sel))
    ]
    rules, vss = _items(client, "DestinationRule"), _items(client, "VirtualService")
    gateways = _items(client, "Gateway")
    if not services:
        yield "   Suggestion: no Service selects this pod: nothing in the mesh routes to it"
    for svc in services:
        name = svc["metadata"]["name"]
        host = f"{name}.{pod.namespace}.{_DOMAIN}"
        yield _RULE
        yield f"Service: {name}"
        for port in svc["spec"].get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            label = port.get("name") or "-"
            protocol = (port.get("appProtocol") or label.split("-")[0] or "tcp").upper()
            yield f"   Port: {label} {port.get('port')}/{protocol} targets pod port {target}"
        yield from _destination_rule(pod, host, rules)
        mesh = [v for v in vss if "mesh" in (v["spec"].get("gateways") or ["mesh"])]
        yield from _virtual_services(pod, host, mesh, rules)
        exposed = list(_exposed(pod, host, vss, gateways, state))
        if exposed:
            yield _RULE
            yield from exposed
    yield _RULE
    yield "Effective PeerAuthentication:"
    yield f"   Workload mTLS mode: {_mtls_mode(pod, _items(client, 'PeerAuthentication'))}"


def _run(args: argparse.Namespace) -> int:
    if args.kind.lower() not in ("pod", "pods", "po"):
        raise ValidationError(
            f"describe knows pods only (pymesh describe pod NAME), not {args.kind!r}"
        )
    demo = require_demo(args)
    pod = find_pod(demo.state, args.pod, args.namespace)
    for line in _describe(pod, client_from_args(args), demo.state):
        print(line)
    return 0


def run(args: argparse.Namespace) -> int:
    return guarded(_run, args)
