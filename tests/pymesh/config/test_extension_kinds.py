"""EnvoyFilter, Telemetry, RequestAuthentication and ConfigMap: typed, validated, and reported
when pymesh does not enforce them yet."""

from __future__ import annotations

import pytest

from pymesh.config import load_documents
from pymesh.config.enforcement import NOT_ENFORCED
from pymesh.config.model import ConfigMap, EnvoyFilter, RequestAuthentication, Telemetry
from pymesh.config.model.networking import ApplyTo, PatchContext, PatchOperation
from pymesh.config.model.telemetry import IstioMetric, TagOperation, WorkloadMode
from pymesh.config.protocol import protocol_of
from pymesh.errors import ValidationError

ENVOY_FILTER = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ratelimit, namespace: istio-system}
spec:
  workloadSelector: {labels: {istio: ingressgateway}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: GATEWAY
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: {name: envoy.filters.http.router}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
          domain: ratelimit
          failure_mode_deny: true
          descriptors: [{entries: [{key: a, value: null}]}]
"""


def _one(text: str, kind: type):
    [res] = load_documents(text, "t.yaml").resources
    assert isinstance(res.spec, kind)
    return res


def test_envoy_filter_patch_value_is_kept_as_frozen_json() -> None:
    res = _one(ENVOY_FILTER, EnvoyFilter)
    [patch] = res.spec.config_patches
    assert patch.apply_to is ApplyTo.HTTP_FILTER
    assert patch.match.context is PatchContext.GATEWAY
    assert patch.match.listener.filter_chain.filter.sub_filter.name == "envoy.filters.http.router"
    assert patch.patch.operation is PatchOperation.INSERT_BEFORE
    typed = patch.patch.value["typed_config"]
    assert typed["domain"] == "ratelimit" and typed["failure_mode_deny"] is True
    assert typed["descriptors"][0]["entries"][0]["value"] is None
    hash(res.spec)  # frozen all the way down


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        ("      operation: INSERT_BEFORE\n", "", "patch.operation", "operation is required"),
        ("  - applyTo: HTTP_FILTER\n    match:", "  - match:", "applyTo",
         "applyTo is required"),
        ("      operation: INSERT_BEFORE\n      value:\n",
         "      operation: ADD\n      extra:\n", "patch.extra", "unknown field 'extra'"),
        (ENVOY_FILTER[ENVOY_FILTER.index("    patch:"):], "    patch: {operation: ADD}\n",
         "patch.value", "ADD needs a value"),
        ("applyTo: HTTP_FILTER", "applyTo: CLUSTER", "patch.operation",
         "INSERT_BEFORE applies only to"),
        ("context: GATEWAY", "context: SOMEWHERE", "match.context", "invalid value"),
    ],
)  # fmt: skip
def test_envoy_filter_refusals_name_the_field(old: str, new: str, path: str, message: str) -> None:
    assert old in ENVOY_FILTER
    with pytest.raises(ValidationError) as info:
        load_documents(ENVOY_FILTER.replace(old, new, 1), "t.yaml")
    assert f"spec.configPatches[0].{path}: " in str(info.value)
    assert message in str(info.value)


TELEMETRY = """\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: zipkin}]
    randomSamplingPercentage: 100
    customTags:
      cluster_id: {environment: {name: ISTIO_META_CLUSTER_ID, defaultValue: Kubernetes}}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        grpc_response_status: {operation: REMOVE}
        request_host: {value: request.host}
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: response.code >= 400}
"""


def test_telemetry_parses_every_section() -> None:
    spec = _one(TELEMETRY, Telemetry).spec
    [tracing] = spec.tracing
    assert tracing.random_sampling_percentage == 100.0
    assert tracing.custom_tags["cluster_id"].environment.default_value == "Kubernetes"
    [override] = spec.metrics[0].overrides
    assert override.match.metric is IstioMetric.REQUEST_COUNT
    assert override.match.mode is WorkloadMode.CLIENT
    assert override.tag_overrides["grpc_response_status"].operation is TagOperation.REMOVE
    assert override.tag_overrides["request_host"].value == "request.host"
    assert spec.access_logging[0].filter.expression == "response.code >= 400"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("randomSamplingPercentage: 100", "randomSamplingPercentage: 150", "not within 0..100"),
        ("{operation: REMOVE}", "{operation: REMOVE, value: x}", "must not be set when"),
        ("{value: request.host}", "{operation: UPSERT}", "must be set when operation is UPSERT"),
        ("providers: [{name: zipkin}]", "providers: [{name: a}, {name: b}]", "only one tracing"),
        ("{metric: REQUEST_COUNT, mode: CLIENT}", "{metric: REQUEST_COUNT, customMetric: x}",
         "only one of metric, customMetric"),
        ("filter: {expression: response.code >= 400}", "filter: {expresion: x}", "expresion"),
    ],
)  # fmt: skip
def test_telemetry_refusals(old: str, new: str, message: str) -> None:
    assert old in TELEMETRY
    with pytest.raises(ValidationError, match=message):
        load_documents(TELEMETRY.replace(old, new, 1), "t.yaml")


PEER_AUTHN = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}
"""
REQUEST_AUTHN = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-example, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: https://example.com/jwks.json
    fromHeaders: [{name: x-jwt-assertion, prefix: "Bearer "}]
    outputClaimToHeaders: [{header: x-jwt-group, claim: group}]
    forwardOriginalToken: true
