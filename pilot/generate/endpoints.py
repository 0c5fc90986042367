"""EDS: one ClusterLoadAssignment per EDS cluster of the proxy's CDS output.

Endpoints are grouped by locality and filtered by the subset's labels. An endpoint fronted by
a process-mode sidecar is addressed at that sidecar's inbound listener (``<pod ip>:15006``):
in process mode the app itself listens on ``<pod ip>:<port>``, so the sidecar cannot
intercept that port (see ``README.md``). gRPC and opaque TCP ports are the exception: that
inbound listener routes HTTP/1.1 by a header, so they are addressed at ``<pod ip>:<port>``:
the sidecar itself where it fronts the port (the demo moves the app's container port behind
it, and mTLS applies), else the app, in plaintext.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pilot.generate.common import ENDPOINT_TYPE, socket_address, to_proto
from pilot.generate.tls import TRANSPORT_SOCKET_MATCH, speaks_mtls
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pilot.registry.registry import Endpoint, ServiceInstance
from pymesh.config.hosts import is_ip
from pymesh.config.model.common import labels_match
from pymesh.config.model.security import MTLSMode
from pymesh.config.protocol import is_http

__all__ = ["endpoint_address", "load_assignment", "load_assignments", "mtls_endpoint"]


def _via_sidecar(endpoint: Endpoint, protocol: str) -> bool:
    """Whether mesh traffic for a process-mode endpoint goes through its sidecar's inbound
    listener: HTTP ports but gRPC (the gateway reaches the rate limit service at the app)."""
    return endpoint.sidecar == "process" and is_http(protocol) and protocol.upper() != "GRPC"


def _plaintext_app(endpoint: Endpoint, protocol: str) -> bool:
    """A process-mode endpoint reached at the app itself, with no sidecar in front."""
    return (
        endpoint.sidecar == "process"
        and not endpoint.fronted
        and not _via_sidecar(endpoint, protocol)
    )


def endpoint_address(
    ctx: PushContext, endpoint: Endpoint, protocol: str = "HTTP"
) -> tuple[str, int]:
    """Where mesh traffic for ``endpoint`` (of a service port speaking ``protocol``) is sent."""
    if _via_sidecar(endpoint, protocol):
        return endpoint.address, ctx.mesh.inbound_port
    return endpoint.address, endpoint.port


def _locality(text: str) -> dict[str, str]:
    region, zone, sub_zone = ([*text.split("/"), "", ""])[:3]
    found = {"region": region, "zone": zone, "sub_zone": sub_zone}
    return {k: v for k, v in found.items() if v}


def mtls_endpoint(ctx: PushContext, endpoint: Endpoint) -> bool:
    """Auto mTLS sends mTLS to an endpoint whose sidecar speaks it, unless the endpoint's
    own PeerAuthentication disables mTLS for that port (Istio's ``mtlsChecker``)."""
    return speaks_mtls(endpoint.labels) and (
        ctx.workload_mtls_mode(endpoint.namespace, endpoint.labels, endpoint.port)
        is not MTLSMode.DISABLE
    )


def load_assignment(
    ctx: PushContext,
    name: str,
    instances: Iterable[ServiceInstance],
    labels: Mapping[str, str],
    *,
    allow_names: bool = False,
    mtls: bool = False,
) -> dict[str, Any]:
    """The ClusterLoadAssignment dict for ``name``; DNS clusters pass ``allow_names``;
    ``mtls`` (a client that speaks mesh mTLS) marks the endpoints auto mTLS applies to."""
    groups: dict[str, list[dict[str, Any]]] = {}
    seen: set[tuple[str, int]] = set()
    for inst in instances:
        ep = inst.endpoint
        if not labels_match(labels, ep.labels) or not ep.healthy:
            continue
        if not allow_names and not is_ip(ep.address):
            continue
        address = endpoint_address(ctx, ep, inst.service_port.protocol)
        if address in seen:
            continue
        seen.add(address)
        lb: dict[str, Any] = {
            "endpoint": {"address": socket_address(*address)},
            "health_status": "HEALTHY",
        }
        if ep.weight > 0:
            lb["load_balancing_weight"] = ep.weight
        if mtls and mtls_endpoint(ctx, ep) and not _plaintext_app(ep, inst.service_port.protocol):
            lb["metadata"] = {"filter_metadata": {TRANSPORT_SOCKET_MATCH: {"tlsMode": "istio"}}}
        groups.setdefault(ep.locality, []).append(lb)
    endpoints = []
    for locality in sorted(groups):
        group: dict[str, Any] = {"lb_endpoints": groups[locality]}
        if locality:
            group["locality"] = _locality(locality)
        endpoints.append(group)
    body: dict[str, Any] = {"cluster_name": name}
    if endpoints:
        body["endpoints"] = endpoints
    return body


def load_assignments(ctx: PushContext, node: ProxyNode, plans: Iterable[Any]) -> list[Any]:
    """ClusterLoadAssignment messages for the EDS ``plans`` (see ``clusters.ClusterPlan``)."""
    mtls = speaks_mtls(node.labels)
    return [
        to_proto(
            ENDPOINT_TYPE,
            load_assignment(
                ctx,
                plan.name,
                ctx.registry.instances(plan.service, plan.port.port),
                plan.labels,
                mtls=mtls,
            ),
            ctx.protos,
        )
        for plan in plans
        if plan.kind == "EDS"
    ]
