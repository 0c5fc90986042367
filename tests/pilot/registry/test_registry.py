from __future__ import annotations

from pilot.model import ProxyNode
from pilot.registry import Registry, protocol_of
from pymesh.config.loader import load_documents
from tests.pilot.generate._mesh import BOOKINFO, load, workload_nodes

SVC = ".default.svc.cluster.local"


def endpoints(registry: Registry, host: str, port: int) -> list[tuple[str, int]]:
    return [(i.endpoint.address, i.endpoint.port) for i in registry.instances(host, port)]


def test_bookinfo_services_without_proxies_have_no_endpoints() -> None:
    registry = Registry.build(load(BOOKINFO))
    assert [s.hostname for s in registry.services] == [
        f"{n}{SVC}" for n in ("details", "productpage", "ratings", "reviews")
    ]
    reviews = registry.service_by_host(f"reviews{SVC}")
    assert reviews is not None and reviews.ports[0].protocol == "HTTP"
    assert registry.instances(reviews, 9080) == ()


def test_connected_sidecars_are_endpoints_of_the_services_selecting_them() -> None:
    resources = load(BOOKINFO)
    nodes = workload_nodes(resources)
    registry = Registry.build(resources, nodes.values())
    assert endpoints(registry, f"reviews{SVC}", 9080) == [
        (nodes[f"reviews-v{i}"].ip, 9080) for i in (1, 2, 3)
    ]
    inst = registry.instances(f"reviews{SVC}", 9080)[1]
    assert inst.endpoint.labels["version"] == "v2"
    assert inst.endpoint.service_account == "bookinfo-reviews"
    assert inst.endpoint.sidecar == "iptables"
    assert [i.service.hostname for i in registry.proxy_instances(nodes["ratings-v1"])] == [
        f"ratings{SVC}"
    ]


def test_target_ports_numeric_and_named() -> None:
    resources = load("httpbin/httpbin.yaml", "features.yaml")
    nodes = workload_nodes(resources, mode="process")
    registry = Registry.build(resources, nodes.values())
    assert endpoints(registry, f"httpbin{SVC}", 8000) == [(nodes["httpbin"].ip, 8080)]
    # targetPort "web" is a container port name: each Deployment says which number it is.
    api = "api.shop.svc.cluster.local"
    assert sorted(endpoints(registry, api, 8080)) == [
        (nodes["api-v1"].ip, 8081),
        (nodes["api-v2"].ip, 8082),
    ]
    assert {i.endpoint.sidecar for i in registry.instances(api, 8080)} == {"process"}
    service = registry.service_by_host(api)
    assert service is not None and service.address == "10.96.0.20"
    assert [p.protocol for p in service.ports] == ["HTTP", "GRPC"]


def test_proxies_in_other_namespaces_or_without_labels_are_not_endpoints() -> None:
    resources = load(BOOKINFO)
    stranger = ProxyNode.build("127.0.34.2", "reviews-x", "other", labels={"app": "reviews"})
    unlabelled = ProxyNode.build("127.0.34.3", "reviews-y", "default")
    registry = Registry.build(resources, [stranger, unlabelled])
    assert registry.instances(f"reviews{SVC}", 9080) == ()


def test_workload_entries_and_service_entries() -> None:
    resources = (
        load("egress.yaml")
        + load_documents(
            """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: default}
spec: {address: 10.20.0.1, labels: {app: sleep}, serviceAccount: vm, locality: eu/1}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vms, namespace: default}
spec:
  hosts: [vms.internal]
  ports: [{number: 7000, name: tcp, protocol: TCP, targetPort: 7001}]
  workloadSelector: {labels: {app: sleep}}
  resolution: STATIC
"""
        ).resources
    )
    node = ProxyNode.build("127.0.34.9", "sleep-0", "default", labels={"app": "sleep"})
    registry = Registry.build(resources, [node])
    # Kubernetes Services select WorkloadEntries too.
    assert endpoints(registry, f"sleep{SVC}", 80) == [("10.20.0.1", 80), ("127.0.34.9", 80)]
    assert endpoints(registry, "vms.internal", 7000) == [("10.20.0.1", 7001), ("127.0.34.9", 7001)]
    assert endpoints(registry, "httpbin.org", 80) == [("httpbin.org", 80)]
    assert endpoints(registry, "legacy.internal", 8080) == [
        ("10.10.1.1", 18080),
        ("10.10.1.2", 28080),
    ]
    assert endpoints(registry, "*.example.org", 80) == []
    legacy = registry.service_by_host("legacy.internal")
    assert legacy is not None and not legacy.mesh_external and legacy.resolution == "STATIC"
    google = registry.service_by_host("maps.google.com")
    assert google is not None and google.ports[0].protocol == "HTTPS"
    googleapis = registry.service_by_host("www.googleapis.com")
    assert googleapis is not None and googleapis.resolution == "DNS_ROUND_ROBIN"


def test_kubernetes_service_shadows_a_service_entry_for_the_same_host() -> None:
    resources = (
        load(BOOKINFO)
        + load_documents(
            f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shadow, namespace: default}}
spec: {{hosts: [reviews{SVC}], ports: [{{number: 1, name: tcp}}], resolution: DNS}}
"""
        ).resources
    )
    service = Registry.build(resources).service_by_host(f"reviews{SVC}")
    assert service is not None and service.origin == "Kubernetes"


def test_version_follows_the_content() -> None:
    resources = load(BOOKINFO)
    nodes = list(workload_nodes(resources).values())
    assert Registry.build(resources, nodes).version == Registry.build(resources, nodes).version
    assert Registry.build(resources, nodes[:-1]).version != Registry.build(resources, nodes).version


def test_protocol_selection() -> None:
    assert protocol_of("http-web") == "HTTP"
    assert protocol_of("grpc-web") == "GRPC-WEB"
    assert protocol_of("tcp-mysql") == "TCP"
    assert protocol_of("", "HTTPS") == "HTTPS"
    assert protocol_of("web") == "UNSUPPORTED"
    assert protocol_of("web", "kubernetes.io/h2c") == "HTTP2"
