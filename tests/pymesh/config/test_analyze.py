"""Cross-resource analyzers on small fixtures (and on Bookinfo itself)."""

from __future__ import annotations

from pathlib import Path

from pymesh.config import analyze as an
from pymesh.config import load_documents, load_path

SERVICE = """
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{app: {name}}}
  ports: [{ports}]
---"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}-{version}, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: {name}, version: {version}}}}}
  template:
    metadata: {{labels: {{app: {name}, version: {version}}}}}
    spec: {{containers: [{{name: app, ports: [{{containerPort: 9080}}]}}]}}
---"""

REVIEWS_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v4}
      weight: 50
    mirror: {host: reviews, subset: v9}
---"""

REVIEWS_DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---"""


def service(name: str, ns: str = "default", ports: str = "{port: 9080, name: http}") -> str:
    return SERVICE.format(name=name, ns=ns, ports=ports)


def deployment(name: str, version: str, ns: str = "default") -> str:
    return DEPLOYMENT.format(name=name, version=version, ns=ns)


def run(check, text: str) -> list[an.Finding]:
    return check(load_documents(text, "fixture.yaml").resources)


def test_subset_not_defined_by_any_destination_rule() -> None:
    findings = run(an.subset_references, REVIEWS_VS + REVIEWS_DR)
    assert [(f.code, f.path) for f in findings] == [
        ("IST0101", "spec.http[0].route[1].destination"),
        ("IST0101", "spec.http[0].mirror"),
    ]
    assert (
        findings[0].message == "Referenced host+subset in destinationrule not found: 'reviews+v4'"
    )
    assert findings[1].message.startswith("Referenced mirror+subset in destinationrule")
    assert findings[0].resource.name == "reviews"
    assert str(findings[0]).startswith(
        "Error [IST0101] (VirtualService default/reviews fixture.yaml)"
    )


def test_subset_in_a_destination_rule_of_another_namespace_does_not_count() -> None:
    other_ns = REVIEWS_DR.replace("name: reviews}", "name: reviews, namespace: other}").replace(
        "host: reviews.default.svc.cluster.local", "host: reviews"
    )
    findings = run(an.subset_references, REVIEWS_VS + other_ns)
    assert {f.path for f in findings} == {
        "spec.http[0].route[0].destination",
        "spec.http[0].route[1].destination",
        "spec.http[0].mirror",
    }


def test_destination_host_must_be_a_service_or_service_entry() -> None:
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews}, weight: 1}
    - {destination: {host: ratings}, weight: 1}
    - {destination: {host: api.example.com}, weight: 1}
    - {destination: {host: reviews.default.svc.cluster.local, port: {number: 9999}}, weight: 1}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: ['*.example.com']
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: NONE
---"""
    findings = run(an.destination_hosts, vs + service("reviews"))
    assert [(f.code, f.message) for f in findings] == [
        ("IST0101", "Referenced host not found: 'ratings'"),
        ("IST0101", "Referenced host:port not found: 'reviews.default.svc.cluster.local:9999'"),
    ]
    assert findings[0].path == "spec.http[0].route[1].destination"


def test_destination_needs_a_port_when_the_service_has_several() -> None:
    vs = REVIEWS_VS.replace("subset: v1}", "subset: v1, port: {number: 9080}}")
    two_ports = service("reviews", ports="{port: 9080, name: http}, {port: 9090, name: grpc}")
    findings = run(an.destination_hosts, vs + two_ports)
    assert [(f.code, f.path) for f in findings] == [
        ("IST0112", "spec.http[0].route[1].destination"),
        ("IST0112", "spec.http[0].mirror"),
    ]


def test_service_export_to_limits_visibility() -> None:
    hidden = service("reviews", ns="other").replace(
        "namespace: other}", "namespace: other, annotations: {networking.istio.io/exportTo: .}}"
    )
    vs = REVIEWS_VS.replace("host: reviews,", "host: reviews.other.svc.cluster.local,")
    findings = run(an.destination_hosts, vs + hidden)
    assert {f.code for f in findings} == {"IST0101"}


def test_conflicting_virtual_services_for_the_same_host() -> None:
    second = REVIEWS_VS.replace("name: reviews}", "name: reviews-canary}").replace(
        "hosts: [reviews]", "hosts: [reviews.default.svc.cluster.local]"
    )
    on_gateway = REVIEWS_VS.replace("name: reviews}", "name: reviews-edge}").replace(
        "hosts: [reviews]", "hosts: [reviews]\n  gateways: [edge]"
    )
    findings = run(an.conflicting_mesh_gateway_hosts, REVIEWS_VS + second + on_gateway)
    assert sorted(f.resource.name for f in findings) == ["reviews", "reviews-canary"]
    assert {f.code for f in findings} == {"IST0109"}
    assert "default/reviews,default/reviews-canary" in findings[0].message
    assert "reviews.default.svc.cluster.local" in findings[0].message
    # Exported to different namespaces, they do not conflict.
    private = second.replace("  hosts:", "  exportTo: [other]\n  hosts:")
    mine = REVIEWS_VS.replace("  hosts:", "  exportTo: ['.']\n  hosts:")
    assert run(an.conflicting_mesh_gateway_hosts, mine + private) == []


GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ['*.example.com']
---"""

