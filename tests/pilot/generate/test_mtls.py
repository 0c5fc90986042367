"""Mesh mTLS as pilot generates it, in Istio's shapes: auto mTLS on the client side
(``transport_socket_matches`` on ``tlsMode: istio`` endpoints), DestinationRule TLS modes,
and PeerAuthentication on the server side (inbound filter chains by mode, with Istio's
precedence), checked against Istio's own authn-policy files."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pilot.generate import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, SECRET_TYPE
from pilot.model import ProxyNode
from pymesh.config.loader import load_documents, load_path
from pymesh.config.model.security import MTLSMode
from tests.pilot.generate._mesh import BOOKINFO, Mesh, build_mesh, sample

SVC = ".default.svc.cluster.local"
AUTHN = "docs-extracted/security/authn-policy/"
TLS_MODE = {"security.istio.io/tlsMode": "istio"}


def _tasks_mesh(*policies: str, legacy_mtls: bool = False) -> Mesh:
    """Istio's authn tasks: httpbin and sleep in foo and bar (sidecars), sleep and httpbin
    in legacy (no mesh mTLS)."""
    resources = []
    for ns in ("foo", "bar", "legacy"):
        for app in ("httpbin/httpbin.yaml", "sleep/sleep.yaml"):
            resources.extend(load_path(sample(app), default_namespace=ns).resources)
    for policy in policies:
        resources.extend(load_path(sample(AUTHN + policy)).resources)
    mesh = build_mesh(resources=resources, mtls=True, gateway=False)
    if not legacy_mtls:
        for key, node in list(mesh.nodes.items()):
            if node.namespace == "legacy":
                labels = {k: v for k, v in node.labels.items() if k not in TLS_MODE}
                mesh.nodes[key] = ProxyNode.build(
                    node.ip, node.pod_name, node.namespace, labels=labels,
                    service_account=node.service_account,
                )  # fmt: skip
        mesh.__post_init__()
    return mesh


def _node(mesh: Mesh, app: str, ns: str) -> ProxyNode:
    return next(n for n in mesh.nodes.values() if n.namespace == ns and n.pod_name.startswith(app))


def _inbound(mesh: Mesh, node: ProxyNode) -> dict[str, Any]:
    return next(lst for lst in mesh.dicts(node, LISTENER_TYPE) if lst["name"] == "virtualInbound")


def _chains_for_port(listener: dict[str, Any], port: int) -> list[str]:
    return sorted(
        c.get("filter_chain_match", {}).get("transport_protocol", "any")
        for c in listener["filter_chains"]
        if c.get("filter_chain_match", {}).get("destination_port") == port
    )


# -- PeerAuthentication precedence ------------------------------------------------------------
@pytest.mark.parametrize(
    ("policies", "expected"),
    [
        ((), {"foo": "PERMISSIVE", "bar": "PERMISSIVE", "legacy": "PERMISSIVE"}),
        (("01-peerauthentication-mesh-strict.yaml",),
         {"foo": "STRICT", "bar": "STRICT", "legacy": "STRICT"}),
        (("02-peerauthentication-foo-strict.yaml",),
         {"foo": "STRICT", "bar": "PERMISSIVE", "legacy": "PERMISSIVE"}),
        (("03-peerauthentication-httpbin-bar-strict.yaml",),
         {"foo": "PERMISSIVE", "bar": "STRICT", "legacy": "PERMISSIVE"}),
        (("04-peerauthentication-httpbin-bar-port-8080-disable.yaml",),
         {"foo": "PERMISSIVE", "bar": "DISABLE", "legacy": "PERMISSIVE"}),
        (("02-peerauthentication-foo-strict.yaml",
          "05-peerauthentication-overwrite-example-foo-disable.yaml"),
         {"foo": "DISABLE", "bar": "PERMISSIVE", "legacy": "PERMISSIVE"}),
        (("01-peerauthentication-mesh-strict.yaml",
          "04-peerauthentication-httpbin-bar-port-8080-disable.yaml"),
         {"foo": "STRICT", "bar": "DISABLE", "legacy": "STRICT"}),
    ],
    ids=["none", "mesh-strict", "foo-strict", "bar-httpbin-strict", "bar-port-disable",
         "workload-overrides-namespace", "port-overrides-mesh"],
)  # fmt: skip
def test_httpbin_port_8080_mode_per_istios_tasks(policies, expected) -> None:
    mesh = _tasks_mesh(*policies)
    got = {ns: mesh.ctx.mtls_mode(_node(mesh, "httpbin", ns), 8080).value for ns in expected}
    assert got == expected


def test_port_level_unset_inherits_the_workload_mode() -> None:
    text = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: httpbin, namespace: bar}
spec:
  selector: {matchLabels: {app: httpbin}}
  mtls: {mode: DISABLE}
  portLevelMtls: {8080: {mode: UNSET}, 9000: {mode: STRICT}}
"""
    mesh = _tasks_mesh("01-peerauthentication-mesh-strict.yaml")
    mesh = build_mesh(
        resources=(*mesh.resources, *load_documents(text).resources), mtls=True, gateway=False
    )
    node = _node(mesh, "httpbin", "bar")
    assert mesh.ctx.mtls_mode(node, 8080) is MTLSMode.DISABLE
    assert mesh.ctx.mtls_mode(node, 9000) is MTLSMode.STRICT
    assert mesh.ctx.mtls_mode(node, None) is MTLSMode.DISABLE


