"""The reference ratelimit service's YAML format: what loads, what matches, what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixer.ratelimit.config import ConfigFile, RateLimitConfig, Unit, load_config
from pymesh.errors import UnsupportedError, ValidationError

SHARED = Path(__file__).parents[3] / ".." / "shared"
TASK_DIR = SHARED / "istio-samples/docs-extracted/policy/rate-limit"

TASK_CONFIG = """
domain: ratelimit
descriptors:
  - key: PATH
    value: "/productpage"
    rate_limit:
      unit: minute
      requests_per_unit: 1
  - key: PATH
    value: "api"
    rate_limit:
      unit: minute
      requests_per_unit: 2
  - key: PATH
    rate_limit:
      unit: minute
      requests_per_unit: 100
"""

NESTED = """
domain: edge
descriptors:
  - key: source_cluster
    value: noisy
    descriptors:
      - key: destination_cluster
        rate_limit: {unit: second, requests_per_unit: 5}
  - key: source_cluster
    rate_limit: {unit: hour, requests_per_unit: 1000}
    descriptors:
      - key: destination_cluster
        value: reviews
        rate_limit: {unit: day, requests_per_unit: 7}
  - key: user
    value: "bot-*"
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: user
    value: "bot-special"
    rate_limit: {unlimited: true}
  - key: client
    detailed_metric: true
    rate_limit: {unit: second, requests_per_unit: 3}
"""


def load(text: str, name: str = "config.yaml") -> RateLimitConfig:
    return load_config([ConfigFile(name, text)])


def test_task_config_map_loads_as_the_pod_mounts_it() -> None:
    path = TASK_DIR / "1-configmap-ratelimit-config.yaml"
    if not path.exists():
        pytest.skip("../shared/istio-samples is not here")
    config = load_config([ConfigFile(str(path), path.read_text())])
    assert set(config.domains) == {"ratelimit"}
    limit = config.find("ratelimit", [("PATH", "/productpage")])
    assert limit is not None
    assert (limit.requests_per_unit, limit.unit) == (1, Unit.MINUTE)


@pytest.mark.parametrize(
    ("domain", "entries", "expected"),
    [
        # key_value beats key alone; key alone catches any other value
        ("ratelimit", [("PATH", "/productpage")], ("ratelimit.PATH_/productpage", 1)),
        ("ratelimit", [("PATH", "api")], ("ratelimit.PATH_api", 2)),
        ("ratelimit", [("PATH", "/reviews")], ("ratelimit.PATH", 100)),
        # unknown key or domain: no limit
        ("ratelimit", [("HOST", "x")], None),
        ("other", [("PATH", "/productpage")], None),
        # deeper than the config describes: not limited
        ("ratelimit", [("PATH", "/productpage"), ("x", "y")], None),
        # nested: the value-specific branch has no limit of its own at depth 1
        ("edge", [("source_cluster", "noisy")], None),
        ("edge", [("source_cluster", "noisy"), ("destination_cluster", "a")],
         ("edge.source_cluster_noisy.destination_cluster", 5)),
        ("edge", [("source_cluster", "quiet")], ("edge.source_cluster", 1000)),
        ("edge", [("source_cluster", "quiet"), ("destination_cluster", "reviews")],
         ("edge.source_cluster.destination_cluster_reviews", 7)),
        ("edge", [("source_cluster", "quiet"), ("destination_cluster", "ratings")], None),
        # a trailing * matches by prefix; an exact value still wins over it
        ("edge", [("user", "bot-7")], ("edge.user_bot-*", 1)),
        ("edge", [("user", "human")], None),
        # detailed_metric: a statistic per value
        ("edge", [("client", "a")], ("edge.client_a", 3)),
    ],
)  # fmt: skip
def test_find(
    domain: str, entries: list[tuple[str, str]], expected: tuple[str, int] | None
) -> None:
    config = load_config([ConfigFile("a.yaml", TASK_CONFIG), ConfigFile("b.yaml", NESTED)])
    limit = config.find(domain, entries)
    if expected is None:
        assert limit is None
    else:
        assert limit is not None
        assert (limit.stat_key, limit.requests_per_unit) == expected


def test_unlimited_shadow_name_and_replaces() -> None:
    config = load(
        """
