"""Ports that name no protocol get istiod's sniffing listeners and chains."""

from __future__ import annotations

from typing import Any

import pytest

from pilot.generate import LISTENER_TYPE
from pilot.model import MeshConfig
from pymesh.config.loader import load_documents
from tests.pilot.generate._mesh import DATA, build_mesh

HCM = "envoy.filters.network.http_connection_manager"
TCP = "envoy.filters.network.tcp_proxy"
HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"
PLAIN_HTTP = ["http/1.0", "http/1.1", "h2c"]
MTLS_HTTP = ["istio-http/1.0", "istio-http/1.1", "istio-h2"]


def _policy(mode: str) -> Any:
    return load_documents(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: default, namespace: default}\n"
        f"spec: {{mtls: {{mode: {mode}}}}}\n",
        "pa.yaml",
    ).resources


def _chains(listener: dict[str, Any]) -> list[tuple[str, dict[str, Any], str, Any]]:
    """(name, match, terminal filter, the filter's cluster or route name) per chain."""
    found = []
    for chain in listener["filter_chains"]:
        last = chain["filters"][-1]
        config = last["typed_config"]
        target = config.get("cluster") or config.get("rds", {}).get("route_config_name")
        if target is None:
            target = config["route_config"]["name"]
        found.append((chain.get("name"), chain.get("filter_chain_match", {}), last["name"], target))
    return found


def test_outbound_port_sniffs_http_and_falls_back_to_the_service_over_tcp() -> None:
    mesh = build_mesh(DATA / "sniffing.yaml", mesh=MeshConfig(protocol_detection_timeout=2.5))
    listeners = mesh.by_name("client", LISTENER_TYPE)
    port = listeners["0.0.0.0_7000"]
    assert [f["name"] for f in port["listener_filters"]] == [HTTP_INSPECTOR]
    assert "filter_disabled" not in port["listener_filters"][0]
    assert port["listener_filters_timeout"] == "2.500s"
    assert port["continue_on_listener_filters_timeout"] is True
    assert _chains(port) == [
        ("0.0.0.0_7000-http", {"application_protocols": PLAIN_HTTP}, HCM, "7000"),
        ("0.0.0.0_7000-tcp", {}, TCP, "outbound|7000||echo.default.svc.cluster.local"),
    ]
    # A named TCP port of the same service is not sniffed.
    tcp = listeners["0.0.0.0_7001"]
    assert "listener_filters" not in tcp
    assert _chains(tcp) == [(None, {}, TCP, "outbound|7001||echo.default.svc.cluster.local")]


def test_sniffed_service_with_a_vip_has_a_listener_of_its_own() -> None:
    listeners = build_mesh(DATA / "sniffing.yaml").by_name("client", LISTENER_TYPE)
    vip = listeners["10.96.0.20_7100"]
    assert vip["address"]["socket_address"] == {"address": "10.96.0.20", "port_value": 7100}
    assert vip["listener_filters_timeout"] == "0s"  # Istio's default: wait for the client
    assert _chains(vip) == [
        ("10.96.0.20_7100-http", {"application_protocols": PLAIN_HTTP}, HCM, "7100"),
        ("10.96.0.20_7100-tcp", {}, TCP, "outbound|7100||vip.default.svc.cluster.local"),
    ]
    # The port's HTTP of other services keeps 0.0.0.0_7100, HTTP only.
    assert [c[2] for c in _chains(listeners["0.0.0.0_7100"])] == [HCM]


def _inbound(mode: str | None) -> dict[str, Any]:
    policy = _policy(mode) if mode else ()
    mesh = build_mesh(DATA / "sniffing.yaml", mtls=True, resources=policy)
    listener: dict[str, Any] = mesh.by_name("echo", LISTENER_TYPE)["virtualInbound"]
    return listener


def _port_chains(listener: dict[str, Any], port: int) -> list[tuple[Any, ...]]:
    return [
        (name, match.get("transport_protocol"), match.get("application_protocols"), kind)
        for name, match, kind, _ in _chains(listener)
        if match.get("destination_port") == port
    ]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (
            "PERMISSIVE",
            [
                ("0.0.0.0_7070", "tls", MTLS_HTTP, HCM),
                ("0.0.0.0_7070-tcp", "tls", None, TCP),
                ("0.0.0.0_7070-plaintext", "raw_buffer", PLAIN_HTTP, HCM),
                ("0.0.0.0_7070-plaintext-tcp", "raw_buffer", None, TCP),
            ],
        ),
        (
            "STRICT",
            [
                ("0.0.0.0_7070", "tls", MTLS_HTTP, HCM),
                ("0.0.0.0_7070-tcp", "tls", None, TCP),
            ],
        ),
        (
            "DISABLE",
            [
                ("0.0.0.0_7070", None, PLAIN_HTTP, HCM),
                ("0.0.0.0_7070-tcp", None, None, TCP),
            ],
        ),
    ],
)
def test_inbound_sniffed_port_chains_follow_the_peer_authentication(
    mode: str, expected: list[tuple[Any, ...]]
) -> None:
    listener = _inbound(mode)
    assert _port_chains(listener, 7070) == expected
    names = [f["name"] for f in listener["listener_filters"]]
    assert names[-1] == HTTP_INSPECTOR
    # Only the sniffed port waits for an HTTP request line; 7001 (tcp-db) is left alone.
    assert listener["listener_filters"][-1]["filter_disabled"] == {
        "not_match": {"destination_port_range": {"start": 7070, "end": 7071}}
    }
    assert listener["continue_on_listener_filters_timeout"] is True
    for chain in listener["filter_chains"]:
        match = chain.get("filter_chain_match", {})
        if match.get("destination_port") == 7070 and "transport_socket" in chain:
            alpn = chain["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"]
            http = match.get("application_protocols") == MTLS_HTTP
            assert alpn == (["h2", "http/1.1"] if http else ["istio-peer-exchange", "istio"])


def test_inbound_without_sniffed_ports_has_no_http_inspector() -> None:
    mesh = build_mesh(DATA / "features.yaml")
    for listener in mesh.by_name("db-v1", LISTENER_TYPE).values():
        assert HTTP_INSPECTOR not in [f["name"] for f in listener.get("listener_filters", [])]


def test_protocol_detection_timeout_is_read_from_mesh_config() -> None:
    assert MeshConfig.from_yaml("protocolDetectionTimeout: 100ms").protocol_detection_timeout == (
        0.1
    )
    assert MeshConfig().protocol_detection_timeout == 0.0
