"""The real Envoy (1.40) accepts everything pilot generates: Bookinfo (with each of Istio's
VirtualService samples) for the productpage sidecar, in iptables and process mode, and the
ingress gateway; plus pymesh's own fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilot.generate import LISTENER_TYPE
from pilot.model import MeshConfig
from pymesh.config.loader import load_documents
from tests.pilot.generate._envoy import envoy_validate, static_bootstrap
from tests.pilot.generate._mesh import (
    BOOKINFO,
    SAMPLES,
    Mesh,
    build_mesh,
    credentials,
    gateway_node,
)

pytestmark = pytest.mark.envoy

NET = "bookinfo/networking/"
_VS = sorted(p.name for p in (SAMPLES / "bookinfo/networking").glob("virtual-service-*.yaml"))


def _check(envoy: str, mesh: Mesh, node: str, tmp_path: Path) -> None:
    ok, output = envoy_validate(envoy, static_bootstrap(mesh, node), tmp_path / node)
    assert ok, output


@pytest.mark.parametrize("mode", [None, "process"])
@pytest.mark.parametrize("vs", _VS or ["(samples absent)"])
def test_bookinfo_productpage_sidecar(
    envoy_binary: str, tmp_path: Path, vs: str, mode: str | None
) -> None:
    mesh = build_mesh(BOOKINFO, NET + "destination-rule-all.yaml", NET + vs, mode=mode)
    _check(envoy_binary, mesh, "productpage-v1", tmp_path)


@pytest.mark.parametrize(
    "extra",
    [
        NET + "bookinfo-gateway.yaml",
        "docs-extracted/traffic-management/ingress-control/httpbin-gateway-and-virtualservice.yaml",
    ],
)
def test_ingress_gateway(envoy_binary: str, tmp_path: Path, extra: str) -> None:
    mesh = build_mesh(BOOKINFO, "httpbin/httpbin.yaml", NET + "destination-rule-all.yaml", extra)
    _check(envoy_binary, mesh, "gateway", tmp_path)


def test_gateway_with_tls_credential(envoy_binary: str, tmp_path: Path) -> None:
    mesh = build_mesh("gateway-tls.yaml", creds=credentials("gateway-tls.yaml"))
    _check(envoy_binary, mesh, "gateway", tmp_path)


def test_istio_mutual_destination_rules(envoy_binary: str, tmp_path: Path) -> None:
    mesh = build_mesh(BOOKINFO, NET + "destination-rule-all-mtls.yaml")
    _check(envoy_binary, mesh, "reviews-v1", tmp_path)


@pytest.mark.parametrize("mode", [None, "process"])
@pytest.mark.parametrize("node", ["web-v1", "api-v1", "db-v1"])
def test_features_fixture(envoy_binary: str, tmp_path: Path, node: str, mode: str | None) -> None:
    mesh = build_mesh("features.yaml", mode=mode)
    _check(envoy_binary, mesh, node, tmp_path)


@pytest.mark.parametrize(
    "mesh_config",
    [
        MeshConfig(zipkin_address="127.0.0.1:9411"),
        MeshConfig(outbound_traffic_policy="REGISTRY_ONLY", mixer_address="127.0.0.1:9091"),
    ],
    ids=["allow-any-zipkin", "registry-only-als"],
)
def test_egress_fixture(envoy_binary: str, tmp_path: Path, mesh_config: MeshConfig) -> None:
    mesh = build_mesh("egress.yaml", "features.yaml", mesh=mesh_config)
    _check(envoy_binary, mesh, "web-v1", tmp_path)
    _check(envoy_binary, mesh, "db-v1", tmp_path)  # a TCP server: its inbound TCP proxy


def test_circuit_breaking_and_mirroring_samples(envoy_binary: str, tmp_path: Path) -> None:
    tm = "docs-extracted/traffic-management/"
    mesh = build_mesh(
        "sleep/sleep.yaml",
        tm + "circuit-breaking/destination-rule-httpbin-cb.yaml",
        tm + "mirroring/0-httpbin-v1-v2-service.yaml",
        tm + "mirroring/1-httpbin-all-v1.yaml",
        tm + "mirroring/2-httpbin-mirror-v2.yaml",
        tm + "egress-control/1-serviceentry-httpbin-ext.yaml",
        tm + "egress-control/2-serviceentry-google.yaml",
        NET + "egress-rule-google-apis.yaml",
    )
    _check(envoy_binary, mesh, "sleep", tmp_path)


def test_gateway_with_certificate_files_and_mutual_tls(envoy_binary: str, tmp_path: Path) -> None:
    creds = credentials("gateway-tls.yaml")[0]
    (tmp_path / "tls.crt").write_bytes(creds.cert_chain)
    (tmp_path / "tls.key").write_bytes(creds.private_key)
    text = f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: files, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 9443, name: https-files, protocol: HTTPS}}
    hosts: ["files.example.com"]
    tls:
      mode: MUTUAL
      serverCertificate: {tmp_path / "tls.crt"}
      privateKey: {tmp_path / "tls.key"}
      caCertificates: {tmp_path / "tls.crt"}
  - port: {{number: 9443, name: https-sds, protocol: HTTPS}}
    hosts: ["sds.example.com"]
    tls: {{mode: MUTUAL, credentialName: bookinfo-credential}}
"""
    resources = load_documents(text).resources
    mesh = Mesh(resources, {"gateway": gateway_node()}, creds=credentials("gateway-tls.yaml"))
    (listener,) = mesh.dicts("gateway", LISTENER_TYPE)
    files, sds = listener["filter_chains"]
    context = files["transport_socket"]["typed_config"]
    assert context["require_client_certificate"] is True
    assert context["common_tls_context"]["tls_certificates"][0]["certificate_chain"] == {
        "filename": str(tmp_path / "tls.crt")
    }
    common = sds["transport_socket"]["typed_config"]["common_tls_context"]
    assert common["validation_context_sds_secret_config"]["name"] == (
        "kubernetes://bookinfo-credential-cacert"
    )
    _check(envoy_binary, mesh, "gateway", tmp_path)


