"""LDS for sidecars.

iptables (netns, Kubernetes) mode, Istio's shape: ``virtualOutbound`` on 0.0.0.0:15001 hands
each redirected connection to the per-port listener ``0.0.0.0_<port>`` (``bind_to_port:
false``) matching its original destination, else to the passthrough / blackhole chain;
``virtualInbound`` on 0.0.0.0:15006 has one filter chain per port the workload serves.

Process mode (``PYMESH_MODE=process``): nothing is redirected, so ``virtualOutbound`` is an
HTTP listener on ``<node ip>:15001`` (the apps' ``HTTP_PROXY``) routing by Host header with
``pymesh-outbound``, and ``virtualInbound`` an HTTP listener on ``<node ip>:15006`` routing by
service port (see ``README.md``). The per-port listeners are still listed, unbound. A node
whose apps listen elsewhere (``PYMESH_APP_PORTS``) also gets ``<node ip>_<port>``, the
virtualInbound chains bound on each container port it serves: whatever dials the pod's address
meets the sidecar (and its PeerAuthentication), as iptables makes it in a pod.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pilot.generate.common import (
    BLACKHOLE,
    INBOUND_PASSTHROUGH,
    LISTENER_TYPE,
    PASSTHROUGH,
    PROCESS_INBOUND_ROUTE,
    PROCESS_OUTBOUND_ROUTE,
    SERVICE_PORT_HEADER,
    inbound_cluster,
    outbound_cluster,
    socket_address,
    tcp_proxy,
    to_proto,
    typed,
)
from pilot.generate.hcm import http_connection_manager
from pilot.generate.http_routes import RouteScope
from pilot.generate.scope import InboundPort, OutboundPort, inbound_ports, outbound_ports
from pilot.generate.security import security_http_filters, security_network_filters
from pilot.generate.sniffing import (
    detection_settings,
    http_inspector,
    inbound_sniffing_chains,
    outbound_http_listeners,
)
from pilot.generate.tcp_routes import tcp_route_proxy
from pilot.generate.telemetry import observability
from pilot.generate.tls import inbound_mtls, speaks_mtls
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pilot.registry.registry import Service
from pymesh.config.model.security import MTLSMode

__all__ = ["build_sidecar_listeners", "inbound_route_config", "sidecar_listeners"]

_ORIGINAL_DST = {
    "name": "envoy.filters.listener.original_dst",
    "typed_config": typed("original_dst"),
}
_TLS_INSPECTOR = {
    "name": "envoy.filters.listener.tls_inspector",
    "typed_config": typed("tls_inspector"),
}


def _catch_all_cluster(ctx: PushContext, node: ProxyNode) -> str:
    mode = ctx.sidecar_scope(node).outbound_mode
    return PASSTHROUGH if mode == "ALLOW_ANY" else BLACKHOLE


def _virtual_outbound(ctx: PushContext, node: ProxyNode) -> dict[str, Any]:
    port = ctx.mesh.outbound_port
    if node.process_mode:
        hcm = http_connection_manager(
            ctx.mesh,
            stat_prefix=f"outbound_{node.ip}_{port}",
            rds=PROCESS_OUTBOUND_ROUTE,
            allow_absolute_url=True,
            observe=observability(ctx, node),
        )
        return {
            "name": "virtualOutbound",
            "address": socket_address(node.ip, port),
            "traffic_direction": "OUTBOUND",
            "filter_chains": [{"name": "virtualOutbound-http", "filters": [hcm]}],
        }
    return {
        "name": "virtualOutbound",
        "address": socket_address("0.0.0.0", port),
        "use_original_dst": True,
        "traffic_direction": "OUTBOUND",
        "filter_chains": [
            {
                # Connections made to 15001 itself would loop back into the proxy.
                "name": "virtualOutbound-blackhole",
                "filter_chain_match": {"destination_port": port},
                "filters": [tcp_proxy(BLACKHOLE)],
            },
            {
                "name": "virtualOutbound-catchall-tcp",
                "filters": [tcp_proxy(_catch_all_cluster(ctx, node))],
            },
        ],
    }


def _inbound_chain_routes(inbound: InboundPort) -> dict[str, Any]:
    first = inbound.instances[0]
    name = inbound_cluster(inbound.target_port)
    return {
        "name": name,
        "virtual_hosts": [
            {
                "name": f"inbound|http|{inbound.target_port}",
                "domains": ["*"],
                "routes": [
                    {
                        "name": "default",
                        "match": {"prefix": "/"},
                        "route": {"cluster": name, "timeout": "0s"},
                        "decorator": {
                            "operation": f"{first.service.hostname}:{first.service_port.port}/*"
                        },
                    }
                ],
            }
        ],
        "validate_clusters": False,
    }


def inbound_route_config(inbound: tuple[InboundPort, ...]) -> dict[str, Any]:
    """Process mode's one inbound route table: the service port named by the client sidecar's
    header, else the Host header's port, else the workload's first HTTP port."""
    http = [p for p in inbound if p.is_http]
    owners: dict[int, set[int]] = {}
    for p in http:
        for sp in p.service_ports:
            owners.setdefault(sp, set()).add(p.target_port)
    routes: list[dict[str, Any]] = []
    for sp in sorted(owners):
        target = min(owners[sp])
        cluster = inbound_cluster(target)
        for label, header in (
            ("service-port", {"name": SERVICE_PORT_HEADER, "string_match": {"exact": str(sp)}}),
            ("host-port", {"name": ":authority", "string_match": {"suffix": f":{sp}"}}),
        ):
            routes.append(
                {
                    "name": f"{label}-{sp}",
                    "match": {"prefix": "/", "headers": [header]},
                    "route": {"cluster": cluster, "timeout": "0s"},
                    "request_headers_to_remove": [SERVICE_PORT_HEADER],
                }
            )
    if http:
        cluster = inbound_cluster(http[0].target_port)
        routes.append(
            {
                "name": "default",
                "match": {"prefix": "/"},
                "route": {"cluster": cluster, "timeout": "0s"},
                "request_headers_to_remove": [SERVICE_PORT_HEADER],
            }
        )
    else:
        routes.append(
            {"name": "default", "match": {"prefix": "/"}, "direct_response": {"status": 404}}
        )
    # Named as Istio names the inbound virtual host of a port when the workload has one HTTP
    # port, so EnvoyFilters written for it (``vhost: {name: "inbound|http|9080"}``) match.
    targets = sorted({p.target_port for p in http})
    vhost = f"inbound|http|{targets[0]}" if len(targets) == 1 else "inbound|http|*"
    return {
        "name": PROCESS_INBOUND_ROUTE,
        "virtual_hosts": [{"name": vhost, "domains": ["*"], "routes": routes}],
        "validate_clusters": False,
    }


def _by_mode(
    name: str,
    match: dict[str, int],
    mode: MTLSMode,
    filters: Callable[[bool], list[dict[str, Any]]],
    *,
    http: bool,
) -> list[dict[str, Any]]:
    """Istio's inbound filter chains for one port under a PeerAuthentication mode: STRICT an
    mTLS chain only (plaintext finds no chain: the connection is closed), PERMISSIVE the mTLS
    chain and a plaintext one told apart by the TLS inspector, DISABLE plaintext only."""
    chains: list[dict[str, Any]] = []
    if mode in (MTLSMode.STRICT, MTLSMode.PERMISSIVE):
        chains.append(
            {
                "name": name,
                "filter_chain_match": {**match, "transport_protocol": "tls"},
                "filters": filters(True),
                "transport_socket": inbound_mtls(http=http),
            }
        )
    if mode is MTLSMode.PERMISSIVE:
        chains.append(
            {
                # Envoy refuses a listener whose filter chains share a name.
                "name": f"{name}-plaintext",
                "filter_chain_match": {**match, "transport_protocol": "raw_buffer"},
                "filters": filters(False),
            }
        )
    elif mode is not MTLSMode.STRICT:
        chain: dict[str, Any] = {"name": name, "filters": filters(False)}
        if match:
            chain["filter_chain_match"] = dict(match)
        chains.append(chain)
    return chains


def _mode(ctx: PushContext, node: ProxyNode, port: int | None) -> MTLSMode:
    # A sidecar that does not speak mesh mTLS (no tlsMode label) serves plaintext only.
    return ctx.mtls_mode(node, port) if speaks_mtls(node.labels) else MTLSMode.DISABLE


def _process_inbound(
    ctx: PushContext, node: ProxyNode, security: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One HTTP listener for every service port: an mTLS chain with the whole route table
    when any port accepts mTLS, a plaintext chain with the routes of the ports that accept
    plaintext. With all ports STRICT there is no plaintext chain at all."""
    port = ctx.mesh.inbound_port
    inbound = inbound_ports(ctx, node)
    http = [p for p in inbound if p.is_http]
    modes = {p.target_port: _mode(ctx, node, p.target_port) for p in http}
    if not modes:
        modes = {0: _mode(ctx, node, None)}
    secure = any(m in (MTLSMode.STRICT, MTLSMode.PERMISSIVE) for m in modes.values())
    plain_ports = {t for t, m in modes.items() if m is not MTLSMode.STRICT}
    client_cert = speaks_mtls(node.labels)
    observe = observability(ctx, node)

    def hcm(ports: tuple[InboundPort, ...], tls: bool) -> dict[str, Any]:
        return http_connection_manager(
            ctx.mesh,
            stat_prefix=f"inbound_{node.ip}_{port}",
            route_config=inbound_route_config(ports),
            inbound=True,
            client_cert=client_cert and tls,
            security_filters=security,
            observe=observe,
        )

    chains: list[dict[str, Any]] = []
    if secure:
        chains.append(
            {
                "name": "virtualInbound-mtls",
                "filter_chain_match": {"transport_protocol": "tls"},
                "filters": [hcm(inbound, True)],
                "transport_socket": inbound_mtls(http=True),
            }
        )
    if plain_ports:
        plain = tuple(p for p in inbound if not p.is_http or p.target_port in plain_ports)
        chain: dict[str, Any] = {"name": "virtualInbound-http", "filters": [hcm(plain, False)]}
        if secure:
            chain["filter_chain_match"] = {"transport_protocol": "raw_buffer"}
        chains.append(chain)
    return chains


