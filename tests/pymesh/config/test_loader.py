"""Loading: every upstream sample loads unchanged, key values parse as expected, and the
loader's file handling (directories, JSON, lists, duplicates, unknown kinds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pymesh.config import load_documents, load_path
from pymesh.config.codec import decode, encode
from pymesh.config.issues import Reporter
from pymesh.config.model import (
    Action,
    AuthorizationPolicy,
    ClientTLSMode,
    Deployment,
    DestinationRule,
    Gateway,
    Location,
    MTLSMode,
    PeerAuthentication,
    Resolution,
    Service,
    ServiceAccount,
    ServiceEntry,
    SimpleLB,
    VirtualService,
)
from pymesh.errors import ConfigError, ValidationError
from tests.pymesh.config._samples import SAMPLES, sample_files

_SAMPLE_PARAMS = [pytest.param(p, id=str(p.relative_to(SAMPLES))) for p in sample_files()] or [
    pytest.param(
        None, marks=pytest.mark.skip(reason=f"Istio samples not found at {SAMPLES.resolve()}")
    )
]


@pytest.mark.parametrize("path", _SAMPLE_PARAMS)
def test_every_sample_loads_unchanged(path: Path) -> None:
    result = load_path(path)
    assert result.resources, "each sample file holds at least one resource pymesh reads"
    assert not result.skipped
    for res in result.resources:
        assert res.source == str(path)
        assert res.namespace
        # The model round-trips: encoding a spec and decoding it again gives the same value.
        again = decode(type(res.spec), encode(res.spec), "spec", Reporter())
        assert again == res.spec


def test_whole_samples_tree_loads_as_one_directory(samples: Path) -> None:
    result = load_path(samples)
    kinds = {r.kind for r in result.resources}
    assert kinds >= {
        "VirtualService",
        "DestinationRule",
        "Gateway",
        "ServiceEntry",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "Service",
        "ServiceAccount",
        "Deployment",
    }
    # Several samples define the same VirtualService (e.g. reviews); the later one wins, noted.
    assert any("is defined again" in w.message for w in result.warnings)


def _one(path: Path, kind: type, name: str, namespace: str = "default"):
    result = load_path(path)
    found = [r for r in result.of_kind(kind) if r.name == name and r.namespace == namespace]
    assert len(found) == 1, [r.ref for r in result.resources]
    return found[0]


def test_reviews_test_v2_routes_jason_to_v2(samples: Path) -> None:
    vs = _one(
        samples / "bookinfo/networking/virtual-service-reviews-test-v2.yaml",
        VirtualService,
        "reviews",
    )
    assert vs.api_version == "networking.istio.io/v1"
    assert vs.spec.hosts == ("reviews",)
    first, second = vs.spec.http
    (match,) = first.match
    assert match.headers["end-user"].exact == "jason"
    assert match.headers["end-user"].prefix is None
    assert [(d.destination.host, d.destination.subset) for d in first.route] == [("reviews", "v2")]
    assert second.match == ()
    assert second.route[0].destination.subset == "v1"


def test_destination_rule_all_subsets(samples: Path) -> None:
    result = load_path(samples / "bookinfo/networking/destination-rule-all.yaml")
    rules = {r.name: r.spec for r in result.of_kind(DestinationRule)}
    assert set(rules) == {"productpage", "reviews", "ratings", "details"}
    assert [s.name for s in rules["reviews"].subsets] == ["v1", "v2", "v3"]
    assert rules["reviews"].subset("v2").labels == {"version": "v2"}
    assert [s.name for s in rules["ratings"].subsets] == ["v1", "v2", "v2-mysql", "v2-mysql-vm"]
    assert rules["details"].traffic_policy is None


def test_destination_rule_all_mtls(samples: Path) -> None:
    dr = _one(
        samples / "bookinfo/networking/destination-rule-all-mtls.yaml", DestinationRule, "reviews"
    )
    assert dr.spec.traffic_policy.tls.mode is ClientTLSMode.ISTIO_MUTUAL


def test_circuit_breaking_connection_pool(samples: Path) -> None:
    path = samples / "docs-extracted/traffic-management/circuit-breaking"
    dr = _one(path / "destination-rule-httpbin-cb.yaml", DestinationRule, "httpbin")
    assert dr.api_version == "networking.istio.io/v1alpha3"
    pool = dr.spec.traffic_policy.connection_pool
    assert pool.tcp.max_connections == 1
    assert pool.http.http1_max_pending_requests == 1
    assert pool.http.max_requests_per_connection == 1
    od = dr.spec.traffic_policy.outlier_detection
    assert od.consecutive_5xx_errors == 1
    assert od.interval == 1.0
    assert od.base_ejection_time == 180.0
    assert od.max_ejection_percent == 100


def test_mirroring_percentage(samples: Path) -> None:
    path = samples / "docs-extracted/traffic-management/mirroring/2-httpbin-mirror-v2.yaml"
    (route,) = _one(path, VirtualService, "httpbin").spec.http
    assert route.route[0].destination.subset == "v1"
    assert route.route[0].weight == 100
    assert (route.mirror.host, route.mirror.subset) == ("httpbin", "v2")
    assert route.mirror_percentage.value == 100.0
    assert route.effective_mirror_percentage == 100.0


def test_timeouts_and_faults(samples: Path) -> None:
    tm = samples / "docs-extracted/traffic-management"
    (route,) = _one(
        tm / "request-timeouts/3-reviews-v2-timeout-0.5s.yaml", VirtualService, "reviews"
    ).spec.http
    assert route.timeout == 0.5
    (route,) = _one(
        tm / "egress-control/3-virtualservice-httpbin-ext-timeout-3s.yaml",
        VirtualService,
        "httpbin-ext",
    ).spec.http
    assert route.timeout == 3.0
    delay_vs = _one(
        samples / "bookinfo/networking/virtual-service-ratings-test-delay.yaml",
        VirtualService,
        "ratings",
    )
    delay = delay_vs.spec.http[0].fault.delay
    assert delay.fixed_delay == 7.0
    assert delay.percentage.value == 100.0
    abort_vs = _one(
        samples / "bookinfo/networking/virtual-service-ratings-test-abort.yaml",
        VirtualService,
        "ratings",
    )
    assert abort_vs.spec.http[0].fault.abort.http_status == 500
    # The deprecated integer ``percent`` still loads, with a warning.
    result = load_path(tm / "request-timeouts/2-ratings-delay-2s.yaml")
    (vs,) = result.resources
    assert vs.spec.http[0].fault.delay.percent == 100
    assert vs.spec.http[0].fault.delay.fixed_delay == 2.0
    assert [w.path for w in result.warnings] == ["spec.http[0].fault.delay.percent"]


def test_gateway_and_bound_virtual_service(samples: Path) -> None:
    path = samples / "bookinfo/networking/bookinfo-gateway.yaml"
    gw = _one(path, Gateway, "bookinfo-gateway")
    assert gw.spec.selector == {"istio": "ingressgateway"}
    (server,) = gw.spec.servers
    assert (server.port.number, server.port.protocol, server.hosts) == (8080, "HTTP", ("*",))
    vs = _one(path, VirtualService, "bookinfo")
    assert vs.spec.gateways == ("bookinfo-gateway",)
    uris = [(m.uri.exact, m.uri.prefix) for m in vs.spec.http[0].match]
    assert uris[0] == ("/productpage", None)
    assert uris[1] == (None, "/static")
    assert vs.spec.http[0].route[0].destination.port.number == 9080


def test_certmanager_gateway_keeps_its_namespace(samples: Path) -> None:
    gw = _one(
        samples / "bookinfo/networking/certmanager-gateway.yaml",
        Gateway,
        "cert-manager-gateway",
        "istio-system",
    )
    assert gw.namespace == "istio-system"


def test_service_entries(samples: Path) -> None:
    se = _one(
        samples / "bookinfo/networking/egress-rule-google-apis.yaml", ServiceEntry, "googleapis"
    )
    assert se.spec.resolution is Resolution.DNS
    assert se.spec.location is Location.MESH_EXTERNAL  # the default
    assert [(p.number, p.name, p.protocol) for p in se.spec.ports] == [
        (80, "http", "HTTP"),
        (443, "https", "HTTPS"),
    ]
    dr = _one(
        samples / "bookinfo/networking/egress-rule-google-apis.yaml",
        DestinationRule,
        "originate-tls-for-googleapis",
    )
    tp = dr.spec.traffic_policy
    assert tp.load_balancer.simple is SimpleLB.ROUND_ROBIN
    assert tp.port_level_settings[0].port.number == 443
    assert tp.port_level_settings[0].tls.mode is ClientTLSMode.SIMPLE


def test_security_samples(samples: Path) -> None:
    sec = samples / "docs-extracted/security"
    deny_all = _one(sec / "authz-http/1-deny-all.yaml", AuthorizationPolicy, "deny-all")
    assert deny_all.api_version == "security.istio.io/v1beta1"
    assert deny_all.spec.rules is None  # ALLOW with no rules: deny everything
    assert deny_all.spec.action is Action.ALLOW
    viewer = _one(sec / "authz-http/3-details-viewer.yaml", AuthorizationPolicy, "details-viewer")
    (rule,) = viewer.spec.rules
    assert rule.from_[0].source.principals == ("cluster.local/ns/default/sa/bookinfo-productpage",)
    assert rule.to[0].operation.methods == ("GET",)
    assert viewer.spec.selector.match_labels == {"app": "details"}
    deny = _one(
        sec / "authz-deny/2-deny-method-get-unless-admin.yaml",
        AuthorizationPolicy,
        "deny-method-get",
        "foo",
    )
    assert deny.spec.action is Action.DENY
    assert deny.spec.rules[0].when[0].key == "request.headers[x-token]"
    assert deny.spec.rules[0].when[0].not_values == ("admin",)
    pa = _one(
        sec / "mtls-migration/1-peerauthentication-foo-strict.yaml", PeerAuthentication, "default"
    )
    assert pa.spec.mtls.mode is MTLSMode.STRICT
    assert pa.spec.mode_for_port(8080) is MTLSMode.STRICT


def test_kubernetes_workloads(samples: Path) -> None:
    path = samples / "bookinfo/platform/kube/bookinfo.yaml"
    result = load_path(path)
    svc = _one(path, Service, "reviews")
    assert [(p.port, p.name, p.target_port) for p in svc.spec.ports] == [(9080, "http", None)]
    assert svc.spec.selector == {"app": "reviews"}
    dep = _one(path, Deployment, "reviews-v2")
    assert dep.spec.pod_labels == {"app": "reviews", "version": "v2"}
    assert dep.spec.template.spec.service_account == "bookinfo-reviews"
    assert dep.spec.template.spec.containers[0].ports[0].container_port == 9080
    assert {r.name for r in result.of_kind(ServiceAccount)} == {
        "bookinfo-details",
        "bookinfo-ratings",
        "bookinfo-reviews",
        "bookinfo-productpage",
    }
    httpbin = _one(samples / "httpbin/httpbin.yaml", Service, "httpbin")
    assert httpbin.spec.ports[0].target_port == 8080


def test_default_namespace_is_configurable() -> None:
    text = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n"
    assert load_documents(text).resources[0].namespace == "default"
    assert load_documents(text, default_namespace="foo").resources[0].namespace == "foo"
    explicit = text.replace("{name: a}", "{name: a, namespace: bar}")
    assert load_documents(explicit, default_namespace="foo").resources[0].namespace == "bar"


def test_unknown_and_unsupported_kinds_are_skipped_with_warnings() -> None:
    text = """
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
---
apiVersion: v1
kind: Secret
metadata: {name: c}
data: {a: Yg==}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: e}
spec: {}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa}
"""
    result = load_documents(text, "mixed.yaml")
    assert [r.name for r in result.resources] == ["sa"]
    assert [(s.kind, s.document) for s in result.skipped] == [
        ("Widget", 0),
        ("Secret", 1),
        ("WasmPlugin", 2),
    ]
    # A Secret is not mesh configuration: skipped quietly. The other two are warned about.
    assert [(w.document, w.path) for w in result.warnings] == [(0, "kind"), (2, "kind")]
    assert "unknown kind" in result.warnings[0].message
    assert "not supported by pymesh" in result.warnings[1].message
    assert str(result.warnings[0]).startswith("mixed.yaml:3: document 0: kind: Widget")


def test_a_document_that_is_no_kubernetes_object_is_skipped_with_a_warning() -> None:
    result = load_documents('{"title": "Istio Mesh Dashboard", "panels": []}', "dash.json")
    assert not result.resources
    [skipped] = result.skipped
    assert "not a Kubernetes object" in skipped.reason
    [warning] = result.warnings
    assert "not a Kubernetes object" in warning.message and warning.source == "dash.json"
    # A kind without apiVersion is a broken object, not some other file.
    with pytest.raises(ValidationError, match="apiVersion: required field is missing"):
        load_documents("kind: Service\nmetadata: {name: x}\n", "svc.yaml")


def test_empty_documents_keep_the_index_of_the_others() -> None:
    account = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n"
    text = f"---\n# just a comment\n---\n{account}---\n"
    (res,) = load_documents(text, "x.yaml").resources
    assert res.document == 1


def test_kind_list_is_unpacked() -> None:
    text = """
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ServiceAccount
  metadata: {name: a}
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: b}
  spec: {host: b, subsets: [{name: v_1}]}
"""
    with pytest.raises(ValidationError) as err:
        load_documents(text, "list.yaml")
    assert err.value.path == "items[1].spec.subsets[0].name"


def test_load_path_walks_directories(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {}}}\n"
    (tmp_path / "a" / "one.yaml").write_text(sa.format("one"))
    (tmp_path / "a" / "b" / "two.yml").write_text(sa.format("two"))
    (tmp_path / "three.json").write_text(
        json.dumps({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "three"}})
    )
    (tmp_path / ".hidden" / "four.yaml").write_text(sa.format("four"))
    (tmp_path / "notes.txt").write_text("not: config")
    result = load_path(tmp_path)
    assert sorted(r.name for r in result.resources) == ["one", "three", "two"]
    assert {Path(r.source).name for r in result.resources} == {"one.yaml", "two.yml", "three.json"}


def test_load_path_reports_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_path(tmp_path / "nope.yaml")


def test_later_duplicates_replace_earlier_ones() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec: {host: reviews}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec: {host: ratings}
"""
    result = load_documents(text, "dup.yaml")
    (res,) = result.resources
    assert res.spec.host == "ratings"
    assert res.document == 1
    (warning,) = result.warnings
    assert "defined again" in warning.message
    assert warning.document == 1
