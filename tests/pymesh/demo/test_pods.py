"""Pods from Deployments as pilot's API returns them, for our manifests and Istio's."""

from pathlib import Path

import pytest

from pymesh.config import encode, load_path
from pymesh.demo.images import Role
from pymesh.demo.manifests import manifests_dir, seed_files
from pymesh.demo.pods import MAX_REPLICAS, desired_pods, pod_env

ISTIO = Path(__file__).resolve().parents[3].parent / "shared" / "istio-samples"


def api_items(path):
    """What ``GET /resources`` returns for the Deployments and Pods of ``path``."""
    items = []
    for r in load_path(path).resources:
        if r.kind not in ("Deployment", "Pod"):
            continue
        meta = {"name": r.name, "namespace": r.namespace}
        if r.labels:
            meta["labels"] = dict(r.labels)
        items.append({"kind": r.kind, "metadata": meta, "spec": encode(r.spec)})
    return items


def test_seeded_manifests_give_the_bookinfo_pods():
    pods = desired_pods([i for f in seed_files() for i in api_items(f)])
    by_name = {p.name: p for p in pods}
    assert sorted(by_name) == sorted(
        [
            "details-v1",
            "httpbin",
            "istio-ingressgateway",
            "productpage-v1",
            "ratings-v1",
            "reviews-v1",
            "reviews-v2",
            "reviews-v3",
            "sleep",
        ]
    )
    reviews = by_name["reviews-v2"]
    assert reviews.role is Role.APP
    assert reviews.stand_in.module == "pymesh.samples.bookinfo.reviews"
    assert reviews.stand_in.args == ("--version", "v2")
    assert reviews.container_port == 9080
    assert reviews.service_account == "bookinfo-reviews"
    assert dict(reviews.labels) == {"app": "reviews", "version": "v2"}
    assert reviews.owner == "Deployment/reviews-v2"
    assert by_name["httpbin"].container_port == 8080
    assert by_name["sleep"].role is Role.CLIENT and not by_name["sleep"].runs_app
    gateway = by_name["istio-ingressgateway"]
    assert (gateway.role, gateway.namespace) == (Role.GATEWAY, "istio-system")
    # sorted by namespace, then name: addresses are handed out in this order
    assert [(p.namespace, p.name) for p in pods] == sorted((p.namespace, p.name) for p in pods)


def test_the_manifests_load_cleanly():
    result = load_path(manifests_dir())
    assert not result.warnings
    assert len(result.resources) >= 25


@pytest.mark.skipif(not ISTIO.is_dir(), reason="../shared/istio-samples not present")
def test_the_same_objects_as_istios_bookinfo():
    """Our bookinfo.yaml and destination-rule-all.yaml define what Istio's do: same kinds,
    names, ports, selectors, labels and service accounts (images and outlier detection
    differ on purpose)."""
    ours = load_path(manifests_dir() / "bookinfo.yaml").resources
    theirs = [
        r
        for r in load_path(ISTIO / "bookinfo/platform/kube/bookinfo.yaml").resources
        if r.kind != "DestinationRule"
    ]
    assert sorted(r.key for r in ours) == sorted(r.key for r in theirs)
    mine = {p.key: p for p in desired_pods(api_items(manifests_dir() / "bookinfo.yaml"))}
    istio = {
        p.key: p for p in desired_pods(api_items(ISTIO / "bookinfo/platform/kube/bookinfo.yaml"))
    }
    assert mine.keys() == istio.keys()
    for key, pod in mine.items():
        other = istio[key]
        assert (pod.labels, pod.service_account, pod.container_port, pod.stand_in) == (
            other.labels,
            other.service_account,
            other.container_port,
            other.stand_in,
        )
    for r in ours:
        if r.kind == "Service":
            twin = next(t for t in theirs if t.key == r.key)
            assert encode(r.spec) == encode(twin.spec)
    dr_ours = {
        r.name: r.spec for r in load_path(manifests_dir() / "destination-rule-all.yaml").resources
    }
    dr_theirs = {
        r.name: r.spec
        for r in load_path(ISTIO / "bookinfo/networking/destination-rule-all.yaml").resources
    }
    assert dr_ours.keys() == dr_theirs.keys()
    for name, spec in dr_ours.items():
        assert spec.subsets == dr_theirs[name].subsets


