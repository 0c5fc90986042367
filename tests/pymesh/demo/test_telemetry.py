"""The demo's Prometheus finds the pods as a standard ``kubernetes-pods`` job does: through
their ``prometheus.io/*`` annotations, set as Istio's injector sets them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pymesh.demo.images import Role, StandIn
from pymesh.demo.layout import DemoLayout
from pymesh.demo.netns import PodNetwork
from pymesh.demo.pods import PodSpec
from pymesh.demo.runtime import PodRuntime
from pymesh.demo.telemetry import PODS_JOB, pod_targets, prometheus_config

REVIEWS = PodSpec(
    name="reviews-v1",
    namespace="default",
    labels={"app": "reviews", "version": "v1", "pod-template-hash": "x"},
    container_port=9080,
    stand_in=StandIn(Role.APP, "pymesh.samples.bookinfo.reviews"),
    annotations={"prometheus.io/scrape": "true", "prometheus.io/port": "9080"},
)
GATEWAY = PodSpec(name="istio-ingressgateway", namespace="istio-system",
                  stand_in=StandIn(Role.GATEWAY))  # fmt: skip


def test_pods_carry_the_annotations_of_istios_injection(tmp_path: Path) -> None:
    layout = DemoLayout(tmp_path)
    pods = [
        PodRuntime(GATEWAY, "127.0.4.1", layout, "m"),
        PodRuntime(REVIEWS, "127.0.4.12", layout, "m"),
    ]
    [group] = pod_targets(pods, mtls=False)  # the gateway has no agent without mTLS
    assert group["targets"] == ["127.0.4.12:9080"]
    labels = group["labels"]
    assert labels["__meta_kubernetes_pod_annotation_prometheus_io_port"] == "15020"
    assert labels["__meta_kubernetes_pod_annotation_prometheus_io_path"] == "/stats/prometheus"
    assert labels["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == "true"
    assert labels["__meta_kubernetes_pod_label_pod_template_hash"] == "x"
    assert REVIEWS.scrape[1] == '{"port": "9080", "scrape": "true"}'  # for the agent
    assert len(pod_targets(pods, mtls=True)) == 2
    # netns mode: only the agent (mTLS) serves a captured pod's metrics port, and a pod
    # without a sidecar has none.
    captured = PodRuntime(REVIEWS, "10.244.99.12", layout, "m")
    captured.network = PodNetwork("pmp12", "10.244.99.12")
    bare = PodRuntime(dataclasses.replace(REVIEWS, sidecar=False), "10.244.99.13", layout, "m")
    bare.network = PodNetwork("pmp13", "10.244.99.13")
    assert pod_targets([captured, bare], mtls=False) == []
    [group] = pod_targets([captured, bare], mtls=True)
    assert group["labels"]["__meta_kubernetes_pod_ip"] == "10.244.99.12"
    [job] = [j for j in prometheus_config(layout)["scrape_configs"] if j["job_name"] == PODS_JOB]
    assert job["file_sd_configs"][0]["files"] == [str(tmp_path / "prometheus" / "pods.json")]
