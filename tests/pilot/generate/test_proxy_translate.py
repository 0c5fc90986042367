"""pymesh's own proxy accepts what pilot generates: every resource goes through the proxy's
translator (``proxy.config.translate``), the code its xDS client runs on a push.

The proxy rejects a few Istio defaults outright; those are listed in
``KNOWN_GAPS``, each checked to still be a gap so the list shrinks when the proxy grows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from pilot.generate import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE
from pilot.model import MeshConfig
from tests.pilot.generate._mesh import BOOKINFO, Mesh, build_mesh, credentials

translate = pytest.importorskip("proxy.config.translate")

NET = "bookinfo/networking/"
#: Istio's default retryOn minus the gRPC-only conditions the proxy refuses.
HTTP1_RETRY_ON = "connect-failure,refused-stream,retriable-status-codes,503"

# What pilot writes that the proxy refuses (none now: the agent's SDS is served).
KNOWN_GAPS: dict[str, str] = {}


def _translators() -> dict[str, Callable[[Any], Any]]:
    registry = translate.default_registry()
    return {
        LISTENER_TYPE: lambda m: translate.translate_listener(m, registry, m.name),
        ROUTE_TYPE: lambda m: translate.translate_route_configuration(m, registry, m.name),
        # as the xDS client: HTTP/2 clusters serve gRPC side calls (the mixer ALS cluster)
        CLUSTER_TYPE: lambda m: translate.translate_cluster(m, m.name, allow_http2=True),
        ENDPOINT_TYPE: lambda m: translate.translate_cluster_load_assignment(m, m.cluster_name),
        SECRET_TYPE: lambda m: translate.translate_secret(m, m.name),
    }


def _name(message: Any, index: int) -> str:
    return str(getattr(message, "name", "") or getattr(message, "cluster_name", "") or index)


def _rejections(mesh: Mesh, nodes: list[str]) -> Iterator[str]:
    for node in nodes:
        translated: dict[str, dict[str, Any]] = {}
        for type_url, fn in _translators().items():
            for index, message in enumerate(mesh.generate(node, type_url)):
                try:
                    translated.setdefault(type_url, {})[_name(message, index)] = fn(message)
                except Exception as e:
                    yield f"{node}: {type(e).__name__}: {e}"


def _meshes(retry_on: str | None) -> Iterator[tuple[Mesh, list[str]]]:
    base = MeshConfig() if retry_on is None else MeshConfig(default_retry_on=retry_on)
    yield (
        build_mesh(
            BOOKINFO,
            NET + "destination-rule-all.yaml",
            NET + "virtual-service-reviews-jason-v2-v3.yaml",
            NET + "bookinfo-gateway.yaml",
            mesh=base,
        ),
        ["productpage-v1", "reviews-v2", "gateway"],
    )
    yield (
        build_mesh(
            BOOKINFO,
            NET + "destination-rule-all.yaml",
            NET + "virtual-service-reviews-80-20.yaml",
            mode="process",
            mesh=base,
        ),
        ["productpage-v1", "reviews-v1"],
    )
    yield build_mesh("features.yaml", mesh=base), ["web-v1", "api-v1", "db-v1"]
    # telemetry: access logs to mixer over its HTTP/2 (gRPC) cluster, traces to Zipkin
    reporting = replace(base, mixer_address="127.0.0.1:9091", zipkin_address="127.0.0.1:9411")
    yield build_mesh(BOOKINFO, mode="process", mesh=reporting), ["productpage-v1"]
    yield build_mesh("features.yaml", mesh=reporting), ["web-v1", "db-v1"]  # TCP: tcp_grpc
    yield build_mesh("features.yaml", mode="process", mesh=base), ["web-v1", "api-v2"]
    yield build_mesh("egress.yaml", "features.yaml", mesh=base), ["web-v1"]
    yield (
        build_mesh("gateway-tls.yaml", creds=credentials("gateway-tls.yaml"), mesh=base),
        ["gateway"],
    )
    # Telemetry customTags on the spans of both directions
    traced = MeshConfig.from_yaml(
        """
extensionProviders:
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
defaultProviders: {tracing: [zipkin]}
"""
    )
    yield build_mesh(BOOKINFO, "telemetry-custom-tags.yaml", mesh=traced), ["reviews-v1"]
    # sniffed ports: http_inspector (filter_disabled inbound), HTTP and TCP chains per port
    yield build_mesh("sniffing.yaml", mesh=base, mtls=True), ["client", "echo"]


def _unknown(rejections: list[str]) -> list[str]:
    patterns = [re.compile(p) for p in KNOWN_GAPS.values()]
    return [r for r in rejections if not any(p.search(r) for p in patterns)]


def test_proxy_accepts_everything_but_the_known_gaps() -> None:
    rejections = [r for mesh, nodes in _meshes(None) for r in _rejections(mesh, nodes)]
    assert not _unknown(rejections), "\n".join(_unknown(rejections))


def test_proxy_accepts_everything_with_http1_retry_conditions() -> None:
    """With the gRPC retry conditions left out (``defaultHttpRetryPolicy.retryOn`` in
    mesh.yaml), the proxy takes every resource the Bookinfo and fixture meshes produce,
    HTTP/2 upstreams (the fixture's gRPC port) included."""
    rejections = [r for mesh, nodes in _meshes(HTTP1_RETRY_ON) for r in _rejections(mesh, nodes)]
    assert not rejections, "\n".join(rejections)


def _gap_mesh(gap: str) -> tuple[Mesh, list[str]]:
    if gap.startswith("retry_on"):
        return build_mesh(BOOKINFO), ["productpage-v1"]
    assert gap.startswith("workload certificates"), gap
    return build_mesh(BOOKINFO, NET + "destination-rule-all-mtls.yaml"), ["productpage-v1"]


@pytest.mark.parametrize("gap", sorted(KNOWN_GAPS))
def test_known_gap_is_still_a_gap(gap: str) -> None:
    mesh, nodes = _gap_mesh(gap)
    pattern = re.compile(KNOWN_GAPS[gap])
    rejected = [r for r in _rejections(mesh, nodes) if pattern.search(r)]
    assert rejected, f"the proxy now accepts {gap}: remove it from KNOWN_GAPS"


def test_proxy_accepts_istio_mutual_with_certificates_from_the_agent() -> None:
    """DestinationRule ISTIO_MUTUAL: the workload certificate and root from the agent's SDS
    (``api_config_source`` to ``sds-grpc``), SAN matchers, ALPN ``istio``."""
    mesh = build_mesh(BOOKINFO, NET + "destination-rule-all-mtls.yaml")
    assert list(_rejections(mesh, ["productpage-v1"])) == []