"""


def test_request_authentication_parses() -> None:
    [rule] = _one(REQUEST_AUTHN, RequestAuthentication).spec.jwt_rules
    assert rule.issuer == "testing@secure.istio.io"
    assert rule.from_headers[0].prefix == "Bearer "
    assert rule.output_claim_to_headers[0].claim == "group"
    assert rule.forward_original_token


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("jwksUri: https://example.com/jwks.json", "jwksUri: ftp://example.com/k",
         r"is not an http\(s\) URL"),
        ("jwksUri: https://example.com/jwks.json", "jwks: '{\"keys\": []}'",
         "non-empty keys list"),
        ("jwksUri: https://example.com/jwks.json", "jwks: 'not json'", "JSON Web Key Set"),
        ("{header: x-jwt-group, claim: group}", "{header: 'bad header', claim: group}",
         "invalid header name"),
        ("  - issuer: testing@secure.istio.io\n",
         "  - issuer: testing@secure.istio.io\n  - issuer: testing@secure.istio.io\n",
         "already in jwtRules"),
        ("    forwardOriginalToken: true\n", "    forwardOriginalToken: yes please\n",
         "expected true or false"),
    ],
)  # fmt: skip
def test_request_authentication_refusals(old: str, new: str, message: str) -> None:
    assert old in REQUEST_AUTHN
    with pytest.raises(ValidationError, match=message):
        load_documents(REQUEST_AUTHN.replace(old, new, 1), "t.yaml")


def test_config_map_fields_sit_beside_metadata() -> None:
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ratelimit-config}\n"
        "data:\n  config.yaml: |\n    domain: ratelimit\n"
    )
    res = _one(text, ConfigMap)
    assert res.namespace == "default"
    assert res.spec.data["config.yaml"] == "domain: ratelimit\n"
    with pytest.raises(ValidationError, match=r"data\[bad/key\]: invalid key"):
        load_documents(text.replace("config.yaml", "bad/key"), "t.yaml")
    with pytest.raises(ValidationError, match="also in data"):
        load_documents(text + "binaryData: {config.yaml: eA==}\n", "t.yaml")
    # Unlike the Istio kinds, a ConfigMap has no spec: a stray one is an unknown field.
    with pytest.raises(ValidationError, match="unknown field 'spec'"):
        load_documents(text + "spec: {}\n", "t.yaml")


TLS_ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sni, namespace: foo}
spec:
  hosts: [a.example.com]
  tls:
  - match: [{sniHosts: [a.example.com]}]
    route: [{destination: {host: a.example.com}}]
"""


