"""Proxy classes: equal keys must mean byte-equal resources, and a node field a generator reads
must split the class. Nodes differ in every field ``ProxyNode`` has; config reaches them
through every kind of selector (Sidecar, PeerAuthentication, EnvoyFilter proxy metadata)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from pilot.generate import TYPE_URLS, generate
from pilot.generate.classes import proxy_class
from pilot.model import ProxyNode
from pilot.model.proxy import freeze
from tests.pilot.generate._mesh import Mesh, build_mesh, gateway_node

EXTRA = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: canary-timeout, namespace: shop}
spec:
  configPatches:
  - applyTo: CLUSTER
    match: {context: SIDECAR_OUTBOUND, proxy: {metadata: {CANARY: "yes"}}}
    patch: {operation: MERGE, value: {connect_timeout: 3s}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict-v2, namespace: shop}
spec:
  selector: {matchLabels: {version: v2}}
  mtls: {mode: STRICT}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: edge, namespace: shop}
spec:
  workloadSelector: {labels: {tier: edge}}
  egress: [{hosts: ["./web.shop.svc.cluster.local"]}]
"""

WEB = {"app": "web", "version": "v1", "security.istio.io/tlsMode": "istio"}


def _web(
    ip: str,
    pod: str,
    *,
    labels: dict[str, str] = WEB,
    namespace: str = "shop",
    mode: str | None = None,
) -> ProxyNode:
    return ProxyNode.build(ip, pod, namespace, labels=labels, service_account="web", mode=mode)


def _variants() -> dict[str, ProxyNode]:
    a = _web("127.0.54.11", "web-v1-a")
    return {
        "a": a,
        # a second pod of the same Deployment: other address, id, pod name
        "b": _web("127.0.54.12", "web-v1-b"),
        # fields no generator reads
        "other-sa-locality-agent": dataclasses.replace(
            _web("127.0.54.13", "web-v1-c"),
            service_account="web-admin",
            locality="eu/west-1a",
            user_agent="envoy",
            workload_name="something-else",
        ),
        "canary": dataclasses.replace(
            _web("127.0.54.14", "web-v1-d"),
            metadata=freeze({**a.metadata, "CANARY": "yes", "INSTANCE_IPS": "127.0.54.14"}),
        ),
        "v2": _web("127.0.54.15", "web-v2-a", labels={**WEB, "version": "v2"}),
        "edge": _web("127.0.54.16", "web-v1-e", labels={**WEB, "tier": "edge"}),
        "process-a": _web("127.0.54.17", "web-v1-f", mode="process"),
        "process-b": _web("127.0.54.18", "web-v1-g", mode="process"),
        "no-service": _web("127.0.54.19", "tools-a", labels={"app": "tools"}),
        "no-service-2": _web("127.0.54.20", "tools-b", labels={"app": "tools"}),
        "other-namespace": _web("127.0.54.21", "web-v1-h", namespace="elsewhere"),
        "gateway-a": gateway_node("127.0.54.22"),
        "gateway-b": gateway_node("127.0.54.23"),
        # the same labels as "a", but not (yet) in the registry: it fronts no service
        UNREGISTERED: _web("127.0.54.24", "web-v1-i"),
    }


UNREGISTERED = "unregistered"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Mesh:
    extra = Path(tmp_path_factory.mktemp("classes")) / "extra.yaml"
    extra.write_text(EXTRA)
    registered = {k: v for k, v in _variants().items() if k != UNREGISTERED}
    return build_mesh("features.yaml", extra, extra=registered)


def _bytes(mesh: Mesh, node: ProxyNode, type_url: str) -> list[bytes]:
    return [m.SerializeToString(deterministic=True) for m in generate(mesh.ctx, node, type_url)]


@pytest.mark.parametrize("type_url", TYPE_URLS, ids=lambda t: t.rsplit(".", 1)[-1])
def test_equal_keys_always_mean_equal_resources(mesh: Mesh, type_url: str) -> None:
    nodes = _variants()
    output = {name: _bytes(mesh, node, type_url) for name, node in nodes.items()}
    keys = {name: proxy_class(mesh.ctx, node, type_url) for name, node in nodes.items()}
    shared = 0
    for x, y in itertools.combinations(nodes, 2):
        if keys[x] == keys[y]:
            assert output[x] == output[y], (x, y)
            shared += 1
    assert keys["a"] == keys["b"] == keys["other-sa-locality-agent"]
    assert keys["no-service"] == keys["no-service-2"]
    assert shared >= 4


@pytest.mark.parametrize(
    ("variant", "type_url", "reason"),
    [
        ("canary", TYPE_URLS[0], "an EnvoyFilter selects it by proxy metadata"),
        ("v2", TYPE_URLS[2], "a PeerAuthentication selects it by label (inbound STRICT)"),
        ("edge", TYPE_URLS[0], "a Sidecar narrows its egress"),
        ("process-a", TYPE_URLS[2], "process mode binds the pod address"),
        ("no-service", TYPE_URLS[2], "it fronts no service (no inbound listener chains)"),
        (UNREGISTERED, TYPE_URLS[0], "the same labels, but it fronts no service"),
        (UNREGISTERED, TYPE_URLS[2], "the same labels, but it fronts no service"),
        ("other-namespace", TYPE_URLS[3], "route domains are resolved from its namespace"),
    ],
)
def test_a_field_a_generator_reads_splits_the_class(
    mesh: Mesh, variant: str, type_url: str, reason: str
) -> None:
    nodes = _variants()
    base, other = nodes["a"], nodes[variant]
    assert _bytes(mesh, base, type_url) != _bytes(mesh, other, type_url), reason
    assert proxy_class(mesh.ctx, base, type_url) != proxy_class(mesh.ctx, other, type_url)


def test_process_mode_pods_share_what_does_not_name_their_address(mesh: Mesh) -> None:
    nodes = _variants()
    a, b = nodes["process-a"], nodes["process-b"]
    cds, eds, lds, rds, _ = TYPE_URLS
    for type_url in (eds, rds):
        assert proxy_class(mesh.ctx, a, type_url) == proxy_class(mesh.ctx, b, type_url)
    for type_url in (cds, lds):  # bound to / sourced from the pod's own address
        assert proxy_class(mesh.ctx, a, type_url) != proxy_class(mesh.ctx, b, type_url)
        assert _bytes(mesh, a, type_url) != _bytes(mesh, b, type_url)
