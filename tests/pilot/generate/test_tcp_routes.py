"""VirtualService ``tcp`` rules in the listeners pilot generates (Istio's TCP traffic shifting):
the ingress gateway's TCP server and a sidecar's outbound TCP listener, checked as dicts and
accepted by the real Envoy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pilot.generate import LISTENER_TYPE
from pymesh.config.loader import load_documents
from tests.pilot.generate._envoy import envoy_validate, static_bootstrap
from tests.pilot.generate._mesh import build_mesh

TCP_ECHO = "tcp-echo/tcp-echo-services.yaml"
V1, V2 = (f"outbound|9000|{v}|tcp-echo.default.svc.cluster.local" for v in ("v1", "v2"))


def _tcp_proxy(listener: dict[str, Any]) -> dict[str, Any]:
    [chain] = listener["filter_chains"]
    proxy = chain["filters"][-1]
    assert proxy["name"] == "envoy.filters.network.tcp_proxy"
    body: dict[str, Any] = proxy["typed_config"]
    return body


def test_gateway_tcp_server_follows_the_tcp_rule() -> None:
    mesh = build_mesh(TCP_ECHO, "tcp-echo/tcp-echo-all-v1.yaml")
    listener = mesh.by_name("gateway", LISTENER_TYPE)["0.0.0.0_31400"]
    assert listener["address"]["socket_address"]["port_value"] == 31400
    proxy = _tcp_proxy(listener)
    assert proxy["cluster"] == V1 and "weighted_clusters" not in proxy


def test_gateway_tcp_server_splits_by_weight(envoy_binary: str, tmp_path: Path) -> None:
    mesh = build_mesh(TCP_ECHO, "tcp-echo/tcp-echo-all-v1.yaml", "tcp-echo/tcp-echo-20-v2.yaml")
    proxy = _tcp_proxy(mesh.by_name("gateway", LISTENER_TYPE)["0.0.0.0_31400"])
    assert "cluster" not in proxy
    assert proxy["weighted_clusters"]["clusters"] == [
        {"name": V1, "weight": 80},
        {"name": V2, "weight": 20},
    ]
    ok, output = envoy_validate(envoy_binary, static_bootstrap(mesh, "gateway"), tmp_path)
    assert ok, output


def test_a_tcp_server_without_a_virtual_service_opens_no_port() -> None:
    mesh = build_mesh(TCP_ECHO, resources=_gateway_only())
    assert "0.0.0.0_31400" not in mesh.by_name("gateway", LISTENER_TYPE)


def _gateway_only() -> tuple[Any, ...]:
    text = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-only, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 31400, name: tcp, protocol: TCP}, hosts: ["*"]}]
"""
    return load_documents(text, "gw.yaml").resources


MESH_SHIFT = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo-mesh, namespace: default}
spec:
  hosts: [tcp-echo]
  tcp:
  - match: [{port: 9001}]
    route: [{destination: {host: tcp-echo, port: {number: 9001}, subset: v2}}]
  - route:
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v1}, weight: 100}
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v2}, weight: 0}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo, namespace: default}
spec:
  host: tcp-echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


@pytest.mark.parametrize("mode", [None, "process"])
def test_sidecar_outbound_tcp_follows_the_rule_for_its_port(mode: str | None) -> None:
    rules = load_documents(MESH_SHIFT, "vs.yaml").resources
    mesh = build_mesh(TCP_ECHO, mode=mode, resources=rules)
    listeners = mesh.by_name("tcp-echo-v1", LISTENER_TYPE)
    by_port = {name.rsplit("_", 1)[1]: body for name, body in listeners.items() if "_90" in name}
    # The 0 % destination is left out, so one cluster remains.
    assert _tcp_proxy(by_port["9000"])["cluster"] == V1
    assert _tcp_proxy(by_port["9001"])["cluster"] == V2.replace("|9000|", "|9001|")
