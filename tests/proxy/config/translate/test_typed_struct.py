"""Typed configs given as ``TypedStruct`` (as Istio's rate limit task writes them) translate
like the message they name; a mismatch or a bad field is refused with its path."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2, json_format
from udpa.type.v1 import typed_struct_pb2

from proxy.config.model import LocalRateLimitConfig
from proxy.config.translate.filters import default_registry, typed_per_filter_config
from pymesh.errors import UnsupportedError, ValidationError

LOCAL = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
ALL = {"numerator": 100, "denominator": "HUNDRED"}
TASK_VALUE = {
    "stat_prefix": "http_local_rate_limiter",
    "token_bucket": {"max_tokens": 4, "tokens_per_fill": 4, "fill_interval": "60s"},
    "filter_enabled": {"runtime_key": "e", "default_value": ALL},
    "filter_enforced": {"runtime_key": "f", "default_value": ALL},
    "response_headers_to_add": [
        {"append": False, "header": {"key": "x-local-rate-limit", "value": "true"}}
    ],
}


def typed_struct(type_url: str, value: dict) -> any_pb2.Any:
    message = typed_struct_pb2.TypedStruct(type_url=type_url)
    json_format.ParseDict(value, message.value)
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def test_filter_and_per_route_configs_from_typed_structs() -> None:
    registry = default_registry()
    _, config = registry.translate(
        "envoy.filters.http.local_ratelimit", typed_struct(LOCAL, TASK_VALUE), "f"
    )
    assert isinstance(config, LocalRateLimitConfig)
    assert config.token_bucket is not None and config.token_bucket.max_tokens == 4
    assert config.filter_enforced == 1.0
    per_route = typed_per_filter_config(
        {"envoy.filters.http.local_ratelimit": typed_struct(LOCAL, TASK_VALUE)}, registry, "r"
    )
    assert isinstance(per_route["envoy.filters.http.local_ratelimit"], LocalRateLimitConfig)


@pytest.mark.parametrize(
    ("type_url", "value", "error", "path"),
    [
        (LOCAL, {**TASK_VALUE, "token_bucket": {"max_tokens": "four"}}, ValidationError,
         "f.typed_config.value"),
        (LOCAL, {**TASK_VALUE, "local_cluster_rate_limit": {}}, UnsupportedError,
         "f.typed_config.value.local_cluster_rate_limit"),
        ("type.googleapis.com/envoy.extensions.filters.http.nothing.v3.Nothing", {},
         UnsupportedError, "f"),
    ],
)  # fmt: skip
def test_bad_typed_structs(type_url: str, value: dict, error: type, path: str) -> None:
    with pytest.raises(error) as info:
        default_registry().translate(
            "envoy.filters.http.local_ratelimit", typed_struct(type_url, value), "f"
        )
    assert info.value.path == path
