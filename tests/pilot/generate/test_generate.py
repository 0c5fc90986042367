"""The contract the ADS server relies on: ``generate(ctx, node, type_url)`` is pure and
returns the whole state of the world for the type."""

from __future__ import annotations

import pytest

from pilot.generate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    TYPE_URLS,
    generate,
)
from tests.pilot.generate._mesh import BOOKINFO, build_mesh


def test_type_urls() -> None:
    assert LISTENER_TYPE == "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert ROUTE_TYPE == "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    assert CLUSTER_TYPE == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    assert ENDPOINT_TYPE == ("type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment")
    assert SECRET_TYPE == ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret")
    assert TYPE_URLS == (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE)


def test_unknown_type_is_refused() -> None:
    mesh = build_mesh(BOOKINFO)
    with pytest.raises(ValueError, match="unsupported xDS type"):
        generate(mesh.ctx, mesh.nodes["productpage-v1"], "type.googleapis.com/x.Y")


@pytest.mark.parametrize("mode", [None, "process"])
def test_deterministic_and_pure(mode: str | None) -> None:
    a = build_mesh("features.yaml", "egress.yaml", mode=mode)
    b = build_mesh("features.yaml", "egress.yaml", mode=mode)
    for type_url in TYPE_URLS:
        first = generate(a.ctx, a.nodes["web-v1"], type_url)
        assert first == generate(a.ctx, a.nodes["web-v1"], type_url)
        assert first == generate(b.ctx, b.nodes["web-v1"], type_url)
        names = [m.cluster_name if type_url == ENDPOINT_TYPE else m.name for m in first]
        assert len(names) == len(set(names)), f"duplicate names in {type_url}"
    assert a.ctx.version == b.ctx.version


def test_eds_covers_exactly_the_eds_clusters() -> None:
    mesh = build_mesh("features.yaml", "egress.yaml")
    eds = {c.name for c in mesh.generate("api-v1", CLUSTER_TYPE) if c.type == c.EDS}
    assert {a.cluster_name for a in mesh.generate("api-v1", ENDPOINT_TYPE)} == eds