domain: d
descriptors:
  - key: a
    shadow_mode: true
    rate_limit: {unit: second, requests_per_unit: 1, name: small, replaces: [{name: big}]}
"""
    )
    limit = config.find("d", [("a", "x")])
    assert limit is not None
    assert limit.shadow_mode and limit.name == "small" and limit.replaces == ("big",)
    special = load(NESTED).find("edge", [("user", "bot-special")])
    assert special is not None and special.unlimited


def test_config_map_with_several_entries_and_documents() -> None:
    text = """
apiVersion: v1
kind: ConfigMap
metadata: {name: ratelimit-config}
data:
  a.yaml: |
    domain: one
    descriptors: [{key: k, rate_limit: {unit: second, requests_per_unit: 1}}]
  b.yaml: |
    domain: two
---
domain: three
"""
    assert set(load(text).domains) == {"one", "two", "three"}


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("descriptors: []", "domain", "config file cannot have empty domain"),
        ("domain: d\ndescriptors: [{value: x}]", "descriptors[0].key", "descriptor has empty key"),
        ("domain: d\ndescriptors: [{key: a}, {key: a}]", "descriptors[1]",
         "duplicate descriptor composite key 'd.a'"),
        ("domain: d\ndescriptors: [{key: a, descriptors: [{key: b, value: c}, {key: b, value: c}"
         "]}]",
         "descriptors[0].descriptors[1]", "duplicate descriptor composite key 'd.a.b_c'"),
        ("domain: d\ndescriptors: [{key: a, rate_limit: {unit: fortnight, requests_per_unit: 1}}]",
         "descriptors[0].rate_limit.unit", "invalid rate limit unit 'fortnight'"),
        ("domain: d\ndescriptors: [{key: a, rate_limit: {requests_per_unit: 1}}]",
         "descriptors[0].rate_limit.unit", "invalid rate limit unit ''"),
        ("domain: d\ndescriptors: [{key: a, rate_limit: {unlimited: true, unit: second}}]",
         "descriptors[0].rate_limit.unit", "should not specify rate limit unit when unlimited"),
        ("domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, request_per_unit: 1}}]",
         "descriptors[0].rate_limit.request_per_unit", "unknown key 'request_per_unit'"),
        ("domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, requests_per_unit: -1}}]",
         "descriptors[0].rate_limit.requests_per_unit", "outside 0..4294967295"),
        ("domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, requests_per_unit: many}}]",
         "descriptors[0].rate_limit.requests_per_unit", "must be an integer"),
        ("domain: d\ndescriptors: [{key: a, shadow_mode: yes please}]",
         "descriptors[0].shadow_mode", "expected true or false"),
        ("domain: d\ndescriptors: [a, b]", "descriptors[0]", "list of type other than map"),
        ("domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, name: n, "
         "replaces: [{name: n}]}}]",
         "descriptors[0].rate_limit.replaces[0]", "replaces should not contain name of same"),
        ("domain: [d", None, "error loading config file"),
    ],
)  # fmt: skip
def test_bad_config_is_refused_with_its_path(text: str, path: str | None, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        load(text, "rl.yaml")
    assert info.value.source == "rl.yaml"
    assert info.value.path == path
    assert message in info.value.message


def test_keys_pymesh_does_not_implement_are_named() -> None:
    with pytest.raises(UnsupportedError, match="quota_mode") as info:
        load("domain: d\ndescriptors: [{key: a, quota_mode: true}]")
    assert info.value.path == "descriptors[0].quota_mode"


def test_duplicate_domain_across_files() -> None:
    with pytest.raises(ValidationError, match="duplicate domain 'd'") as info:
        load_config([ConfigFile("a.yaml", "domain: d"), ConfigFile("b.yaml", "domain: d")])
    assert info.value.source == "b.yaml"


def test_error_inside_a_config_map_names_the_entry() -> None:
    text = """
kind: ConfigMap
metadata: {name: rl}
data:
  config.yaml: |
    domain: d
    descriptors: [{key: a, rate_limit: {unit: week, requests_per_unit: x}}]
"""
    with pytest.raises(ValidationError) as info:
        load(text)
    assert info.value.path == "data[config.yaml].descriptors[0].rate_limit.requests_per_unit"