@pytest.mark.skipif(not ISTIO.is_dir(), reason="../shared/istio-samples not present")
def test_istio_task_manifests_start_pods_too():
    pods = desired_pods(api_items(ISTIO / "docs-extracted/traffic-management/mirroring"))
    assert [(p.name, p.version, p.container_port, p.stand_in.module) for p in pods] == [
        ("httpbin-v1", "v1", 80, "pymesh.samples.httpbin"),
        ("httpbin-v2", "v2", 80, "pymesh.samples.httpbin"),
    ]
    details = desired_pods(api_items(ISTIO / "bookinfo/platform/kube/bookinfo-details-v2.yaml"))
    assert details[0].stand_in.args == ("--version", "v2")


def test_replicas_and_revisions():
    item = {
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "replicas": 3,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "kennethreitz/httpbin"}]},
            },
        },
    }
    pods = desired_pods([item])
    assert [p.key for p in pods] == ["web-1.shop", "web-2.shop", "web-3.shop"]
    assert pods[0].container_port is None and not pods[0].runs_app
    changed = {**item, "spec": {**item["spec"], "replicas": 50}}
    many = desired_pods([changed])
    assert len(many) == MAX_REPLICAS
    assert many[0].revision != pods[0].revision


def test_pod_env_points_at_the_sidecar_and_drops_inherited_proxies():
    env = pod_env(
        "sleep",
        "default",
        "sleep",
        "127.0.4.17",
        {"PATH": "/bin", "HTTPS_PROXY": "http://corp:3128", "no_proxy": "x"},
    )
    assert env["HTTP_PROXY"] == env["http_proxy"] == "http://127.0.4.17:15001"
    assert env["POD_NAME"] == "sleep" and env["POD_NAMESPACE"] == "default"
    assert env["INSTANCE_IP"] == "127.0.4.17" and env["SERVICE_ACCOUNT"] == "sleep"
    assert "HTTPS_PROXY" not in env and env["no_proxy"] == "localhost"
    assert env["PATH"] == "/bin"


def _namespace(name, **labels):
    meta = {"name": name, **({"labels": labels} if labels else {})}
    return {"kind": "Namespace", "metadata": meta}


def _deployment(namespace, labels=None, image="docker.io/kong/httpbin:0.1.0", port=8080):
    container = {"name": "c", "image": image, "ports": [{"containerPort": port}]}
    return {
        "kind": "Deployment",
        "metadata": {"name": "httpbin", "namespace": namespace},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "httpbin", **(labels or {})}},
                "spec": {"containers": [container]},
            }
        },
    }


def test_injection_follows_the_namespace_label_and_the_pods_own():
    """As if every manifest went through kube-inject, but for a namespace labelled
    istio-injection=disabled (the tasks' legacy) and a pod labelled inject "false"."""
    pods = desired_pods(
        [
            _namespace("foo"),
            _namespace("bar", **{"istio-injection": "enabled"}),
            _namespace("legacy", **{"istio-injection": "disabled"}),
            _deployment("foo"),
            _deployment("bar", {"sidecar.istio.io/inject": "false"}),
            _deployment("legacy"),
            _deployment("nolabel"),
        ]
    )
    sidecars = {p.namespace: p.sidecar for p in pods}
    assert sidecars == {"foo": True, "bar": False, "legacy": False, "nolabel": True}
    by_ns = {p.namespace: p for p in pods}
    # Behind a sidecar the app listens where only the sidecar knows; alone, on its own port.
    assert by_ns["foo"].app_ports(captured=False) == {8080: 28080}
    assert by_ns["foo"].app_ports(captured=True) == {}
    assert by_ns["legacy"].app_ports(captured=False) == {}
    # Labelling the namespace creates its pods again, the other way.
    relabelled = desired_pods(
        [_namespace("foo", **{"istio-injection": "disabled"}), _deployment("foo")]
    )
    assert not relabelled[0].sidecar and relabelled[0].revision != by_ns["foo"].revision


def test_a_gateway_is_its_own_proxy_whatever_the_namespace_says():
    gateway = _deployment("legacy", {"istio": "ingressgateway"}, image="istio/proxyv2:1.24.0")
    pods = desired_pods([_namespace("legacy", **{"istio-injection": "disabled"}), gateway])
    assert pods[0].role is Role.GATEWAY and pods[0].sidecar


def test_pod_env_without_a_sidecar_uses_the_service_proxy():
    env = pod_env("curl", "legacy", "curl", "127.0.4.18", {}, service_proxy="127.0.4.1:15081")
    assert env["HTTP_PROXY"] == env["http_proxy"] == "http://127.0.4.1:15081"
