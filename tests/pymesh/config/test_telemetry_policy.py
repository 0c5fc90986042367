"""The Telemetry API's precedence (mesh → namespace → workload, per direction) and the CEL
subset, on Istio's own documentation examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymesh.config import load_documents
from pymesh.config.cel import MISSING, compile_cel
from pymesh.config.model import Telemetry
from pymesh.config.model.telemetry import WorkloadMode
from pymesh.config.telemetry_policy import resolve
from pymesh.errors import ValidationError

DOCS = Path(__file__).resolve().parents[3].parent / "shared/istio-samples/docs-extracted"
OBS = DOCS / "observability"
CLIENT, SERVER = WorkloadMode.CLIENT, WorkloadMode.SERVER


def telemetries(*texts: str):
    found = []
    for text in texts:
        found.extend(load_documents(text, "<test>").of_kind(Telemetry))
    return found


def sample(name: str) -> str:
    path = OBS / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path.read_text()


ENV = {
    "request": {"host": "reviews:9080", "headers": {"user-agent": "curl/8"}, "method": "GET"},
    "response": {"code": 503},
    "destination": {"port": 9080},
    "xds": {"cluster_name": "outbound|9080||reviews.default.svc.cluster.local"},
    "upstream_peer": {"labels": {"app": "reviews"}},
}


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("string(destination.port)", "9080"),
        ("request.host", "reviews:9080"),
        ("upstream_peer.labels['app'].value", "reviews"),
        ("downstream_peer.labels['app'].value", MISSING),
        ("response.code >= 500", True),
        ("response.code >= 400 || xds.cluster_name == 'BlackHoleCluster'", True),
        ("response.code < 400 && request.method == 'GET'", False),
        ("request.headers['User-Agent'].startsWith('curl') ? 'cli' : 'browser'", "cli"),
        ("request.method in ['GET', 'HEAD']", MISSING),  # list literals are not in the subset
        ("has(request.host) && !has(request.nope)", True),
        ("size(request.host) + 1", 13),
        ("int('42') * 2", 84),
    ],
)
def test_cel_subset_evaluates_istio_expressions(expr: str, value: object) -> None:
    if "[" in expr and "in [" in expr:
        with pytest.raises(ValidationError):
            compile_cel(expr)
        return
    assert compile_cel(expr).evaluate(ENV) == value


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "empty"),
        ("request.host ==", "unexpected end"),
        ("now()", "function now() is not supported at column 1"),
        ("request.host.lower()", "method lower() is not supported"),
        ("request.host @ 1", "unexpected character '@'"),
        ("(1 + 2", "expected ')'"),
    ],
)
def test_cel_refusals_name_the_problem(expr: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        compile_cel(expr)
    assert message in str(info.value)


def test_metrics_overrides_disable_per_direction() -> None:
    client = telemetries(sample("metrics-telemetry-api/5-telemetry-remove-client.yaml"))
    policy = resolve(client, "default", {"app": "reviews"}, CLIENT)
    assert policy.metrics.disabled == {"istio_requests_total"}
    assert resolve(client, "default", {"app": "reviews"}, SERVER).metrics.plain
    everything = telemetries(sample("metrics-telemetry-api/3-telemetry-remove-all-metrics.yaml"))
    assert len(resolve(everything, "default", {}, SERVER).metrics.disabled) == 10


def test_tag_overrides_remove_and_add_with_cel() -> None:
    removed = telemetries(sample("metrics-telemetry-api/1-telemetry-remove-tags.yaml"))
    [rule] = resolve(removed, "default", {}, CLIENT).metrics.tags["istio_requests_total"]
    assert (rule.name, rule.value) == ("grpc_response_status", None)
    custom = telemetries(sample("metrics-telemetry-api/2-telemetry-custom-tags.yaml"))
    [client] = resolve(custom, "default", {}, CLIENT).metrics.tags["istio_requests_total"]
    assert client.name == "destination_x" and client.value is not None
    assert client.value.evaluate(ENV) == "reviews"
    [server] = resolve(custom, "default", {}, SERVER).metrics.tags["istio_requests_total"]
    assert server.name == "source_x"


def test_namespace_then_workload_override_the_mesh() -> None:
    mesh = sample("metrics-telemetry-api/4-telemetry-remove-request-count.yaml")
    # the namespace switches the metric back on; a workload switches it off again
    namespace = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns, namespace: default}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT}
      disabled: false
"""
    workload = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ratings, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT}
      disabled: true
"""
    found = telemetries(mesh, namespace, workload)
    assert resolve(found, "other", {}, CLIENT).metrics.disabled == {"istio_requests_total"}
    assert resolve(found, "default", {"app": "reviews"}, CLIENT).metrics.plain
    assert resolve(found, "default", {"app": "ratings"}, CLIENT).metrics.disabled == {
        "istio_requests_total"
    }


def test_metrics_providers_fall_back_to_the_mesh_defaults() -> None:
    other = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: stackdriver}]
"""
    assert not resolve(telemetries(other), "default", {}, CLIENT).metrics.enabled
    assert resolve([], "default", {}, CLIENT, default_metrics_providers=()).metrics.plain is False


def test_access_logging_disable_filter_and_direction() -> None:
    disable = telemetries(sample("logs-telemetry-api/2-telemetry-disable-sleep-logging.yaml"))
    assert not resolve(disable, "default", {"app": "sleep"}, CLIENT).logging.keeps(ENV)
    assert resolve(disable, "default", {"app": "httpbin"}, CLIENT).logging.keeps(ENV)
    server = telemetries(
        sample("logs-telemetry-api/3-telemetry-disable-httpbin-server-logging.yaml")
    )
    assert not resolve(server, "default", {"app": "httpbin"}, SERVER).logging.keeps(ENV)
    assert resolve(server, "default", {"app": "httpbin"}, CLIENT).logging.keeps(ENV)
    filt = telemetries(sample("logs-telemetry-api/4-telemetry-filter-sleep-logging.yaml"))
    policy = resolve(filt, "default", {"app": "sleep"}, CLIENT).logging
    assert policy.keeps(ENV)
    assert not policy.keeps({**ENV, "response": {"code": 200}})


def test_tracing_sampling_and_providers_most_specific_wins() -> None:
    mesh = sample("tracing-telemetry-api/3-telemetry-mesh-default-custom-tag-environment.yaml")
    ns = sample("tracing-sampling/2-telemetry-otel-demo-sampling-10.yaml")
    found = telemetries(mesh, ns)
    policy = resolve(found, "default", {}, CLIENT).tracing
    assert policy.providers == ("otel-tracing",)
    assert policy.sampling == 10.0
    assert set(policy.custom_tags) == {"cluster_id"}
    other = resolve(found, "elsewhere", {}, SERVER).tracing
    assert (other.providers, other.sampling) == (("zipkin",), 100.0)
