from __future__ import annotations

from pilot.model import MeshConfig, ProxyNode, PushContext
from pilot.registry import Registry
from pymesh.config.loader import load_documents
from pymesh.config.model.security import MTLSMode

CONFIG = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: data}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: hidden, namespace: data, annotations: {networking.istio.io/exportTo: "."}}
spec: {selector: {app: hidden}, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-own, namespace: data}
spec: {host: ratings, subsets: [{name: own, labels: {v: own}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-client, namespace: default}
spec: {host: ratings.data.svc.cluster.local, subsets: [{name: client, labels: {v: c}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: everything, namespace: istio-system}
spec: {host: "*.svc.cluster.local", subsets: [{name: root, labels: {v: r}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: private, namespace: data}
spec: {host: hidden, exportTo: ["."], subsets: [{name: private, labels: {v: p}}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wildcard, namespace: default}
spec:
  hosts: ["*.data.svc.cluster.local"]
  http: [{route: [{destination: {host: ratings.data.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: exact, namespace: data}
spec:
  hosts: [ratings]
  http: [{route: [{destination: {host: ratings}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: gw-only, namespace: default}
spec:
  hosts: [reviews]
  gateways: [istio-system/ingress]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns, namespace: data}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ratings, namespace: data}
spec:
  selector: {matchLabels: {app: ratings}}
  mtls: {mode: UNSET}
  portLevelMtls: {9080: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-viewer, namespace: data}
spec:
  selector: {matchLabels: {app: ratings}}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: istio-system}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other, namespace: default}
spec: {}
"""

REVIEWS = ProxyNode.build("127.0.33.2", "reviews-0", "default", labels={"app": "reviews"})
RATINGS = ProxyNode.build("127.0.33.3", "ratings-0", "data", labels={"app": "ratings"})
GATEWAY = ProxyNode.build(
    "127.0.33.9", "gw-0", "istio-system", type="router", labels={"istio": "ingressgateway"}
)


def context(
    text: str = CONFIG,
    proxies: tuple[ProxyNode, ...] = (REVIEWS, RATINGS),
    mesh: MeshConfig | None = None,
) -> PushContext:
    resources = load_documents(text).resources
    return PushContext.build(resources, Registry.build(resources, proxies), mesh)


def test_destination_rule_precedence() -> None:
    ctx = context()
    ratings = ctx.registry.service_by_host("ratings.data.svc.cluster.local")
    reviews = ctx.registry.service_by_host("reviews.default.svc.cluster.local")
    assert ratings is not None and reviews is not None
    # The client's namespace first, then the service's, then the root namespace.
    rule = ctx.destination_rule(REVIEWS, ratings)
    assert rule is not None and rule.name == "ratings-client"
    rule = ctx.destination_rule(RATINGS, ratings)
    assert rule is not None and rule.name == "ratings-own"
    rule = ctx.destination_rule(RATINGS, reviews)
    assert rule is not None and rule.name == "everything"


def test_export_to_hides_services_and_rules() -> None:
    ctx = context()
    assert "hidden.data.svc.cluster.local" not in {s.hostname for s in ctx.services_for(REVIEWS)}
    assert "hidden.data.svc.cluster.local" in {s.hostname for s in ctx.services_for(RATINGS)}
    hidden = ctx.registry.service_by_host("hidden.data.svc.cluster.local")
    assert hidden is not None
    rule = ctx.destination_rule(REVIEWS, hidden)
    assert rule is not None and rule.name == "everything"


def test_virtual_service_for_host_prefers_exact_hosts() -> None:
    ctx = context()
    vs = ctx.virtual_service_for_host(REVIEWS, "ratings.data.svc.cluster.local")
    assert vs is not None and vs.name == "exact"
    vs = ctx.virtual_service_for_host(REVIEWS, "other.data.svc.cluster.local")
    assert vs is not None and vs.name == "wildcard"
    # Bound to a gateway only: not for sidecars.
    assert ctx.virtual_service_for_host(REVIEWS, "reviews.default.svc.cluster.local") is None
    assert [vs.name for vs in ctx.virtual_services_for(GATEWAY, "istio-system/ingress")] == [
        "gw-only"
    ]


def test_gateways_select_router_nodes_only() -> None:
    ctx = context()
    assert [g.name for g in ctx.gateways_for(GATEWAY)] == ["ingress"]
    assert ctx.gateways_for(REVIEWS) == ()


def test_mtls_mode_layers() -> None:
    ctx = context()
    assert ctx.mtls_mode(REVIEWS, 9080) is MTLSMode.STRICT  # mesh-wide
    assert ctx.mtls_mode(RATINGS, 9080) is MTLSMode.DISABLE  # workload, port level
    assert ctx.mtls_mode(RATINGS, 8080) is MTLSMode.PERMISSIVE  # UNSET -> namespace
    assert context("").mtls_mode(REVIEWS, 80) is MTLSMode.PERMISSIVE


def test_authorization_policies_for_a_workload() -> None:
    ctx = context()
    assert {p.name for p in ctx.authorization_policies_for(RATINGS)} == {
        "ratings-viewer",
        "deny-all",
    }
    assert {p.name for p in ctx.authorization_policies_for(REVIEWS)} == {"deny-all", "other"}


def test_sidecar_egress_scope() -> None:
    sidecar = """
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./*", "istio-system/*"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""
    ctx = context(CONFIG + sidecar)
    scope = ctx.sidecar_scope(REVIEWS)
    assert scope.outbound_mode == "REGISTRY_ONLY"
    assert [s.hostname for s in ctx.services_for(REVIEWS)] == ["reviews.default.svc.cluster.local"]
    # The Sidecar lives in "default": "data" is not scoped.
    assert ctx.sidecar_scope(RATINGS).resource is None
    assert len(ctx.services_for(RATINGS)) == 3


def test_version_is_a_content_hash() -> None:
    a, b = context(), context()
    assert a.version == b.version
    assert context(proxies=(REVIEWS,)).version != a.version
    assert context(CONFIG.replace("9080", "9081")).version != a.version
    assert context(mesh=MeshConfig(default_retries=3)).version != a.version
