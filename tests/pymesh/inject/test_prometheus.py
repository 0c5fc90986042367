"""Istio's metrics merging at injection: the scrape annotations point at the agent's
``:15020/stats/prometheus``; the app's own travel in ``ISTIO_PROMETHEUS_ANNOTATIONS``."""

from __future__ import annotations

import json

import pytest

from pymesh.inject.pod import InjectConfig, inject_pod
from pymesh.inject.prometheus import prometheus_merge

MERGED = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": "15020",
    "prometheus.io/path": "/stats/prometheus",
}


def test_a_pod_without_annotations_is_scraped_on_the_agent_port() -> None:
    assert prometheus_merge({}) == (MERGED, None)


def test_the_apps_own_annotations_move_to_the_agent() -> None:
    pod = {"prometheus.io/scrape": "true", "prometheus.io.port": "9080", "team": "a"}
    annotations, saved = prometheus_merge(pod)
    assert annotations == {**MERGED, "team": "a"}
    assert saved is not None and json.loads(saved) == {"scrape": "true", "port": "9080"}


@pytest.mark.parametrize(
    "annotations",
    [
        {"prometheus.io/scrape": "false"},
        {"prometheus.istio.io/merge-metrics": "false", "prometheus.io/port": "9080"},
        MERGED,  # injected before
    ],
)
def test_pods_that_opt_out_or_were_merged_are_left_alone(annotations: dict[str, str]) -> None:
    assert prometheus_merge(annotations) == (annotations, None)


def test_the_injector_writes_the_annotations_and_the_sidecars_env() -> None:
    pod = {
        "metadata": {
            "name": "reviews-v1",
            "labels": {"app": "reviews"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9080"},
        },
        "spec": {"containers": [{"name": "reviews", "image": "reviews"}]},
    }
    out = inject_pod(pod, InjectConfig()).pod
    assert {k: v for k, v in out["metadata"]["annotations"].items() if "prometheus" in k} == MERGED
    [sidecar] = [c for c in out["spec"]["containers"] if c["name"] == "istio-proxy"]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert json.loads(env["ISTIO_PROMETHEUS_ANNOTATIONS"]) == {"scrape": "true", "port": "9080"}
