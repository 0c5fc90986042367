"""The allowlist itself, and the walker that enforces it."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import descriptor_pool, json_format  # type: ignore[import-untyped]

import proxy.config.bootstrap  # noqa: F401  (imports every message type pymesh translates)
from proxy.config.translate.support import IGNORED, OPAQUE, SUPPORTED, check_supported
from pymesh.errors import UnsupportedError, ValidationError


@pytest.mark.parametrize("type_name", sorted(SUPPORTED))
def test_every_allowlisted_field_exists(type_name: str) -> None:
    descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    unknown = SUPPORTED[type_name] - set(descriptor.fields_by_name)
    assert not unknown, f"{type_name} has no fields {sorted(unknown)}"


@pytest.mark.parametrize("type_name", sorted(IGNORED))
def test_every_ignored_field_exists_and_says_why(type_name: str) -> None:
    descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    for field, reason in IGNORED[type_name].items():
        assert field in descriptor.fields_by_name
        assert reason
        assert field not in SUPPORTED.get(type_name, frozenset())


def test_opaque_types_exist() -> None:
    for type_name in OPAQUE:
        descriptor_pool.Default().FindMessageTypeByName(type_name)


def test_unsupported_field_names_path_and_type() -> None:
    cluster = json_format.ParseDict(
        {"name": "a", "connect_timeout": "1s", "upstream_bind_config": {}}, cluster_pb2.Cluster()
    )
    # An empty sub-message still counts as set.
    cluster.upstream_bind_config.freebind.value = True
    with pytest.raises(UnsupportedError) as caught:
        check_supported(cluster, "clusters[3]")
    assert caught.value.path == "clusters[3].upstream_bind_config.freebind"
    assert "envoy.config.core.v3.BindConfig" in caught.value.message


def test_nested_and_map_paths() -> None:
    config = json_format.ParseDict(
        {
            "name": "r",
            "virtual_hosts": [
                {"name": "v", "domains": ["*"], "routes": [], "virtual_clusters": [{"name": "x"}]}
            ],
        },
        route_pb2.RouteConfiguration(),
    )
    with pytest.raises(UnsupportedError) as caught:
        check_supported(config, "")
    assert caught.value.path == "virtual_hosts[0].virtual_clusters"


def test_ignored_fields_are_accepted() -> None:
    config = json_format.ParseDict(
        {
            "name": "r",
            "virtual_hosts": [
                {
                    "name": "v",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {
                                "prefix": "/",
                                "runtime_fraction": {
                                    "default_value": {"numerator": 5},
                                    "runtime_key": "some.key",
                                },
                            },
                            "route": {"cluster": "c"},
                        }
                    ],
                }
            ],
        },
        route_pb2.RouteConfiguration(),
    )
    check_supported(config, "")


def test_pgv_rules_apply_while_walking() -> None:
    cluster = cluster_pb2.Cluster(name="")
    with pytest.raises(ValidationError) as caught:
        check_supported(cluster, "")
    assert caught.value.path == "name"
    assert not isinstance(caught.value, UnsupportedError)