def test_fields_not_enforced_yet_are_reported_when_loaded() -> None:
    result = load_documents(TLS_ROUTE, "t.yaml")
    [entry] = [e for e in NOT_ENFORCED if e.kind == "VirtualService"]
    assert [(w.path, w.message) for w in result.warnings] == [
        ("spec.tls", f"tls is accepted but not enforced: {entry.consequence}")
    ]


def test_gateway_servers_not_served_are_reported_when_loaded() -> None:
    text = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: foo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: 31400, name: tcp, protocol: TCP}, hosts: ["*"]}
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
"""
    warnings = load_documents(text, "t.yaml").warnings
    assert [w.path for w in warnings] == ["spec.servers[2]"], warnings
    assert "does not listen for a TLS server with TLS mode PASSTHROUGH" in warnings[0].message


def test_peer_authentication_loads_without_a_not_enforced_warning() -> None:
    """Sidecars require and offer mutual TLS as PeerAuthentication says."""
    result = load_documents(PEER_AUTHN, "t.yaml")
    assert not [w for w in result.warnings if "not enforced" in w.message], result.warnings


def test_security_kinds_load_without_a_not_enforced_warning() -> None:
    """Both proxies enforce AuthorizationPolicy and RequestAuthentication."""
    policy = (
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: deny-all, namespace: foo}\nspec: {}\n"
    )
    for text in (REQUEST_AUTHN, policy):
        result = load_documents(text, "t.yaml")
        assert not [w for w in result.warnings if "not enforced" in w.message], result.warnings


def test_telemetry_parts_not_enforced_yet_are_reported_by_field() -> None:
    result = load_documents(TELEMETRY, "t.yaml")
    assert [(w.path, w.message.partition(":")[0]) for w in result.warnings] == [
        # Mixer applies metric overrides; the sidecars' own /stats/prometheus does not.
        ("spec.metrics[0].overrides[0]", "overrides[0] is accepted but not enforced"),
        ("spec.accessLogging[0].providers", "providers is accepted but not enforced"),
    ]
    target = TELEMETRY.replace("spec:\n", "spec:\n  targetRef: {kind: Service, name: reviews}\n", 1)
    warned = [w.path for w in load_documents(target, "t.yaml").warnings]
    assert "spec.targetRef" in warned


def test_envoy_filter_is_enforced_so_not_reported() -> None:
    result = load_documents(ENVOY_FILTER, "t.yaml")
    assert not [w for w in result.warnings if "not enforced" in w.message]


def test_service_ports_without_a_protocol_are_sniffed_so_not_reported() -> None:
    """An unnamed port is Istio's Unsupported protocol, which the sidecars sniff (HTTP or TCP
    per connection): nothing to warn about."""
    text = """\
apiVersion: v1
kind: Service
metadata: {name: raw, namespace: foo}
spec:
  selector: {app: raw}
  ports:
  - {name: web, port: 7000}
  - {name: tcp-db, port: 7001}
"""
    result = load_documents(text, "t.yaml")
    assert list(result.warnings) == []
    assert [protocol_of(p.name, p.app_protocol) for p in result.resources[0].spec.ports] == [
        "UNSUPPORTED",
        "TCP",
    ]


def test_security_policies_on_gateway_api_targets_are_reported_when_loaded() -> None:
    """Istio's Gateway API variants (authz-ingress, authn-policy) name a Kubernetes Gateway
    that pymesh does not run: the policy is stored, and the user is told it applies nowhere."""
    for kind, api in (("AuthorizationPolicy", "v1"), ("RequestAuthentication", "v1")):
        text = (
            f"apiVersion: security.istio.io/{api}\nkind: {kind}\n"
            "metadata: {name: p, namespace: foo}\n"
            "spec:\n  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n"
        )
        warnings = load_documents(text, "t.yaml").warnings
        assert [(w.path, w.message.partition(":")[0]) for w in warnings] == [
            ("spec.targetRef", "targetRef is accepted but not enforced")
        ], warnings
        assert "applies to no proxy" in warnings[0].message