def _virtual_inbound(ctx: PushContext, node: ProxyNode) -> dict[str, Any]:
    port = ctx.mesh.inbound_port
    inbound = inbound_ports(ctx, node)
    security = security_http_filters(ctx, node)
    if node.process_mode:
        process_chains = _process_inbound(ctx, node, security)
        listener: dict[str, Any] = {
            "name": "virtualInbound",
            "address": socket_address(node.ip, port),
            "traffic_direction": "INBOUND",
            "filter_chains": process_chains,
        }
        if any("transport_socket" in c for c in process_chains):
            listener["listener_filters"] = [_TLS_INSPECTOR]
        return listener
    client_cert = speaks_mtls(node.labels)
    chains: list[dict[str, Any]] = [
        {
            "name": "virtualInbound-blackhole",
            "filter_chain_match": {"destination_port": port},
            "filters": [tcp_proxy(BLACKHOLE)],
        }
    ]
    network_security = security_network_filters(ctx, node)
    observe = observability(ctx, node)
    sniffed: list[int] = []
    for p in inbound:

        def http(tls: bool, p: InboundPort = p) -> list[dict[str, Any]]:
            return [
                http_connection_manager(
                    ctx.mesh,
                    stat_prefix=f"inbound_0.0.0.0_{p.target_port}",
                    route_config=_inbound_chain_routes(p),
                    inbound=True,
                    client_cert=client_cert and tls,
                    security_filters=security,
                    observe=observe,
                )
            ]

        def tcp(tls: bool, p: InboundPort = p) -> list[dict[str, Any]]:
            return [
                *network_security,
                tcp_proxy(inbound_cluster(p.target_port), access_log=observe.tcp_access_log(True)),
            ]

        name, match = f"0.0.0.0_{p.target_port}", {"destination_port": p.target_port}
        mode = _mode(ctx, node, p.target_port)
        if p.sniffed:
            sniffed.append(p.target_port)
            chains.extend(inbound_sniffing_chains(name, match, mode, http, tcp))
        else:
            network = http if p.is_http else tcp
            chains.extend(_by_mode(name, match, mode, network, http=p.is_http))
    chains.extend(
        _by_mode(
            "virtualInbound-catchall-tcp",
            {},
            _mode(ctx, node, None),
            lambda tls: [*network_security, tcp_proxy(INBOUND_PASSTHROUGH)],
            http=False,
        )
    )
    filters = [_ORIGINAL_DST]
    if any("transport_socket" in c for c in chains):
        filters.append(_TLS_INSPECTOR)
    detection: dict[str, Any] = {}
    if sniffed:
        filters.append(http_inspector(sniffed))
        detection = detection_settings(ctx.mesh)
    return {
        "name": "virtualInbound",
        "address": socket_address("0.0.0.0", port),
        "traffic_direction": "INBOUND",
        "listener_filters": filters,
        **detection,
        "filter_chains": chains,
    }


