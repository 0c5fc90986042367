"""The model's values: frozen, slotted, Envoy's defaults, matchers that compare bytes."""

from __future__ import annotations

import dataclasses
import re

import pytest

from proxy.config import model
from proxy.config.model import (
    Cluster,
    HttpConnectionManager,
    OutlierDetection,
    RetryPolicy,
    RouteAction,
    RouteActionType,
    StringMatcher,
    StringMatchKind,
)


def test_every_model_class_is_frozen_and_slotted() -> None:
    classes = [
        getattr(model, name)
        for name in model.__all__
        if dataclasses.is_dataclass(getattr(model, name))
    ]
    assert len(classes) > 60
    for cls in classes:
        params = cls.__dataclass_params__
        assert params.frozen, cls
        assert "__slots__" in cls.__dict__, cls


def test_values_cannot_change() -> None:
    cluster = Cluster("c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cluster.name = "d"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cluster.metadata["x"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("matcher", "value", "expected"),
    [
        (StringMatcher(StringMatchKind.EXACT, b"abc"), b"abc", True),
        (StringMatcher(StringMatchKind.EXACT, b"abc"), b"ABC", False),
        (StringMatcher(StringMatchKind.EXACT, b"abc", ignore_case=True), b"ABC", True),
        (StringMatcher(StringMatchKind.PREFIX, b"/api"), b"/api/v1", True),
        (StringMatcher(StringMatchKind.SUFFIX, b".com"), b"a.com", True),
        (StringMatcher(StringMatchKind.CONTAINS, b"mid"), b"amidst", True),
        (
            StringMatcher(StringMatchKind.REGEX, b"v[0-9]", regex=re.compile(b"v[0-9]")),
            b"v12",
            False,  # RE2 full match
        ),
    ],
)
def test_string_matcher(matcher: StringMatcher, value: bytes, expected: bool) -> None:
    assert matcher.matches(value) is expected


def test_envoy_defaults() -> None:
    action = RouteAction(RouteActionType.CLUSTER, cluster="c")
    assert action.timeout == 15.0
    retry = RetryPolicy()
    assert retry.num_retries == 1
    assert (retry.retry_back_off.base_interval, retry.retry_back_off.max_interval) == (0.025, 0.25)
    outlier = OutlierDetection()
    assert (outlier.consecutive_5xx, outlier.interval, outlier.base_ejection_time) == (
        5,
        10.0,
        30.0,
    )
    assert outlier.max_ejection_percent == 0.1
    assert outlier.enforcing_consecutive_gateway_failure == 0.0
    cluster = Cluster("c")
    assert cluster.ring_hash.minimum_ring_size == 1024
    assert cluster.ring_hash.maximum_ring_size == 8 * 1024 * 1024
    assert cluster.maglev.table_size == 65537
    assert cluster.least_request.choice_count == 2
    assert cluster.dns_refresh_rate == 5.0
    assert cluster.http_protocol_options.common.idle_timeout == 3600.0
    hcm = HttpConnectionManager("s")
    assert (hcm.server_name, hcm.stream_idle_timeout, hcm.max_request_headers_kb) == (
        b"envoy",
        300.0,
        60,
    )
