"""RDS resources: route configurations translated on their own (paths relative to them)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format  # type: ignore[import-untyped]

from proxy.config.model import (
    DirectResponseAction,
    HashPolicyKind,
    HeaderAppendAction,
    PathMatchKind,
    RedirectAction,
    RequireTls,
    RouteAction,
    RouteActionType,
    StringMatchKind,
)
from proxy.config.translate import default_registry, translate_route_configuration
from pymesh.errors import UnsupportedError, ValidationError


def _translate(routes: list[dict[str, Any]], **vhost: Any) -> Any:
    proto = json_format.ParseDict(
        {
            "name": "r",
            "virtual_hosts": [{"name": "v", "domains": ["Example.COM"], "routes": routes, **vhost}],
        },
        route_pb2.RouteConfiguration(),
    )
    return translate_route_configuration(proto, default_registry())


def _action(route: dict[str, Any]) -> Any:
    return _translate([route]).virtual_hosts[0].routes[0].action


def test_domains_are_lower_case_bytes_and_vhost_options() -> None:
    result = _translate(
        [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}],
        require_tls="EXTERNAL_ONLY",
        include_request_attempt_count=True,
    )
    vhost = result.virtual_hosts[0]
    assert vhost.domains == (b"example.com",)
    assert vhost.require_tls is RequireTls.EXTERNAL_ONLY
    assert vhost.include_request_attempt_count
    assert result.validate_clusters is None
    assert result.cluster_names == frozenset({"c"})


def test_case_insensitive_prefix_is_pre_lowered() -> None:
    route = _translate(
        [{"match": {"prefix": "/API", "case_sensitive": False}, "route": {"cluster": "c"}}]
    )
    match = route.virtual_hosts[0].routes[0].match
    assert match.path_kind is PathMatchKind.PREFIX
    assert match.path == b"/api"
    assert not match.case_sensitive


def test_header_and_query_matchers() -> None:
    route = _translate(
        [
            {
                "match": {
                    "path": "/x",
                    "headers": [
                        {"name": "X-Version", "string_match": {"prefix": "V", "ignore_case": True}},
                        {"name": "x-debug"},
                        {
                            "name": "x-n",
                            "range_match": {"start": 1, "end": 5},
                            "invert_match": True,
                        },
                        {"name": "x-old", "exact_match": "a"},
                    ],
                    "query_parameters": [{"name": "q", "string_match": {"exact": "1"}}],
                },
                "route": {"cluster": "c"},
            }
        ]
    )
    match = route.virtual_hosts[0].routes[0].match
    version, debug, number, old = match.headers
    assert version.name == b"x-version"
    assert version.string_match.value == b"v" and version.string_match.ignore_case
    assert version.string_match.matches(b"V1.2")
    assert debug.present_match is True
    assert number.range_match.start == 1 and number.invert_match
    assert old.string_match.kind is StringMatchKind.EXACT
    assert match.query_parameters[0].string_match.matches(b"1")


def test_route_action_defaults_and_values() -> None:
    action = _action({"match": {"prefix": "/"}, "route": {"cluster": "c", "timeout": "0s"}})
    assert isinstance(action, RouteAction)
    assert action.kind is RouteActionType.CLUSTER
    assert action.timeout == 0.0  # 0 disables, as in Envoy
    assert action.retry_policy is None
    default = _action({"match": {"prefix": "/"}, "route": {"cluster": "c"}})
    assert default.timeout == 15.0


def test_retry_policy_translation() -> None:
    action = _action(
        {
            "match": {"prefix": "/"},
            "route": {
                "cluster": "c",
                "retry_policy": {
                    "retry_on": "5xx, connect-failure,not-a-condition",
                    "retry_back_off": {"base_interval": "0.1s"},
                    "retriable_headers": [{"name": "x-retry", "present_match": True}],
                },
            },
        }
    )
    policy = action.retry_policy
    assert policy.retry_on == frozenset({"5xx", "connect-failure"})  # Envoy ignores unknowns
    assert policy.num_retries == 1
    assert policy.retry_back_off.base_interval == pytest.approx(0.1)
    assert policy.retry_back_off.max_interval == pytest.approx(1.0)  # 10 x base
    assert policy.retriable_headers[0].name == b"x-retry"


def test_grpc_retry_conditions_are_kept() -> None:
    """Istio's default retryOn names gRPC conditions: they retry on a trailers-only
    grpc-status."""
    action = _action(
        {
            "match": {"prefix": "/"},
            "route": {
                "cluster": "c",
                "retry_policy": {"retry_on": "connect-failure,cancelled,unavailable"},
            },
        }
    )
    retry_on = action.retry_policy.retry_on
    assert retry_on == frozenset({"connect-failure", "cancelled", "unavailable"})


def test_unknown_retry_host_predicate_is_unsupported() -> None:
    with pytest.raises(UnsupportedError, match="retry host predicate"):
        _action(
            {
                "match": {"prefix": "/"},
                "route": {
                    "cluster": "c",
                    "retry_policy": {
                        "retry_host_predicate": [
                            {"name": "envoy.retry_host_predicates.omit_canary_hosts"}
                        ]
                    },
                },
            }
        )


def test_back_off_max_below_base_is_invalid() -> None:
    with pytest.raises(ValidationError, match="max_interval"):
        _action(
            {
                "match": {"prefix": "/"},
                "route": {
                    "cluster": "c",
                    "retry_policy": {
                        "retry_back_off": {"base_interval": "1s", "max_interval": "0.5s"}
                    },
                },
            }
        )


def test_redirect_and_direct_response() -> None:
    redirect = _action(
        {
            "match": {"prefix": "/"},
            "redirect": {"https_redirect": True, "response_code": "PERMANENT_REDIRECT"},
        }
    )
    assert isinstance(redirect, RedirectAction)
    assert redirect.scheme_redirect == b"https"
    assert redirect.response_code == 308
    direct = _action(
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 404, "body": {"inline_bytes": "bm9wZQ=="}},
        }
    )
    assert direct == DirectResponseAction(404, b"nope")


def test_direct_response_body_limit() -> None:
    with pytest.raises(ValidationError, match="response body size is 5000 bytes"):
        _action(
            {
                "match": {"prefix": "/"},
                "direct_response": {"status": 200, "body": {"inline_string": "x" * 5000}},
            }
        )


def test_hash_policies_and_header_options() -> None:
    route = (
        _translate(
            [
                {
                    "match": {"prefix": "/"},
                    "route": {
                        "cluster": "c",
                        "hash_policy": [{"query_parameter": {"name": "user"}, "terminal": True}],
                    },
                    "request_headers_to_add": [
                        {"header": {"key": "X-A", "value": "1"}, "append": False},
                        {
                            "header": {"key": "x-b", "value": "100%%"},
                            "append_action": "ADD_IF_ABSENT",
                        },
                    ],
                    "response_headers_to_remove": ["X-Powered-By"],
                }
            ]
        )
        .virtual_hosts[0]
        .routes[0]
    )
    policy = route.action.hash_policy[0]
    assert (
        policy.kind is HashPolicyKind.QUERY_PARAMETER and policy.name == b"user" and policy.terminal
    )
    first, second = route.request_headers_to_add
    assert (
        first.key == b"x-a" and first.append_action is HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
    )
    assert not second.dynamic  # %% is a literal percent sign
    assert route.response_headers_to_remove == (b"x-powered-by",)


def test_append_and_append_action_together_are_invalid() -> None:
    with pytest.raises(ValidationError, match="Both append and append_action"):
        _translate(
            [
                {
                    "match": {"prefix": "/"},
                    "route": {"cluster": "c"},
                    "request_headers_to_add": [
                        {
                            "header": {"key": "x", "value": "1"},
                            "append": True,
                            "append_action": "ADD_IF_ABSENT",
                        }
                    ],
                }
            ]
        )


def test_unsupported_route_field_path_is_relative_to_the_resource() -> None:
    with pytest.raises(UnsupportedError) as caught:
        _translate(
            [
                {
                    "match": {"prefix": "/"},
                    "route": {
                        "cluster": "c",
                        "rate_limits": [{"actions": [{"masked_remote_address": {}}]}],
                    },
                }
            ]
        )
    assert caught.value.path == (
        "virtual_hosts[0].routes[0].route.rate_limits[0].actions[0].masked_remote_address"
    )
    assert caught.value.source is None


def test_max_stream_duration_with_grpc_timeout_header_fields() -> None:
    action = _action(
        {
            "match": {"prefix": "/"},
            "route": {
                "cluster": "c",
                "max_stream_duration": {
                    "max_stream_duration": "2s",
                    "grpc_timeout_header_max": "1.5s",
                    "grpc_timeout_header_offset": "0.1s",
                },
            },
        }
    )
    limits = action.max_stream_duration
    assert (limits.max_stream_duration, limits.grpc_timeout_header_max) == (2.0, 1.5)
    assert limits.grpc_timeout_header_offset == pytest.approx(0.1)