EDGE_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: site}
spec:
  hosts: [www.example.com]
  gateways: [edge]
  http:
  - route: [{destination: {host: site}}]
---"""


def test_virtual_service_bound_to_a_missing_gateway() -> None:
    text = EDGE_VS.replace("gateways: [edge]", "gateways: [edge, istio-system/public, mesh]")
    findings = run(an.gateway_references, GATEWAY + text)
    assert [(f.code, f.path, f.message) for f in findings] == [
        ("IST0101", "spec.gateways[1]", "Referenced gateway not found: 'istio-system/public'")
    ]


def test_virtual_service_host_not_served_by_its_gateway() -> None:
    text = EDGE_VS.replace("www.example.com", "www.example.org")
    (finding,) = run(an.gateway_references, GATEWAY + text)
    assert finding.code == "IST0132"
    assert finding.level is an.Level.WARNING
    assert "default/edge" in finding.message


def test_gateway_that_no_virtual_service_binds() -> None:
    assert run(an.unreferenced_gateways, GATEWAY + EDGE_VS) == []
    (finding,) = run(an.unreferenced_gateways, GATEWAY)
    assert (finding.code, finding.resource.name) == ("PYM0001", "edge")


INGRESS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: ingress}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  template:
    metadata: {labels: {istio: ingressgateway}}
    spec: {containers: [{name: proxy}]}
---
apiVersion: v1
kind: Service
metadata: {name: ingress}
spec:
  selector: {istio: ingressgateway}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: https, port: 443, targetPort: 8443}]
---"""


def test_gateway_port_must_be_on_the_gateway_service() -> None:
    assert run(an.gateway_ports, GATEWAY + INGRESS) == []
    other_port = GATEWAY.replace("number: 8080", "number: 9090")
    (finding,) = run(an.gateway_ports, other_port + INGRESS)
    assert finding.code == "IST0162"
    assert finding.path == "spec.servers[0].port.number"
    assert "port 9090" in finding.message and "istio=ingressgateway" in finding.message


def test_gateway_selector_matching_no_workload() -> None:
    # Without any workload in the input there is nothing to judge.
    assert run(an.gateway_ports, GATEWAY) == []
    elsewhere = GATEWAY.replace("istio: ingressgateway", "istio: egressgateway")
    (finding,) = run(an.gateway_ports, elsewhere + INGRESS)
    assert (finding.code, finding.message) == (
        "IST0101",
        "Referenced selector not found: 'istio=egressgateway'",
    )


def test_subsets_without_workloads_and_unknown_rule_hosts() -> None:
    text = service("reviews") + deployment("reviews", "v1") + REVIEWS_DR
    (finding,) = run(an.subsets_without_workloads, text)
    assert (finding.code, finding.path) == ("IST0173", "spec.subsets[1]")
    assert run(an.destination_rule_hosts, text) == []
    (unknown,) = run(an.destination_rule_hosts, REVIEWS_DR)
    assert unknown.code == "IST0174"


def test_analyze_runs_everything_errors_first() -> None:
    findings = an.analyze(load_documents(GATEWAY + REVIEWS_VS, "f.yaml").resources)
    codes = [f.code for f in findings]
    assert set(codes) >= {"IST0101", "PYM0001"}
    levels = [f.level for f in findings]
    assert levels == sorted(levels, key=[an.Level.ERROR, an.Level.WARNING, an.Level.INFO].index)


def test_bookinfo_as_shipped(samples: Path) -> None:
    kube = samples / "bookinfo/platform/kube/bookinfo.yaml"
    net = samples / "bookinfo/networking"
    resources = [
        *load_path(kube).resources,
        *load_path(net / "destination-rule-all.yaml").resources,
        *load_path(net / "virtual-service-all-v1.yaml").resources,
    ]
    findings = an.analyze(resources)
    # Every route resolves; only the subsets whose versions bookinfo.yaml does not deploy
    # (ratings v2*, details v2) select no pods.
    assert {f.code for f in findings} == {"IST0173"}
    assert sorted((f.resource.name, f.path) for f in findings) == [
        ("details", "spec.subsets[1]"),
        ("ratings", "spec.subsets[1]"),
        ("ratings", "spec.subsets[2]"),
        ("ratings", "spec.subsets[3]"),
    ]
