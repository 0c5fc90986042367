"""Route ``rate_limits`` actions → descriptors, as Envoy builds them (Istio's task shapes)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.route.v3 import route_components_pb2
from google.protobuf import json_format

from proxy.config.model_ratelimit import VhRateLimits
from proxy.config.translate.ratelimit import rate_limit_policy
from proxy.config.translate.support import check_supported
from proxy.routing.ratelimit_descriptors import RequestFacts, build_descriptors, route_policies
from pymesh.errors import UnsupportedError, ValidationError


def policy(*entries: dict[str, Any]):
    messages = []
    for index, entry in enumerate(entries):
        message = json_format.ParseDict(entry, route_components_pb2.RateLimit())
        check_supported(message, f"rate_limits[{index}]")
        messages.append(message)
    return rate_limit_policy(messages, "rate_limits")


def facts(path: bytes = b"/productpage", **kwargs: Any) -> RequestFacts:
    defaults: dict[str, Any] = {
        "headers": [(b"host", b"bookinfo.example.com"), (b"x-user", b"jason")],
        "method": b"GET",
        "path": path,
        "scheme": b"http",
        "remote_address": "127.0.9.200",
        "destination_cluster": "outbound|9080||productpage.default.svc.cluster.local",
        "local_cluster": "istio-ingressgateway.istio-system",
    }
    defaults.update(kwargs)
    return RequestFacts(**defaults)


API = {
    "header_value_match": {
        "descriptor_key": "PATH",
        "descriptor_value": "api",
        "headers": [
            {
                "name": ":path",
                "safe_regex_match": {"google_re2": {}, "regex": "/api/v1/products/[1-9]{1,2}"},
            }
        ],
    }
}


@pytest.mark.parametrize(
    ("entries", "request_facts", "expected"),
    [
        # Istio's task: the gateway's virtual host sends :path as PATH
        ([{"actions": [{"request_headers": {"header_name": ":path", "descriptor_key": "PATH"}}]}],
         facts(), [(("PATH", "/productpage"),)]),
        # the per-route "api" descriptor
        ([{"actions": [API]}], facts(b"/api/v1/products/7"), [(("PATH", "api"),)]),
        ([{"actions": [API]}], facts(b"/api/v1/products/0"), []),
        # a missing header drops the descriptor, unless skip_if_absent
        ([{"actions": [{"request_headers": {"header_name": "x-tenant", "descriptor_key": "t"}}]}],
         facts(), []),
        ([{"actions": [{"generic_key": {"descriptor_value": "g"}},
                       {"request_headers": {"header_name": "x-tenant", "descriptor_key": "t",
                                            "skip_if_absent": True}},
                       {"request_headers": {"header_name": "x-user", "descriptor_key": "user"}}]}],
         facts(), [(("generic_key", "g"), ("user", "jason"))]),
        # callers and destinations
        ([{"actions": [{"source_cluster": {}}, {"destination_cluster": {}}]}], facts(),
         [(("source_cluster", "istio-ingressgateway.istio-system"),
           ("destination_cluster", "outbound|9080||productpage.default.svc.cluster.local"))]),
        ([{"actions": [{"remote_address": {}}]}], facts(), [(("remote_address", "127.0.9.200"),)]),
        ([{"actions": [{"remote_address": {}}]}], facts(remote_address=""), []),
        # header_value_match with expect_match false, and the local task's default key
        ([{"actions": [{"header_value_match": {
            "descriptor_value": "productpage", "expect_match": True,
            "headers": [{"name": ":path", "string_match": {"prefix": "/ProductPage",
                                                            "ignore_case": True}}]}}]}],
         facts(), [(("header_match", "productpage"),)]),
        ([{"actions": [{"header_value_match": {
            "descriptor_value": "not-jason", "expect_match": False,
            "headers": [{"name": "x-user", "exact_match": "jason"}]}}]}], facts(), []),
        # one descriptor per entry; other stages are not asked
        ([{"actions": [{"generic_key": {"descriptor_value": "a"}}]},
          {"stage": 1, "actions": [{"generic_key": {"descriptor_value": "b"}}]},
          {"actions": [{"generic_key": {"descriptor_value": "c", "descriptor_key": "k"}}]}],
         facts(), [(("generic_key", "a"),), (("k", "c"),)]),
    ],
)  # fmt: skip
def test_descriptors(entries, request_facts, expected) -> None:
    assert build_descriptors(policy(*entries), 0, request_facts) == expected


def test_virtual_host_policies_follow_vh_rate_limits() -> None:
    route = policy({"actions": [{"generic_key": {"descriptor_value": "route"}}]})
    vhost = policy({"actions": [{"generic_key": {"descriptor_value": "vhost"}}]})
    assert route_policies(route, vhost, VhRateLimits.OVERRIDE) == route
    assert route_policies((), vhost, VhRateLimits.OVERRIDE) == vhost
    assert route_policies(route, vhost, VhRateLimits.INCLUDE) == route + vhost
    assert route_policies((), vhost, VhRateLimits.IGNORE) == ()


@pytest.mark.parametrize(
    ("entry", "error", "path"),
    [
        ({"stage": 11, "actions": [{"source_cluster": {}}]}, ValidationError,
         "rate_limits[0].stage"),
        ({"actions": []}, ValidationError, "rate_limits[0].actions"),
        ({"actions": [{"generic_key": {}}]}, ValidationError,
         "rate_limits[0].actions[0].generic_key.descriptor_value"),
        ({"actions": [{"masked_remote_address": {}}]}, UnsupportedError,
         "rate_limits[0].actions[0].masked_remote_address"),
        ({"actions": [{"source_cluster": {}}], "hits_addend": {"number": 2}}, UnsupportedError,
         "rate_limits[0].hits_addend"),
    ],
)  # fmt: skip
def test_bad_policies_name_their_path(entry, error, path) -> None:
    with pytest.raises(error) as info:
        policy(entry)
    assert info.value.path == path
