from __future__ import annotations

import base64
from typing import Any

from pilot.generate import LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE
from pilot.model import ProxyNode
from pymesh.config.loader import load_documents
from tests.pilot.generate._mesh import BOOKINFO, Mesh, build_mesh, credentials, gateway_node

SVC = ".default.svc.cluster.local"


def only_filter(chain: dict[str, Any]) -> dict[str, Any]:
    (f,) = chain["filters"]
    config: dict[str, Any] = f["typed_config"]
    return config


def test_bookinfo_gateway() -> None:
    mesh = build_mesh(BOOKINFO, "bookinfo/networking/bookinfo-gateway.yaml")
    node = mesh.nodes["gateway"]
    (listener,) = mesh.dicts("gateway", LISTENER_TYPE)
    assert listener["name"] == "0.0.0.0_8080"
    assert listener["address"]["socket_address"] == {"address": node.ip, "port_value": 8080}
    hcm = only_filter(listener["filter_chains"][0])
    assert hcm["rds"]["route_config_name"] == "http.8080"
    assert hcm["use_remote_address"] is True
    (config,) = mesh.dicts("gateway", ROUTE_TYPE)
    (vhost,) = config["virtual_hosts"]
    assert (vhost["name"], vhost["domains"]) == ("*:8080", ["*"])
    assert [r["match"] for r in vhost["routes"]] == [
        {"path": "/productpage"},
        {"prefix": "/static"},
        {"path": "/login"},
        {"path": "/logout"},
        {"prefix": "/api/v1/products"},
    ]
    assert {r["route"]["cluster"] for r in vhost["routes"]} == {f"outbound|9080||productpage{SVC}"}
    assert mesh.dicts("gateway", SECRET_TYPE) == []


def test_sidecars_do_not_get_gateway_listeners_nor_gateways_their_vs() -> None:
    mesh = build_mesh(BOOKINFO, "bookinfo/networking/bookinfo-gateway.yaml")
    assert "0.0.0.0_8080" not in mesh.by_name("productpage-v1", LISTENER_TYPE)
    other = ProxyNode.build(
        "127.0.31.201", "egress-0", "istio-system", type="router", labels={"istio": "egressgateway"}
    )
    mesh = build_mesh(
        BOOKINFO, "bookinfo/networking/bookinfo-gateway.yaml", extra={"egress": other}
    )
    assert mesh.dicts("egress", LISTENER_TYPE) == []


def test_gateway_without_virtual_services_answers_404() -> None:
    resources = load_documents(
        """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: lonely, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"""
    ).resources
    mesh = Mesh(resources, {"gateway": gateway_node()})
    (config,) = mesh.dicts("gateway", ROUTE_TYPE)
    assert config["virtual_hosts"] == [
        {
            "name": "blackhole:80",
            "domains": ["*"],
            "include_request_attempt_count": True,
            "routes": [
                {"name": "default", "match": {"prefix": "/"}, "direct_response": {"status": 404}}
            ],
        }
    ]


def test_tls_gateway_with_credential_name() -> None:
    mesh = build_mesh("gateway-tls.yaml", creds=credentials("gateway-tls.yaml"))
    listeners = mesh.by_name("gateway", LISTENER_TYPE)
    https = listeners["0.0.0.0_8443"]
    assert https["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    (chain,) = https["filter_chains"]
    assert chain["filter_chain_match"] == {"server_names": ["bookinfo.example.com"]}
    tls = chain["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["tls_certificate_sds_secret_configs"][0]["name"] == (
        "kubernetes://bookinfo-credential"
    )
    assert only_filter(chain)["rds"]["route_config_name"] == "https.8443.https.shop-gateway.default"
    configs = mesh.by_name("gateway", ROUTE_TYPE)
    plain = {v["name"]: v for v in configs["http.8080"]["virtual_hosts"]}
    assert list(plain) == ["bookinfo.example.com:8080", "*.internal.example.com:8080"]
    assert plain["bookinfo.example.com:8080"]["domains"] == [
        "bookinfo.example.com",
        "bookinfo.example.com:*",
    ]
    assert plain["bookinfo.example.com:8080"]["require_tls"] == "ALL"
    (secret,) = mesh.dicts("gateway", SECRET_TYPE)
    assert secret["name"] == "kubernetes://bookinfo-credential"
    chain_pem = base64.b64decode(secret["tls_certificate"]["certificate_chain"]["inline_bytes"])
    assert chain_pem.startswith(b"-----BEGIN CERTIFICATE-----")


def test_tls_gateway_without_the_secret_still_refers_to_it() -> None:
    mesh = build_mesh("gateway-tls.yaml")
    assert mesh.dicts("gateway", SECRET_TYPE) == []
    assert "0.0.0.0_8443" in mesh.by_name("gateway", LISTENER_TYPE)
