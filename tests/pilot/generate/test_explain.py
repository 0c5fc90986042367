from __future__ import annotations

import pytest

from pilot.generate import explain
from pymesh.errors import ValidationError
from tests.pilot.generate._mesh import BOOKINFO, build_mesh

NET = "bookinfo/networking/"


def test_render_names_every_step() -> None:
    mesh = build_mesh(
        BOOKINFO, NET + "destination-rule-all.yaml", NET + "virtual-service-reviews-80-20.yaml"
    )
    result = explain(mesh.ctx, mesh.nodes["productpage-v1"], "reviews:9080/reviews/1")
    text = result.render()
    for expected in (
        "listener         0.0.0.0_9080",
        "route config     9080",
        "virtual service  default/reviews",
        "(weight 80: 80% of requests)",
        "(weight 20: 20% of requests)",
        "timeout          0s (disabled)",
        "retries          2 attempts on connect-failure,refused-stream,unavailable,"
        "cancelled,retriable-status-codes (status 503)",
    ):
        assert expected in text
    # A split has no one cluster: every destination, its chance and its endpoints.
    assert result.cluster is None and result.subset is None
    split = [(c.subset, c.weight, c.chance, len(c.endpoints)) for c in result.clusters]
    assert split == [("v1", 80, 80.0, 1), ("v2", 20, 20.0, 1)]
    assert text.count("  endpoints") == 2
    assert result.retries is not None and result.retries.status_codes == (503,)


def test_route_name_and_timeout_as_configured() -> None:
    mesh = build_mesh(BOOKINFO, NET + "destination-rule-all.yaml")
    result = explain(mesh.ctx, mesh.nodes["productpage-v1"], "http://reviews:9080/reviews/1")
    assert result.cluster == "outbound|9080||reviews.default.svc.cluster.local"
    text = result.render()
    assert "route            default" in text
    assert result.timeout == 0.0 and "timeout          0s (disabled)" in text


def test_malformed_url_is_an_error() -> None:
    mesh = build_mesh(BOOKINFO)
    node = mesh.nodes["productpage-v1"]
    for url in ("http://reviews:port/x", "ftp://reviews/x", "http:///x", "http://[::1/x"):
        with pytest.raises(ValidationError, match="malformed URL"):
            explain(mesh.ctx, node, url)


def test_features_explained() -> None:
    mesh = build_mesh("features.yaml")
    web = mesh.nodes["web-v1"]
    api = "http://api.shop:8080"
    redirect = explain(mesh.ctx, web, api + "/old")
    assert redirect.redirect == {
        "path_redirect": "/new",
        "host_redirect": "api.shop.svc.cluster.local",
        "response_code": "PERMANENT_REDIRECT",
    }
    assert explain(mesh.ctx, web, api + "/gone").direct_response == 410
    legacy = explain(mesh.ctx, web, api + "/legacy/x")
    assert legacy.rewrite == {"prefix_rewrite": "/", "host_rewrite_literal": "legacy-api"}
    canary = explain(mesh.ctx, web, api + "/v2/items", {":method": "POST"})
    assert (canary.subset, canary.timeout, canary.route) == ("v2", 10.0, "canary")
    # ignoreUriCase covers exact and prefix matches only (Istio's API; Envoy ignores
    # case_sensitive for regexes).
    assert explain(mesh.ctx, web, api + "/V2/items", {":method": "POST"}).rule_index == 7
    assert canary.retries is not None and canary.retries.per_try_timeout == 2.0
    assert ", per try timeout 2s" in canary.render()
    by_query = explain(mesh.ctx, web, api + "/x?debug=1", {"x-user": "tester"})
    assert by_query.route == "canary.by-user"
    slow = explain(mesh.ctx, web, api + "/slow")
    assert slow.fault is not None and slow.fault.delay == 1.5
    assert slow.fault.delay_percent == 12.5 and slow.fault.abort_percent == 0.1
    assert "fault            delay 1.5s for 12.5% of requests; abort " in slow.render()
    skipped = explain(mesh.ctx, web, api + "/slow", {"x-skip-fault": ""})
    assert skipped.rule_index == 7 and skipped.fault is None
    assert skipped.mirrors == (
        ("outbound|80||web.shop.svc.cluster.local", 100.0),
        ("outbound|8080|v2|api.shop.svc.cluster.local", 50.0),
    )
    grpc = explain(mesh.ctx, web, "http://api.shop:9090/pkg.Svc/Call")
    assert grpc.cluster == "outbound|9090||api.shop.svc.cluster.local"
    assert grpc.retries is None
    assert len(grpc.endpoints) == 2


def test_where_matching_stops() -> None:
    mesh = build_mesh(BOOKINFO)
    node = mesh.nodes["productpage-v1"]
    assert explain(mesh.ctx, node, "http://reviews:7777/").error == (
        "no HTTP listener for port 7777"
    )
    gateway = explain(mesh.ctx, mesh.nodes["gateway"], "http://x:8080/")
    assert gateway.error == "no HTTP listener for port 8080"
