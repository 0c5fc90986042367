"""Tracing and access logging in each HCM, from MeshConfig's providers and the Telemetry API
(Istio's documentation examples), and Envoy accepting the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pilot.generate import CLUSTER_TYPE, LISTENER_TYPE
from pilot.model import MeshConfig
from tests.pilot.generate._envoy import envoy_validate, static_bootstrap
from tests.pilot.generate._mesh import BOOKINFO, Mesh, build_mesh

OBS = "docs-extracted/observability/"
MESH = MeshConfig.from_yaml(
    """
defaultConfig:
  envoyAccessLogService: {address: "127.0.0.1:9091"}
  tracing: {sampling: 1.0}
extensionProviders:
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
- name: otel-tracing
  opentelemetry: {service: otel.istio-system.svc.cluster.local, port: 4317}
defaultProviders:
  tracing: [zipkin]
"""
)


def hcms(mesh: Mesh, node: str) -> dict[str, dict[str, Any]]:
    """The HTTP connection manager of each HTTP listener of ``node``, by direction."""
    found = {}
    for name, listener in mesh.by_name(node, LISTENER_TYPE).items():
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                if f["name"].endswith("http_connection_manager"):
                    key = "inbound" if name == "virtualInbound" else "outbound"
                    found[key] = f["typed_config"]
    return found


def test_default_provider_and_mesh_sampling() -> None:
    mesh = build_mesh(BOOKINFO, mesh=MESH)
    for hcm in hcms(mesh, "productpage-v1").values():
        tracing = hcm["tracing"]
        assert tracing["random_sampling"] == {"value": 1.0}
        zipkin = tracing["provider"]["typed_config"]
        assert zipkin["collector_cluster"] == "tracing|zipkin"
        assert zipkin["collector_hostname"] == "zipkin.istio-system.svc.cluster.local"
        assert hcm["access_log"][0]["name"] == "envoy.access_loggers.http_grpc"
    clusters = mesh.by_name("productpage-v1", CLUSTER_TYPE)
    address = clusters["tracing|zipkin"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert address["endpoint"]["address"]["socket_address"]["port_value"] == 9411


def test_telemetry_sampling_and_custom_tags_from_the_docs() -> None:
    mesh = build_mesh(
        BOOKINFO,
        OBS + "tracing-telemetry-api/3-telemetry-mesh-default-custom-tag-environment.yaml",
        mesh=MESH,
    )
    tracing = hcms(mesh, "reviews-v1")["outbound"]["tracing"]
    assert tracing["random_sampling"] == {"value": 100.0}
    assert tracing["custom_tags"] == [
        {
            "tag": "cluster_id",
            "environment": {"name": "ISTIO_META_CLUSTER_ID", "default_value": "Kubernetes"},
        }
    ]


def test_workload_rules_per_direction_and_unsupported_providers(tmp_path: Path) -> None:
    rules = tmp_path / "telemetry.yaml"
    rules.write_text(
        """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ratings, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  tracing:
  - match: {mode: SERVER}
    randomSamplingPercentage: 0
  - match: {mode: CLIENT}
    disableSpanReporting: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: details, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  tracing:
  - providers: [{name: otel-tracing}]
"""
    )
    mesh = build_mesh(BOOKINFO, rules, mesh=MESH)
    ratings = hcms(mesh, "ratings-v1")
    # Percent{value: 0} (proto3 leaves the zero out): the field is set, so nothing is sampled
    assert ratings["inbound"]["tracing"]["random_sampling"] == {}
    assert "tracing" not in ratings["outbound"]
    # OpenTelemetry is not a tracer pymesh configures: untraced rather than half-configured
    assert all("tracing" not in h for h in hcms(mesh, "details-v1").values())
    assert hcms(mesh, "reviews-v1")["outbound"]["tracing"]["random_sampling"] == {"value": 1.0}


@pytest.mark.envoy
def test_envoy_accepts_the_telemetry_config(envoy_binary: str, tmp_path: Path) -> None:
    mesh = build_mesh(
        BOOKINFO,
        OBS + "tracing-telemetry-api/3-telemetry-mesh-default-custom-tag-environment.yaml",
        mesh=MESH,
    )
    ok, output = envoy_validate(
        envoy_binary, static_bootstrap(mesh, "reviews-v1"), tmp_path / "reviews"
    )
    assert ok, output