_STRICT = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: %s}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls: {9080: {mode: DISABLE}}
"""


@pytest.mark.parametrize(
    ("mode", "peer", "rules"),
    [
        (None, "STRICT", "destination-rule-all.yaml"),
        (None, "PERMISSIVE", "destination-rule-all-mtls.yaml"),
        ("process", "STRICT", "destination-rule-all-mtls.yaml"),
        ("process", "PERMISSIVE", "destination-rule-all.yaml"),
    ],
)
def test_mesh_mtls(
    envoy_binary: str, tmp_path: Path, mode: str | None, peer: str, rules: str
) -> None:
    """Auto mTLS or ISTIO_MUTUAL clusters, inbound chains per PeerAuthentication mode (with a
    port-level exception), SDS from the agent's socket: all accepted by Envoy."""
    policies = load_documents(_STRICT % peer).resources
    mesh = build_mesh(BOOKINFO, NET + rules, mode=mode, mtls=True, resources=policies)
    for node in ("productpage-v1", "reviews-v2"):
        _check(envoy_binary, mesh, node, tmp_path)


@pytest.mark.parametrize("mode", ["PERMISSIVE", "STRICT", "DISABLE"])
def test_sniffed_ports(envoy_binary: str, tmp_path: Path, mode: str) -> None:
    """Ports that name no protocol: the client's sniffing outbound listeners (one on a VIP),
    the server's four (or two) inbound chains per port and its http_inspector disabled for
    the named TCP port, with a detection timeout set."""
    policy = load_documents(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: default, namespace: default}\n"
        f"spec: {{mtls: {{mode: {mode}}}}}\n",
        "pa.yaml",
    ).resources
    mesh = build_mesh(
        "sniffing.yaml",
        mtls=True,
        resources=policy,
        mesh=MeshConfig(protocol_detection_timeout=5.0),
    )
    _check(envoy_binary, mesh, "client", tmp_path)
    _check(envoy_binary, mesh, "echo", tmp_path)
