"""Which upgrades a route admits (Envoy's HCM and per-route ``upgrade_configs``), and
CONNECT routing with ``connect_matcher``, from translated config to the matcher's answer."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format  # type: ignore[import-untyped]

from proxy.config.model_http import UpgradeConfig
from proxy.config.model_route import RouteUpgrade
from proxy.config.translate import default_registry, translate_route_configuration
from proxy.routing.matcher import RouteTable
from proxy.routing.upgrade import terminates_connect, upgrade_allowed, upgrade_type
from pymesh.errors import UnsupportedError, ValidationError

WS = UpgradeConfig("websocket")


@pytest.mark.parametrize(
    ("hcm", "route", "allowed"),
    [
        ((WS,), (), True),
        ((), (), False),
        ((UpgradeConfig("websocket", enabled=False),), (), False),
        ((WS,), (RouteUpgrade("websocket", enabled=False),), False),  # the route refuses
        ((), (RouteUpgrade("websocket"),), True),  # the route allows what the HCM lacks
        ((UpgradeConfig("websocket", enabled=False),), (RouteUpgrade("websocket"),), True),
        ((UpgradeConfig("foo"),), (), False),
    ],
)
def test_route_entry_decides_before_the_connection_manager(hcm, route, allowed) -> None:
    assert upgrade_allowed("websocket", hcm, route) is allowed


def test_upgrade_type_names() -> None:
    assert upgrade_type(b"CONNECT", None) == "connect"
    assert upgrade_type(b"GET", b"WebSocket") == "websocket"
    assert terminates_connect((RouteUpgrade("connect", terminate_connect=True),))
    assert not terminates_connect((RouteUpgrade("connect"),))


def _table(routes: list[dict[str, Any]]) -> Any:
    proto = json_format.ParseDict(
        {"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": routes}]},
        route_pb2.RouteConfiguration(),
    )
    return translate_route_configuration(proto, default_registry())


def test_connect_matcher_matches_connect_only_and_paths_never_do() -> None:
    config = _table(
        [
            {"match": {"prefix": ""}, "route": {"cluster": "http"}},
            {
                "match": {"connect_matcher": {}},
                "route": {
                    "cluster": "tunnel",
                    "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}],
                },
            },
        ]
    )
    table = RouteTable.build(config)
    vhost = config.virtual_hosts[0]
    tunnel = table.match(vhost, b"CONNECT", b"", [(b"host", b"db:5432")])
    assert tunnel.action.cluster == "tunnel"
    assert tunnel.action.upgrade_configs == (RouteUpgrade("connect", True, True),)
    assert table.match(vhost, b"GET", b"/", []).action.cluster == "http"


def test_connect_config_only_on_connect_and_its_options_refused() -> None:
    with pytest.raises(ValidationError, match="Non-CONNECT upgrade type websocket"):
        _table([{"match": {"prefix": "/"}, "route": {"cluster": "c", "upgrade_configs": [
            {"upgrade_type": "websocket", "connect_config": {}}]}}])  # fmt: skip
    with pytest.raises(UnsupportedError, match="allow_post"):
        _table([{"match": {"prefix": "/"}, "route": {"cluster": "c", "upgrade_configs": [
            {"upgrade_type": "CONNECT", "connect_config": {"allow_post": True}}]}}])  # fmt: skip
