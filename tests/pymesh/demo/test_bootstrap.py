"""Each pod's bootstrap: accepted by the proxy, by Envoy, and recognised by pilot."""

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from pilot.model.proxy import ProxyNode
from proxy.config.bootstrap import bootstrap_from_dict, load_bootstrap
from pymesh.demo.bootstrap import XDS_CLUSTER, bootstrap, node_id, write_bootstrap
from pymesh.demo.images import Role, StandIn
from pymesh.demo.pods import PodSpec
from tests.proxy.config.envoy_validate import envoy_validate, needs_envoy

REVIEWS = PodSpec(
    name="reviews-v2",
    namespace="default",
    labels={"app": "reviews", "version": "v2"},
    service_account="bookinfo-reviews",
    container_port=9080,
    stand_in=StandIn(Role.APP, "pymesh.samples.bookinfo.reviews", ("--version", "v2")),
    owner="Deployment/reviews-v2",
)
GATEWAY = PodSpec(
    name="istio-ingressgateway",
    namespace="istio-system",
    labels={"app": "istio-ingressgateway", "istio": "ingressgateway"},
    service_account="istio-ingressgateway-service-account",
    stand_in=StandIn(Role.GATEWAY),
    owner="Deployment/istio-ingressgateway",
)


def test_node_ids_follow_istio():
    assert node_id(REVIEWS, "127.0.4.14") == (
        "sidecar~127.0.4.14~reviews-v2.default~default.svc.cluster.local"
    )
    assert node_id(GATEWAY, "127.0.4.1") == (
        "router~127.0.4.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local"
    )


@pytest.mark.parametrize("pod", [REVIEWS, GATEWAY], ids=["sidecar", "router"])
def test_pilot_reads_the_node(pod):
    data = bootstrap(pod, "127.0.4.14", "127.0.4.1:15010")
    node = json_format.ParseDict(data["node"], base_pb2.Node())
    parsed = ProxyNode.from_node(node)
    assert parsed.pod_name == pod.name and parsed.namespace == pod.namespace
    assert parsed.ip == "127.0.4.14" and parsed.instance_ips == ("127.0.4.14",)
    assert dict(parsed.labels) == dict(pod.labels)
    assert parsed.service_account == pod.service_account
    assert parsed.workload_name == pod.name
    assert parsed.process_mode
    assert parsed.is_router == (pod is GATEWAY)


def test_the_proxy_accepts_it():
    data = bootstrap(REVIEWS, "127.0.4.14", "127.0.4.1:15010")
    loaded = bootstrap_from_dict(data, "<demo>")
    assert loaded.admin is not None and loaded.admin.address is not None
    assert (loaded.admin.address.host, loaded.admin.address.port) == ("127.0.4.14", 15000)
    assert loaded.dynamic_resources is not None
    assert loaded.dynamic_resources.ads_config is not None
    assert loaded.dynamic_resources.ads_config.cluster_name == XDS_CLUSTER
    (xds,) = loaded.static_resources.clusters
    assert xds.name == XDS_CLUSTER


def test_written_file_loads(tmp_path):
    path = write_bootstrap(
        tmp_path / "b" / "reviews.yaml", REVIEWS, "127.0.4.14", "127.0.4.1:15010"
    )
    assert load_bootstrap(path).node.id.startswith("sidecar~127.0.4.14~")


@needs_envoy
@pytest.mark.envoy
def test_envoy_accepts_it(tmp_path):
    path = write_bootstrap(tmp_path / "gw.yaml", GATEWAY, "127.0.4.1", "127.0.4.1:15010")
    ok, output = envoy_validate(path)
    assert ok, output


def _captured(tmp_path, name="captured.yaml"):
    import yaml

    data = bootstrap(
        REVIEWS,
        "10.211.0.5",
        "istiod.istio-system.svc:15010",
        process=False,
        admin_address="0.0.0.0",
        health_port=15021,
    )
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return data, path


def test_captured_sidecar_bootstrap(tmp_path):
    """netns and container sidecars: no process mode, pilot by name, and Istio's readiness
    listener on the pod's address asking the admin's /ready over loopback."""
    data, path = _captured(tmp_path)
    assert "PYMESH_MODE" not in data["node"]["metadata"]
    loaded = load_bootstrap(path)
    health, agent = loaded.static_resources.listeners
    assert (health.address.host, health.address.port) == ("10.211.0.5", 15021)
    assert (agent.address.host, agent.address.port) == ("127.0.0.1", 15020)
    agent = next(c for c in data["static_resources"]["clusters"] if c["name"] == "agent")
    endpoint = agent["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15000}
    xds = next(c for c in data["static_resources"]["clusters"] if c["name"] == XDS_CLUSTER)
    assert xds["type"] == "STRICT_DNS"


@needs_envoy
@pytest.mark.envoy
def test_envoy_accepts_the_captured_bootstrap(tmp_path):
    _, path = _captured(tmp_path)
    ok, output = envoy_validate(path)
    assert ok, output


def test_a_pod_without_an_agent_serves_its_proxys_metrics_on_the_agent_port(tmp_path):
    """Process mode without mTLS has no agent: the sidecar answers Istio's
    ``<pod ip>:15020/stats/prometheus`` itself, from its admin's exposition."""
    path = write_bootstrap(
        tmp_path / "reviews.yaml", REVIEWS, "127.0.4.14", "127.0.4.1:15010",
        stats_address=("127.0.4.14", 15020),
    )  # fmt: skip
    loaded = load_bootstrap(path)
    (agent,) = loaded.static_resources.listeners
    assert (agent.address.host, agent.address.port) == ("127.0.4.14", 15020)
    clusters = {c.name: c for c in loaded.static_resources.clusters}
    assert set(clusters) == {XDS_CLUSTER, "agent"}


@needs_envoy
@pytest.mark.envoy
def test_envoy_accepts_the_agent_port_bootstrap(tmp_path):
    path = write_bootstrap(
        tmp_path / "reviews.yaml", REVIEWS, "127.0.4.14", "127.0.4.1:15010",
        stats_address=("127.0.4.14", 15020),
    )  # fmt: skip
    ok, output = envoy_validate(path)
    assert ok, output