def _port_listeners(ctx: PushContext, node: ProxyNode, op: OutboundPort) -> list[dict[str, Any]]:
    def listener(address: str, chains: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "name": f"{address}_{op.port}",
            "address": socket_address(address, op.port),
            "bind_to_port": False,
            "traffic_direction": "OUTBOUND",
            "filter_chains": chains,
            **extra,
        }

    found = []
    observe = observability(ctx, node)
    logs = observe.tcp_access_log(False)
    scope = RouteScope(ctx, node, op.port)

    def routed(service: Service) -> dict[str, Any]:
        vs = ctx.virtual_service_for_host(node, service.hostname)
        proxy = tcp_route_proxy(
            scope,
            (vs,) if vs is not None else (),
            outbound_cluster(op.port, service.hostname),
            address=service.address or None,
            access_log=logs,
        )
        assert proxy is not None  # a default cluster was given
        return proxy

    if op.http:
        hcm = http_connection_manager(
            ctx.mesh,
            stat_prefix=f"outbound_0.0.0.0_{op.port}",
            rds=str(op.port),
            observe=observe,
        )
        found.extend(outbound_http_listeners(ctx.mesh, op, hcm, routed, listener))
    for service in (s for s in op.tcp if s.address):
        found.append(listener(service.address, [{"filters": [routed(service)]}]))
    shared = [s for s in op.tcp if not s.address]
    tls = [s for s in shared if s in op.tls]
    if shared and not op.http:
        if tls:
            chains = [
                {
                    "filter_chain_match": {
                        "server_names": [s.hostname],
                        "transport_protocol": "tls",
                    },
                    "filters": [tcp_proxy(outbound_cluster(op.port, s.hostname), access_log=logs)],
                }
                for s in tls
            ]
            default = {"filters": [tcp_proxy(_catch_all_cluster(ctx, node))]}
            found.append(
                listener(
                    "0.0.0.0",
                    chains,
                    listener_filters=[_TLS_INSPECTOR],
                    default_filter_chain=default,
                )
            )
        else:
            # Without a VIP, plain TCP services on one port cannot be told apart: Istio keeps
            # the first.
            found.append(listener("0.0.0.0", [{"filters": [routed(shared[0])]}]))
    return found


def _service_address_listeners(
    ctx: PushContext, node: ProxyNode, virtual_inbound: dict[str, Any]
) -> list[dict[str, Any]]:
    """Process mode: the virtualInbound chains on ``<node ip>:<port>`` for each HTTP container
    port whose app the sidecar reaches on another port."""
    ports = sorted(
        {
            p.target_port
            for p in inbound_ports(ctx, node)
            if p.is_http and node.app_port(p.target_port) != p.target_port
        }
    )
    return [
        {
            **virtual_inbound,
            "name": f"{node.ip}_{port}",
            "address": socket_address(node.ip, port),
        }
        for port in ports
    ]


def sidecar_listeners(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    inbound = _virtual_inbound(ctx, node)
    bodies = [_virtual_outbound(ctx, node), inbound]
    if node.process_mode and node.app_ports:
        bodies.extend(_service_address_listeners(ctx, node, inbound))
    for op in outbound_ports(ctx, node):
        bodies.extend(_port_listeners(ctx, node, op))
    return bodies


def build_sidecar_listeners(ctx: PushContext, node: ProxyNode) -> list[Any]:
    return [to_proto(LISTENER_TYPE, body, ctx.protos) for body in sidecar_listeners(ctx, node)]