# -- server side: inbound chains ---------------------------------------------------------------
def test_inbound_chains_follow_the_mode() -> None:
    mesh = _tasks_mesh("02-peerauthentication-foo-strict.yaml")
    strict = _inbound(mesh, _node(mesh, "httpbin", "foo"))
    permissive = _inbound(mesh, _node(mesh, "httpbin", "bar"))
    legacy = _inbound(mesh, _node(mesh, "httpbin", "legacy"))
    assert _chains_for_port(strict, 8080) == ["tls"]
    assert _chains_for_port(permissive, 8080) == ["raw_buffer", "tls"]
    assert _chains_for_port(legacy, 8080) == ["any"]  # no mesh mTLS: plaintext as before
    # Envoy (and the pymesh proxy) refuse a listener whose filter chains share a name.
    for listener in (strict, permissive, legacy):
        chains = [c["name"] for c in listener["filter_chains"]]
        assert len(chains) == len(set(chains)), chains
    names = [f["name"] for f in strict["listener_filters"]]
    assert names == ["envoy.filters.listener.original_dst", "envoy.filters.listener.tls_inspector"]
    assert [f["name"] for f in legacy["listener_filters"]] == names[:1]
    tls_chain = next(
        c for c in strict["filter_chains"]
        if c.get("filter_chain_match", {}).get("destination_port") == 8080
    )  # fmt: skip
    context = tls_chain["transport_socket"]["typed_config"]
    assert context["require_client_certificate"] is True
    common = context["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == "default"
    assert (
        common["combined_validation_context"]["validation_context_sds_secret_config"]["name"]
        == "ROOTCA"
    )
    hcm = tls_chain["filters"][0]["typed_config"]
    assert hcm["forward_client_cert_details"] == "APPEND_FORWARD"
    assert hcm["set_current_client_cert_details"] == {"subject": True, "dns": True, "uri": True}


def test_port_level_disable_serves_that_port_in_plaintext() -> None:
    mesh = _tasks_mesh(
        "01-peerauthentication-mesh-strict.yaml",
        "04-peerauthentication-httpbin-bar-port-8080-disable.yaml",
    )
    listener = _inbound(mesh, _node(mesh, "httpbin", "bar"))
    assert _chains_for_port(listener, 8080) == ["any"]
    catch_all = [c for c in listener["filter_chains"] if c["name"] == "virtualInbound-catchall-tcp"]
    assert [c["filter_chain_match"]["transport_protocol"] for c in catch_all] == ["tls"]


def test_process_mode_inbound_chains() -> None:
    mesh = _tasks_mesh("02-peerauthentication-foo-strict.yaml")
    process = build_mesh(resources=mesh.resources, mtls=True, gateway=False, mode="process")
    strict = _inbound(process, _node(process, "httpbin", "foo"))
    assert [c["name"] for c in strict["filter_chains"]] == ["virtualInbound-mtls"]
    assert strict["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    permissive = _inbound(process, _node(process, "httpbin", "bar"))
    assert [
        (c["name"], c["filter_chain_match"]["transport_protocol"])
        for c in permissive["filter_chains"]
    ] == [("virtualInbound-mtls", "tls"), ("virtualInbound-http", "raw_buffer")]


def test_process_mode_sidecar_holds_the_pods_service_address() -> None:
    """With PYMESH_APP_PORTS the app listens on a port only its sidecar knows: the sidecar
    binds the container port with the virtualInbound chains (STRICT: mTLS only), and its
    inbound cluster reaches the app on the other port."""
    mesh = _tasks_mesh("02-peerauthentication-foo-strict.yaml")
    process = build_mesh(resources=mesh.resources, mtls=True, gateway=False, mode="process")
    for key, node in list(process.nodes.items()):
        if node.pod_name.startswith("httpbin"):
            process.nodes[key] = ProxyNode.build(
                node.ip, node.pod_name, node.namespace, labels=node.labels,
                service_account=node.service_account, mode="process", app_ports={8080: 28080},
            )  # fmt: skip
    process.__post_init__()
    for ns, chains in (
        ("foo", [("virtualInbound-mtls", "tls")]),
        ("bar", [("virtualInbound-mtls", "tls"), ("virtualInbound-http", "raw_buffer")]),
    ):
        node = _node(process, "httpbin", ns)
        listeners = {lst["name"]: lst for lst in process.dicts(node, LISTENER_TYPE)}
        bound = listeners[f"{node.ip}_8080"]
        assert bound["address"]["socket_address"] == {"address": node.ip, "port_value": 8080}
        assert bound["traffic_direction"] == "INBOUND"
        assert bound["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
        assert [
            (c["name"], c["filter_chain_match"]["transport_protocol"])
            for c in bound["filter_chains"]
        ] == chains
        app = _cluster(process, node, "inbound|8080||")["load_assignment"]["endpoints"]
        assert app[0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
            "address": node.ip,
            "port_value": 28080,
        }
    sleep = _node(process, "sleep", "foo")  # no PYMESH_APP_PORTS: as before
    assert not [n for n in process.by_name(sleep, LISTENER_TYPE) if n.startswith(sleep.ip)]


@pytest.mark.parametrize("value", ['{"8080": "x"}', "[8080]", '{"8080": 70000}', "8080"])
def test_bad_app_ports_are_refused_with_the_node(value: str) -> None:
    from envoy.config.core.v3 import base_pb2
    from google.protobuf import struct_pb2

    metadata = struct_pb2.Struct()
    metadata.update({"NAMESPACE": "foo", "PYMESH_APP_PORTS": value})
    node = base_pb2.Node(id="sidecar~127.0.0.5~httpbin.foo~foo.svc.cluster.local")
    node.metadata.CopyFrom(metadata)
    with pytest.raises(ValueError, match="PYMESH_APP_PORTS must be a JSON object of ports"):
        ProxyNode.from_node(node)


# -- client side: auto mTLS ---------------------------------------------------------------------
def _cluster(mesh: Mesh, node: ProxyNode | str, name: str) -> dict[str, Any]:
    return mesh.by_name(node, CLUSTER_TYPE)[name]


def test_auto_mtls_to_sidecars_plaintext_to_the_rest() -> None:
    mesh = _tasks_mesh()
    sleep = _node(mesh, "sleep", "foo")
    cluster = _cluster(mesh, sleep, "outbound|8000||httpbin.bar.svc.cluster.local")
    istio, plain = cluster["transport_socket_matches"]
    assert istio["match"] == {"tlsMode": "istio"}
    context = istio["transport_socket"]["typed_config"]
    assert context["sni"] == "outbound_.8000_._.httpbin.bar.svc.cluster.local"
    assert context["common_tls_context"]["alpn_protocols"] == ["istio-peer-exchange", "istio"]
    sans = context["common_tls_context"]["combined_validation_context"][
        "default_validation_context"
    ]["match_typed_subject_alt_names"]
    assert sans == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/bar/sa/httpbin"}}
    ]
    assert plain["transport_socket"]["name"] == "envoy.transport_sockets.raw_buffer"
    endpoints = mesh.by_name(sleep, ENDPOINT_TYPE)["outbound|8000||httpbin.bar.svc.cluster.local"]
    (lb,) = endpoints["endpoints"][0]["lb_endpoints"]
    assert lb["metadata"]["filter_metadata"]["envoy.transport_socket_match"] == {"tlsMode": "istio"}
    # legacy's httpbin has no mTLS sidecar: no matches at all, plaintext.
    legacy = _cluster(mesh, sleep, "outbound|8000||httpbin.legacy.svc.cluster.local")
    assert "transport_socket_matches" not in legacy and "transport_socket" not in legacy
    # ... and a client that does not speak mTLS gets none either.
    from_legacy = _cluster(
        mesh, _node(mesh, "sleep", "legacy"), "outbound|8000||httpbin.bar.svc.cluster.local"
    )
    assert "transport_socket_matches" not in from_legacy


def test_auto_mtls_sends_plaintext_where_the_server_disables_mtls() -> None:
    mesh = _tasks_mesh("04-peerauthentication-httpbin-bar-port-8080-disable.yaml")
    sleep = _node(mesh, "sleep", "foo")
    endpoints = mesh.by_name(sleep, ENDPOINT_TYPE)["outbound|8000||httpbin.bar.svc.cluster.local"]
    (lb,) = endpoints["endpoints"][0]["lb_endpoints"]
    assert "metadata" not in lb
    assert "transport_socket_matches" not in _cluster(
        mesh, sleep, "outbound|8000||httpbin.bar.svc.cluster.local"
    )


def test_auto_mtls_can_be_switched_off_mesh_wide() -> None:
    from pilot.model import MeshConfig

    mesh = build_mesh(BOOKINFO, mtls=True, mesh=MeshConfig(enable_auto_mtls=False))
    assert "transport_socket_matches" not in _cluster(
        mesh, "productpage-v1", f"outbound|9080||reviews{SVC}"
    )


# -- DestinationRule TLS ------------------------------------------------------------------------
_DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: foo}
spec:
  host: httpbin.bar.svc.cluster.local
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 8000}
      tls: {mode: %s}
