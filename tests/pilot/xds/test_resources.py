"""Encoding responses: name filtering, placeholders, stable hashes."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2

from pilot.xds.metrics import XdsMetrics, short_type
from pilot.xds.resources import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    ROUTE_TYPE,
    encode_resources,
    resource_name,
    response,
)


def test_names_and_placeholders() -> None:
    clas = [endpoint_pb2.ClusterLoadAssignment(cluster_name=n) for n in ("a", "b")]
    enc = encode_resources(ENDPOINT_TYPE, clas, names={"b", "zz"})
    assert enc.names == ("b", "zz")
    assert [resource_name(m) for m in enc.messages] == ["b", "zz"]
    routes = encode_resources(ROUTE_TYPE, [], names={"80"})
    assert route_pb2.RouteConfiguration.FromString(routes.resources[0].value).name == "80"
    assert encode_resources(CLUSTER_TYPE, [], names={"x"}).names == ()


def test_hash_is_stable_and_content_sensitive() -> None:
    def clusters(timeout: int) -> list[cluster_pb2.Cluster]:
        c = cluster_pb2.Cluster(name="a")
        c.connect_timeout.seconds = timeout
        return [c]

    one, two = (
        encode_resources(CLUSTER_TYPE, clusters(1)),
        encode_resources(CLUSTER_TYPE, clusters(1)),
    )
    assert one.digest == two.digest
    assert encode_resources(CLUSTER_TYPE, clusters(2)).digest != one.digest
    reply = response(CLUSTER_TYPE, one, version="v1", nonce="n", identifier="pilot")
    assert reply.resources[0].type_url == CLUSTER_TYPE
    assert cluster_pb2.Cluster.FromString(reply.resources[0].value).name == "a"


def test_metrics_text() -> None:
    m = XdsMetrics()
    m.pushed(CLUSTER_TYPE)
    m.rejected(ROUTE_TYPE)
    m.connected = 3
    for v in (0.05, 0.4, 2.0):
        m.convergence.observe(v)
    text = m.render()
    assert 'pilot_xds_pushes{type="cds"} 1' in text
    assert 'pilot_xds_pushes{type="lds"} 0' in text
    assert 'pilot_total_xds_rejects{type="rds"} 1' in text
    assert "pilot_xds 3" in text
    assert 'pilot_proxy_convergence_time_bucket{le="0.1"} 1' in text
    assert 'pilot_proxy_convergence_time_bucket{le="0.5"} 2' in text
    assert 'pilot_proxy_convergence_time_bucket{le="+Inf"} 3' in text
    assert "pilot_proxy_convergence_time_count 3" in text
    assert short_type("type.googleapis.com/foo.Bar") == "foo.Bar"
