"""CDS: Istio's clusters for one proxy.

``outbound|<port>|<subset>|<host>`` for every service port the proxy can reach (and every
DestinationRule subset), ``inbound|<port>||`` for every port its workload serves, and the
special ``BlackHoleCluster`` / ``PassthroughCluster`` / ``InboundPassthroughCluster``.
Kubernetes services and STATIC ServiceEntries are EDS clusters; DNS ServiceEntries are
STRICT_DNS (LOGICAL_DNS for DNS_ROUND_ROBIN), NONE ones ORIGINAL_DST.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pilot.generate.common import (
    ADS,
    BLACKHOLE,
    CLUSTER_TYPE,
    INBOUND_PASSTHROUGH,
    PASSTHROUGH,
    duration,
    inbound_cluster,
    outbound_cluster,
    rule_path,
    socket_address,
    to_proto,
    typed,
)
from pilot.generate.endpoints import load_assignment, mtls_endpoint
from pilot.generate.policy import HTTP_OPTIONS, MAX_U32, Policy, apply_policy, merged_policy
from pilot.generate.scope import inbound_ports
from pilot.generate.telemetry import collector_clusters
from pilot.generate.tls import auto_mtls_matches, speaks_mtls, upstream_tls
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pilot.registry.registry import Service, ServicePort
from pymesh.config.model.common import EMPTY_MAP, Resource
from pymesh.config.model.networking import DestinationRule

__all__ = ["ClusterPlan", "build_clusters", "outbound_plans", "special_clusters"]

ClusterKind = Literal["EDS", "STRICT_DNS", "LOGICAL_DNS", "ORIGINAL_DST"]
_KIND: dict[str, ClusterKind] = {
    "STATIC": "EDS",
    "DNS": "STRICT_DNS",
    "DNS_ROUND_ROBIN": "LOGICAL_DNS",
    "NONE": "ORIGINAL_DST",
}
_DEFAULT_THRESHOLDS = {
    "max_connections": MAX_U32,
    "max_pending_requests": MAX_U32,
    "max_requests": MAX_U32,
    "max_retries": MAX_U32,
    "track_remaining": True,
}


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    """One outbound cluster before it is written out (also what EDS and explain read)."""

    name: str
    service: Service
    port: ServicePort
    subset: str
    labels: Mapping[str, str]
    kind: ClusterKind
    policy: Policy
    rule: Resource[DestinationRule] | None


def outbound_plans(ctx: PushContext, node: ProxyNode) -> tuple[ClusterPlan, ...]:
    plans = []
    for service in ctx.services_for(node):
        rule = ctx.destination_rule(node, service)
        subsets = rule.spec.subsets if rule is not None else ()
        for sp in service.ports:
            if sp.protocol == "UDP":
                continue
            for subset, labels in (("", EMPTY_MAP), *((s.name, s.labels) for s in subsets)):
                policy = merged_policy(rule.spec if rule else None, sp.port, subset)
                kind = "ORIGINAL_DST" if policy.passthrough else _KIND[service.resolution]
                plans.append(
                    ClusterPlan(
                        outbound_cluster(sp.port, service.hostname, subset),
                        service,
                        sp,
                        subset,
                        labels,
                        kind,
                        policy,
                        rule,
                    )
                )
    return tuple(plans)


def _metadata(service: Service, port: int, plan: ClusterPlan | None = None) -> dict[str, Any]:
    istio: dict[str, Any] = {
        "services": [
            {"host": service.hostname, "name": service.name, "namespace": service.namespace}
        ],
        "default_original_port": port,
    }
    if plan is not None and plan.subset:
        istio["subset"] = plan.subset
    if plan is not None and plan.rule is not None:
        istio["config"] = rule_path(plan.rule)
    return {"filter_metadata": {"istio": istio}}


def _original_dst(cluster: dict[str, Any], node: ProxyNode) -> None:
    cluster["type"] = "ORIGINAL_DST"
    cluster["lb_policy"] = "CLUSTER_PROVIDED"
    if node.process_mode:
        # Behind HTTP_PROXY the connection's original destination is the proxy itself; the
        # only hint of the real one is the Host header (an IP:port for this to work).
        cluster["original_dst_lb_config"] = {"use_http_header": True, "http_header_name": "host"}


def _outbound(ctx: PushContext, node: ProxyNode, plan: ClusterPlan) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": plan.name,
        "connect_timeout": duration(ctx.mesh.connect_timeout),
    }
    if plan.kind == "EDS":
        cluster["type"] = "EDS"
        cluster["eds_cluster_config"] = {"eds_config": ADS, "service_name": plan.name}
    elif plan.kind == "ORIGINAL_DST":
        _original_dst(cluster, node)
    else:
        cluster["type"] = plan.kind
        cluster["dns_lookup_family"] = "V4_ONLY"
        cluster["dns_refresh_rate"] = duration(ctx.mesh.dns_refresh_rate)
        cluster["respect_dns_ttl"] = True
        instances = ctx.registry.instances(plan.service, plan.port.port)
        assignment = load_assignment(
            ctx, plan.name, instances, plan.labels, allow_names=True, mtls=speaks_mtls(node.labels)
        )
        if plan.kind == "LOGICAL_DNS" and assignment.get("endpoints"):
            first = assignment["endpoints"][0]
            assignment["endpoints"] = [{**first, "lb_endpoints": first["lb_endpoints"][:1]}]
        cluster["load_assignment"] = assignment
    accounts = {
        f"spiffe://{ctx.mesh.trust_domain}/ns/{i.endpoint.namespace}/sa/{i.endpoint.service_account}"
        for i in ctx.registry.instances(plan.service, plan.port.port)
        if i.endpoint.service_account
    }
    istio_sni = f"outbound_.{plan.port.port}_.{plan.subset}_.{plan.service.hostname}"
    tls = upstream_tls(
        plan.policy.tls, sni=plan.service.hostname, istio_sni=istio_sni, spiffe_sans=accounts
    )
    if plan.policy.tls is None and _auto_mtls(ctx, node, plan):
        cluster["transport_socket_matches"] = auto_mtls_matches(istio_sni, accounts)
    # In process mode the next hop may be the peer sidecar's inbound listener, which tells
    # HTTP/2 by its client preface (codec_type AUTO), as Envoy's does.
    http2 = plan.port.protocol in _HTTP2_PROTOCOLS
    apply_policy(cluster, plan.policy, http=plan.port.is_http, http2=http2, tls=tls)
    cluster["metadata"] = _metadata(plan.service, plan.port.port, plan)
    if node.process_mode and ctx.mesh.mixer_address and _loopback_only(ctx, plan):
        # Pods share one loopback: connect from the pod's own address, as a pod's traffic
        # leaves from its IP, so the callee's report names this workload as its source. Only
        # towards loopback endpoints: a loopback source cannot reach a pod on a bridge
        # (netns mode), where the connection would be refused outright.
        cluster["upstream_bind_config"] = {"source_address": {"address": node.ip, "port_value": 0}}
    return cluster


def _loopback_only(ctx: PushContext, plan: ClusterPlan) -> bool:
    instances = ctx.registry.instances(plan.service, plan.port.port)
    try:
        return bool(instances) and all(
            ipaddress.ip_address(i.endpoint.address).is_loopback for i in instances
        )
    except ValueError:  # a hostname endpoint (DNS): not a pod on this machine's loopback
        return False


def _auto_mtls(ctx: PushContext, node: ProxyNode, plan: ClusterPlan) -> bool:
    """Istio's auto mTLS, for a client sidecar that speaks mTLS, to a mesh service with at
    least one endpoint that does (the others get plaintext through the same cluster)."""
    if not ctx.mesh.enable_auto_mtls or plan.service.mesh_external or plan.kind == "ORIGINAL_DST":
        return False
    if not speaks_mtls(node.labels):
        return False
    instances = ctx.registry.instances(plan.service, plan.port.port)
    return any(mtls_endpoint(ctx, i.endpoint) for i in instances)


_HTTP2_PROTOCOLS = frozenset({"HTTP2", "GRPC", "GRPC-WEB"})


def _inbound(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    # In process mode the app listens on the pod's own loopback address, not 127.0.0.1, and
    # on the port the sidecar was told when the sidecar holds the container port itself.
    address = node.ip if node.process_mode else "127.0.0.1"
    clusters = []
    for inbound in inbound_ports(ctx, node):
        name = inbound_cluster(inbound.target_port)
        first = inbound.instances[0]
        cluster: dict[str, Any] = {
            "name": name,
            "type": "STATIC",
            "connect_timeout": duration(ctx.mesh.connect_timeout),
            "lb_policy": "ROUND_ROBIN",
            "circuit_breakers": {"thresholds": [dict(_DEFAULT_THRESHOLDS)]},
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": socket_address(
                                        address, node.app_port(inbound.target_port)
                                    )
                                }
                            }
                        ]
                    }
                ],
            },
            "metadata": _metadata(first.service, first.service_port.port),
        }
        if all(i.service_port.protocol in _HTTP2_PROTOCOLS for i in inbound.instances):
            # As istiod: an app serving HTTP/2 or gRPC gets HTTP/2 from its sidecar too.
            options: dict[str, Any] = {"explicit_http_config": {"http2_protocol_options": {}}}
            cluster["typed_extension_protocol_options"] = {
                HTTP_OPTIONS: typed("http_options", options)
            }
        clusters.append(cluster)
    return clusters


def _collector(name: str, address: str, ctx: PushContext, *, grpc: bool) -> dict[str, Any]:
    """The cluster of a telemetry collector named by ``host:port`` in the mesh config."""
    host, _, port = address.rpartition(":")
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STRICT_DNS",
        "connect_timeout": duration(ctx.mesh.connect_timeout),
        "dns_lookup_family": "V4_ONLY",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": socket_address(host, int(port))}}]}
            ],
        },
    }
    if grpc:
        cluster["typed_extension_protocol_options"] = {
            HTTP_OPTIONS: typed(
                "http_options", {"explicit_http_config": {"http2_protocol_options": {}}}
            )
        }
    return cluster


def special_clusters(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    timeout = duration(ctx.mesh.connect_timeout)
    clusters: list[dict[str, Any]] = [
        {"name": BLACKHOLE, "type": "STATIC", "connect_timeout": timeout}
    ]
    if not node.is_router:
        passthrough: dict[str, Any] = {
            "name": PASSTHROUGH,
            "connect_timeout": timeout,
            "circuit_breakers": {"thresholds": [dict(_DEFAULT_THRESHOLDS)]},
        }
        _original_dst(passthrough, node)
        clusters.append(passthrough)
        if not node.process_mode:
            inbound: dict[str, Any] = {"name": INBOUND_PASSTHROUGH, "connect_timeout": timeout}
            _original_dst(inbound, node)
            if not node.process_mode:
                # As istiod: connect to the app from 127.0.0.6, which the capture rules never
                # take back to the inbound listener (a connection to the pod's own IP would).
                inbound["upstream_bind_config"] = {
                    "source_address": {"address": "127.0.0.6", "port_value": 0}
                }
            clusters.append(inbound)
    for name, address, grpc in collector_clusters(ctx.mesh):
        clusters.append(_collector(name, address, ctx, grpc=grpc))
    return clusters


def build_clusters(ctx: PushContext, node: ProxyNode) -> list[Any]:
    bodies = [_outbound(ctx, node, plan) for plan in outbound_plans(ctx, node)]
    if not node.is_router:
        bodies.extend(_inbound(ctx, node))
    bodies.extend(special_clusters(ctx, node))
    return [to_proto(CLUSTER_TYPE, body, ctx.protos) for body in bodies]