"""


@pytest.mark.parametrize("mode", ["DISABLE", "ISTIO_MUTUAL"])
def test_destination_rule_modes_replace_auto_mtls(mode: str) -> None:
    base = _tasks_mesh()
    mesh = build_mesh(
        resources=(*base.resources, *load_documents(_DR % mode).resources), mtls=True,
        gateway=False,
    )  # fmt: skip
    cluster = _cluster(
        mesh, _node(mesh, "sleep", "foo"), "outbound|8000||httpbin.bar.svc.cluster.local"
    )
    assert "transport_socket_matches" not in cluster
    if mode == "DISABLE":
        assert "transport_socket" not in cluster
    else:
        context = cluster["transport_socket"]["typed_config"]
        assert context["sni"] == "outbound_.8000_._.httpbin.bar.svc.cluster.local"


_DR_MUTUAL = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: external, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    tls:
      mode: MUTUAL
      credentialName: client-credential
      sni: my.reviews.example
      subjectAltNames: [reviews.example]
---
apiVersion: v1
kind: Secret
metadata: {name: client-credential, namespace: default}
type: kubernetes.io/tls
stringData:
  tls.crt: "%s"
  tls.key: "%s"
  ca.crt: "%s"
"""


def test_mutual_with_credential_name_over_pilots_sds() -> None:
    from tests.support.certs import self_signed

    cert, key = self_signed("client.example")
    ca, _ = self_signed("ca.example")
    text = _DR_MUTUAL % tuple(x.decode().replace("\n", "\\n") for x in (cert, key, ca))
    from pilot.model import credentials_from_text

    mesh = build_mesh(BOOKINFO, mtls=True)
    mesh = dataclasses.replace(
        mesh,
        resources=(*mesh.resources, *load_documents(text).resources),
        creds=credentials_from_text(text),
    )
    cluster = _cluster(mesh, "productpage-v1", f"outbound|9080||reviews{SVC}")
    context = cluster["transport_socket"]["typed_config"]
    assert context["sni"] == "my.reviews.example"
    common = context["common_tls_context"]
    assert (
        common["tls_certificate_sds_secret_configs"][0]["name"] == "kubernetes://client-credential"
    )
    combined = common["combined_validation_context"]
    assert combined["validation_context_sds_secret_config"]["name"] == (
        "kubernetes://client-credential-cacert"
    )
    assert combined["default_validation_context"]["match_subject_alt_names"] == [
        {"exact": "reviews.example"}
    ]
    secrets = mesh.by_name("productpage-v1", SECRET_TYPE)
    assert set(secrets) == {
        "kubernetes://client-credential",
        "kubernetes://client-credential-cacert",
    }
    assert "tls_certificate" in secrets["kubernetes://client-credential"]
    assert "validation_context" in secrets["kubernetes://client-credential-cacert"]
