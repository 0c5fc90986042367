from __future__ import annotations

from pathlib import Path

import pytest

from pilot.model import MeshConfig
from pilot.model.mesh import DEFAULT_RETRY_ON
from pymesh.errors import ConfigError, ValidationError


def test_defaults_are_istios() -> None:
    mesh = MeshConfig()
    assert mesh.trust_domain == "cluster.local"
    assert mesh.root_namespace == "istio-system"
    assert mesh.outbound_traffic_policy == "ALLOW_ANY"
    assert mesh.default_retries == 2
    assert mesh.default_retry_on == DEFAULT_RETRY_ON
    assert (mesh.inbound_port, mesh.outbound_port) == (15006, 15001)
    assert mesh.mixer_address is None and mesh.zipkin_address is None


def test_istio_mesh_config_fields() -> None:
    mesh = MeshConfig.from_yaml(
        """
trustDomain: example.org
rootNamespace: mesh-root
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
connectTimeout: 2s
defaultHttpRetryPolicy: {attempts: 5, retryOn: "connect-failure,503"}
defaultConfig:
  discoveryAddress: pilot:15010
  tracing: {sampling: 50, zipkin: {address: zipkin:9411}}
  envoyAccessLogService: {address: mixer:9091}
enableTracing: true
"""
    )
    assert mesh.trust_domain == "example.org"
    assert mesh.root_namespace == "mesh-root"
    assert mesh.outbound_traffic_policy == "REGISTRY_ONLY"
    assert mesh.connect_timeout == 2.0
    assert (mesh.default_retries, mesh.default_retry_on) == (5, "connect-failure,503")
    assert mesh.zipkin_address == "zipkin:9411" and mesh.trace_sampling == 50.0
    assert mesh.mixer_address == "mixer:9091"


def test_configmap_form(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\n"
        "data:\n  mesh: |\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n"
    )
    assert MeshConfig.load(path).outbound_traffic_policy == "REGISTRY_ONLY"


def test_empty_document_is_the_default() -> None:
    assert MeshConfig.from_yaml("") == MeshConfig()


_EP = "extensionProviders[0]"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("outboundTrafficPolicy: {mode: DENY}", "outboundTrafficPolicy.mode"),
        ("defaultHttpRetryPolicy: {attempts: -1}", "defaultHttpRetryPolicy.attempts"),
        ("trustDomain: ''", "trustDomain"),
        ("connectTimeout: soon", "connectTimeout"),
        ("defaultConfig: {tracing: {sampling: 101}}", "defaultConfig.tracing.sampling"),
        ("extensionProviders: [{name: Bad_Name, envoyExtAuthzHttp: {}}]", _EP + ".name"),
        (
            "extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: x, port: 0}}]",
            _EP + ".envoyExtAuthzGrpc.port",
        ),
        (
            "extensionProviders: [{name: a, envoyExtAuthzHttp: {service: x, port: 1, timout: 1s}}]",
            _EP + ".envoyExtAuthzHttp.timout",
        ),
        (
            "extensionProviders: [{name: a, envoyExtAuthzHttp: "
            "{service: x, port: 1, headersToUpstreamOnAllow: ['*']}}]",
            _EP + ".envoyExtAuthzHttp.headersToUpstreamOnAllow[0]",
        ),
        (
            "extensionProviders: [{name: a, envoyExtAuthzHttp: "
            "{service: x, port: 1, statusOnError: '999'}}]",
            _EP + ".envoyExtAuthzHttp.statusOnError",
        ),
    ],
)
def test_invalid_values_name_their_field(text: str, path: str) -> None:
    with pytest.raises(ValidationError) as err:
        MeshConfig.from_yaml(text, "mesh.yaml")
    assert err.value.path == path and err.value.source == "mesh.yaml"


def test_extension_providers() -> None:
    mesh = MeshConfig.from_yaml(
        "extensionProviders:\n"
        "- name: authz\n"
        "  envoyExtAuthzHttp: {service: ext.foo.svc.cluster.local, port: 8000, timeout: 2s,"
        " pathPrefix: /check, failOpen: true, statusOnError: '503'}\n"
        "- name: zipkin\n"
        "  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}\n"
    )
    authz = mesh.extension_provider("authz")
    assert authz is not None and authz.ext_authz is not None
    assert authz.ext_authz.timeout == 2.0 and authz.ext_authz.status_on_error == 503
    assert authz.ext_authz.path_prefix == "/check" and authz.ext_authz.fail_open
    zipkin = mesh.extension_provider("zipkin")
    assert zipkin is not None and zipkin.ext_authz is None
    assert mesh.extension_provider("missing") is None


def test_missing_file() -> None:
    with pytest.raises(ConfigError):
        MeshConfig.load("/nonexistent/mesh.yaml")
