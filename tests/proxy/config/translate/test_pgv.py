"""protoc-gen-validate rules read from the Envoy protos."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.route.v3 import route_components_pb2
from google.protobuf import json_format  # type: ignore[import-untyped]

from proxy.config.translate.pgv import check_message_rules
from pymesh.errors import ValidationError


def _fails(message: object, path: str, text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_message_rules(message, "")
    assert caught.value.path == path
    assert text in caught.value.message


def test_string_min_len() -> None:
    _fails(cluster_pb2.Cluster(), "name", "at least 1")


def test_duration_greater_than_zero() -> None:
    cluster = json_format.ParseDict({"name": "a", "connect_timeout": "0s"}, cluster_pb2.Cluster())
    _fails(cluster, "connect_timeout", "greater than")


def test_enum_defined_only() -> None:
    cluster = cluster_pb2.Cluster(name="a")
    cluster.lb_policy = 42
    _fails(cluster, "lb_policy", "defined enum")


def test_required_oneof() -> None:
    _fails(route_components_pb2.Route(), "action", "one of [route")


def test_numeric_bounds() -> None:
    _fails(address_pb2.SocketAddress(address="1.2.3.4", port_value=70000), "port_value", "less")


def test_wrapped_values_are_checked_only_when_set() -> None:
    weight = route_components_pb2.WeightedCluster.ClusterWeight(name="a")
    check_message_rules(weight, "")


def test_repeated_min_items_and_items() -> None:
    vhost = route_components_pb2.VirtualHost(name="v")
    _fails(vhost, "domains", "at least 1 item")
    vhost.domains.append("ok")
    vhost.request_headers_to_remove.append("bad\nname")
    _fails(vhost, "request_headers_to_remove[0]", "header names")


def test_oneof_members_are_checked_only_when_chosen() -> None:
    # StringMatcher.prefix has min_len 1, but only when prefix is the chosen matcher.
    matcher = json_format.ParseDict(
        {"exact": ""}, route_components_pb2.HeaderMatcher().string_match
    )
    check_message_rules(matcher, "")
