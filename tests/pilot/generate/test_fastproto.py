"""The push path's dict-to-proto parser against ``json_format.ParseDict`` on the shapes that
are easy to get wrong (the conftest compares the two on every generated resource too)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from pilot.generate import fastproto
from pilot.generate.common import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE
from tests.pilot.generate._mesh import BOOKINFO, build_mesh

CASES: list[tuple[type[Any], dict[str, Any]]] = [
    # a zero duration and an empty message are still present
    (cluster_pb2.Cluster, {"name": "a", "connect_timeout": "0s", "common_lb_config": {}}),
    # wrappers, enums by name and by number, int64 as string, maps, Struct metadata
    (
        cluster_pb2.Cluster,
        {
            "name": "b",
            "type": "EDS",
            "lb_policy": 1,
            "per_connection_buffer_limit_bytes": 32768,
            "circuit_breakers": {"thresholds": [{"max_connections": 10, "priority": "HIGH"}]},
            "outlier_detection": {"consecutive_5xx": 5, "base_ejection_time": "30s"},
            "metadata": {"filter_metadata": {"istio": {"default_original_port": 9080}}},
            "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 300}},
            "ignore_health_on_host_removal": False,
        },
    ),
    # camelCase keys, Any with nested Any, a null field
    (
        listener_pb2.Listener,
        {
            "name": "l",
            "address": {"socketAddress": {"address": "1.2.3.4", "portValue": 80}},
            "filterChains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters."
                                "network.http_connection_manager.v3.HttpConnectionManager",
                                "stat_prefix": "x",
                                "rds": None,
                                "http_filters": [
                                    {
                                        "name": "router",
                                        "typed_config": {
                                            "@type": "type.googleapis.com/envoy.extensions."
                                            "filters.http.router.v3.Router"
                                        },
                                    }
                                ],
                            },
                        }
                    ]
                }
            ],
        },
    ),
]


@pytest.mark.parametrize(("message", "body"), CASES)
def test_same_bytes_as_parse_dict(message: type[Any], body: dict[str, Any]) -> None:
    fast = fastproto.parse(body, message())
    slow = json_format.ParseDict(body, message())
    assert fast.SerializeToString() == slow.SerializeToString()
    assert fast == slow


def test_errors_are_parse_dicts() -> None:
    with pytest.raises(json_format.ParseError, match="nmae"):
        fastproto.parse({"nmae": "x"}, cluster_pb2.Cluster())
    with pytest.raises(json_format.ParseError):
        fastproto.parse({"connect_timeout": "soon"}, cluster_pb2.Cluster())


def test_generated_resources_are_checked_and_shared_between_alike_proxies(
    same_bytes_as_parse_dict: list[int],
) -> None:
    mesh = build_mesh(BOOKINFO, "bookinfo/networking/destination-rule-all.yaml")
    made = sum(
        len(mesh.generate(node, type_url))
        for node in mesh.nodes
        for type_url in (CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE)
    )
    # every parse is checked; proxies whose resources are alike share one parse per push
    assert 20 < same_bytes_as_parse_dict[0] < made
    v1, v2 = mesh.generate("reviews-v1", CLUSTER_TYPE), mesh.generate("reviews-v2", CLUSTER_TYPE)
    outbound = [c for c in v1 if c.name.startswith("outbound|")]
    assert outbound and all(any(c is d for d in v2) for c in outbound)
