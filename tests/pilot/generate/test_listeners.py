from __future__ import annotations

from typing import Any

from pilot.generate import LISTENER_TYPE
from pilot.generate.common import SERVICE_PORT_HEADER
from pilot.model import MeshConfig
from tests.pilot.generate._mesh import BOOKINFO, build_mesh

HCM = "envoy.filters.network.http_connection_manager"
TCP = "envoy.filters.network.tcp_proxy"


def only_filter(chain: dict[str, Any]) -> dict[str, Any]:
    (f,) = chain["filters"]
    config: dict[str, Any] = f["typed_config"]
    return config


def test_iptables_mode_listeners_are_istios() -> None:
    mesh = build_mesh(BOOKINFO)
    listeners = mesh.by_name("productpage-v1", LISTENER_TYPE)
    assert list(listeners) == ["virtualOutbound", "virtualInbound", "0.0.0.0_9080"]
    outbound = listeners["virtualOutbound"]
    assert outbound["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 15001}
    assert outbound["use_original_dst"] is True
    blackhole, catch_all = outbound["filter_chains"]
    assert blackhole["filter_chain_match"] == {"destination_port": 15001}
    assert only_filter(blackhole)["cluster"] == "BlackHoleCluster"
    assert only_filter(catch_all)["cluster"] == "PassthroughCluster"
    port = listeners["0.0.0.0_9080"]
    assert port["bind_to_port"] is False and port["traffic_direction"] == "OUTBOUND"
    hcm = only_filter(port["filter_chains"][0])
    assert hcm["rds"]["route_config_name"] == "9080"
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
        "envoy.filters.http.router",
    ]
    assert hcm["stat_prefix"] == "outbound_0.0.0.0_9080"
    inbound = listeners["virtualInbound"]
    assert inbound["address"]["socket_address"]["port_value"] == 15006
    assert [c.get("name") for c in inbound["filter_chains"]] == [
        "virtualInbound-blackhole",
        "0.0.0.0_9080",
        "virtualInbound-catchall-tcp",
    ]
    chain = inbound["filter_chains"][1]
    assert chain["filter_chain_match"] == {"destination_port": 9080}
    routes = only_filter(chain)["route_config"]
    assert routes["name"] == "inbound|9080||"
    assert routes["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == "inbound|9080||"


def test_registry_only_catch_all_is_the_blackhole() -> None:
    mesh = build_mesh(BOOKINFO, mesh=MeshConfig(outbound_traffic_policy="REGISTRY_ONLY"))
    outbound = mesh.by_name("productpage-v1", LISTENER_TYPE)["virtualOutbound"]
    assert only_filter(outbound["filter_chains"][1])["cluster"] == "BlackHoleCluster"


def test_tcp_and_tls_ports() -> None:
    mesh = build_mesh("features.yaml", "egress.yaml")
    listeners = mesh.by_name("web-v1", LISTENER_TYPE)
    db = listeners["10.96.0.30_3306"]
    assert db["address"]["socket_address"] == {"address": "10.96.0.30", "port_value": 3306}
    assert only_filter(db["filter_chains"][0])["cluster"] == (
        "outbound|3306||db.shop.svc.cluster.local"
    )
    tls = listeners["0.0.0.0_443"]
    assert [c["filter_chain_match"]["server_names"] for c in tls["filter_chains"]] == [
        ["maps.google.com"],
        ["www.google.com"],
        ["www.googleapis.com"],
    ]
    assert tls["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    assert only_filter(tls["default_filter_chain"])["cluster"] == "PassthroughCluster"


def test_process_mode_listeners_bind_the_pod_address() -> None:
    mesh = build_mesh("features.yaml", mode="process")
    node = mesh.nodes["api-v1"]
    listeners = mesh.by_name("api-v1", LISTENER_TYPE)
    outbound = listeners["virtualOutbound"]
    assert outbound["address"]["socket_address"] == {"address": node.ip, "port_value": 15001}
    assert "use_original_dst" not in outbound
    hcm = only_filter(outbound["filter_chains"][0])
    assert hcm["rds"]["route_config_name"] == "pymesh-outbound"
    assert hcm["http_protocol_options"] == {"allow_absolute_url": True}
    inbound = listeners["virtualInbound"]
    assert inbound["address"]["socket_address"] == {"address": node.ip, "port_value": 15006}
    routes = only_filter(inbound["filter_chains"][0])["route_config"]["virtual_hosts"][0]
    matches = [(r["name"], r["route"]["cluster"]) for r in routes["routes"]]
    # Service port 8080 (targetPort "web" = 8081 here) and 9090.
    assert matches == [
        ("service-port-8080", "inbound|8081||"),
        ("host-port-8080", "inbound|8081||"),
        ("service-port-9090", "inbound|9090||"),
        ("host-port-9090", "inbound|9090||"),
        ("default", "inbound|8081||"),
    ]
    first = routes["routes"][0]
    assert first["match"]["headers"] == [
        {"name": SERVICE_PORT_HEADER, "string_match": {"exact": "8080"}}
    ]
    assert first["request_headers_to_remove"] == [SERVICE_PORT_HEADER]
    # The per-port listeners are still there for proxy-config, never bound.
    assert listeners["0.0.0.0_8080"]["bind_to_port"] is False


def test_tracing_and_access_logs_when_the_mesh_names_collectors() -> None:
    mesh = build_mesh(
        BOOKINFO,
        mesh=MeshConfig(
            zipkin_address="zipkin:9411", mixer_address="mixer:9091", trace_sampling=10
        ),
    )
    hcm = only_filter(
        mesh.by_name("productpage-v1", LISTENER_TYPE)["0.0.0.0_9080"]["filter_chains"][0]
    )
    assert hcm["tracing"]["random_sampling"] == {"value": 10.0}
    assert hcm["tracing"]["provider"]["typed_config"]["collector_cluster"] == "zipkin"
    log = hcm["access_log"][0]["typed_config"]["common_config"]
    assert log["grpc_service"] == {"envoy_grpc": {"cluster_name": "mixer"}}


def test_http_connection_managers_get_istios_exchange_and_stats_filters() -> None:
    """As istiod: metadata exchange first, stats just before the router, both optional
    TypedStructs; inbound learns its caller from the request, outbound its callee from the
    response. Without mixer in the mesh config there are neither."""
    mesh = build_mesh(BOOKINFO, mesh=MeshConfig(mixer_address="mixer:9091"))
    listeners = mesh.by_name("productpage-v1", LISTENER_TYPE)
    outbound = only_filter(listeners["0.0.0.0_9080"]["filter_chains"][0])["http_filters"]
    names = [f["name"] for f in outbound]
    assert names[0] == "istio.metadata_exchange" and names[-2:] == [
        "istio.stats",
        "envoy.filters.http.router",
    ]
    assert all(f["is_optional"] for f in outbound[:1] + outbound[-2:-1])
    exchange = outbound[0]["typed_config"]
    assert exchange["type_url"] == "type.googleapis.com/io.istio.http.peer_metadata.Config"
    assert exchange["value"] == {
        "upstream_discovery": [{"istio_headers": {}}],
        "upstream_propagation": [{"istio_headers": {}}],
    }
    inbound = [
        f
        for chain in listeners["virtualInbound"]["filter_chains"]
        for net in chain["filters"]
        if net["name"].endswith("http_connection_manager")
        for f in net["typed_config"]["http_filters"]
    ]
    values = [f["typed_config"]["value"] for f in inbound if f["name"] == "istio.metadata_exchange"]
    assert values and all(
        set(v) == {"downstream_discovery", "downstream_propagation"} for v in values
    )
    quiet = build_mesh(BOOKINFO).by_name("productpage-v1", LISTENER_TYPE)
    filters = only_filter(quiet["0.0.0.0_9080"]["filter_chains"][0])["http_filters"]
    assert not [f for f in filters if f["name"].startswith("istio.")]


def test_tcp_proxies_stream_their_connections_to_mixer() -> None:
    """Istio's TCP metrics come from ``tcp_grpc`` access logs on both sides' TCP proxies."""
    mesh = build_mesh("features.yaml", mesh=MeshConfig(mixer_address="mixer:9091"))

    def tcp_logs(chain: dict[str, Any]) -> list[dict[str, Any]]:
        proxy = next(f for f in chain["filters"] if f["name"].endswith("tcp_proxy"))
        return list(proxy["typed_config"].get("access_log", []))

    outbound = mesh.by_name("web-v1", LISTENER_TYPE)["10.96.0.30_3306"]
    [log] = tcp_logs(outbound["filter_chains"][0])
    assert log["name"] == "envoy.access_loggers.tcp_grpc"
    common = log["typed_config"]["common_config"]
    assert common["log_name"] == "outbound"
    assert common["grpc_service"] == {"envoy_grpc": {"cluster_name": "mixer"}}
    inbound = mesh.by_name("db-v1", LISTENER_TYPE)["virtualInbound"]["filter_chains"]
    port_chains = [c for c in inbound if c.get("filter_chain_match", {}).get("destination_port")
                   == 3306 and c["name"] != "virtualInbound-blackhole"]  # fmt: skip
    assert port_chains and all(
        tcp_logs(c)[0]["typed_config"]["common_config"]["log_name"] == "inbound"
        for c in port_chains
    )
    quiet = build_mesh("features.yaml")  # no mixer in the mesh config: no logs
    assert not tcp_logs(
        quiet.by_name("web-v1", LISTENER_TYPE)["10.96.0.30_3306"]["filter_chains"][0]
    )
