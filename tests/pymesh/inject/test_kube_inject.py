"""``pymesh kube-inject`` and the pure injection: what is added, what is honoured, what is
refused, and that every injected pod passes ``kubernetes-validate`` for a current
Kubernetes."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pymesh.errors import ConfigError
from pymesh.inject.pod import STATUS, InjectConfig, inject_pod
from pymesh.inject.workloads import inject_documents
from tests.pymesh.inject.admission import BOOKINFO, ROOT, bookinfo_deployments

K8S = kubernetes_validate.latest_version()


def _validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S, strict=True)


def _kube_inject(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pymesh.cli.main", "kube-inject", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_kube_inject_bookinfo_passes_kubernetes_validate() -> None:
    done = _kube_inject("-f", str(BOOKINFO), "--image", "registry.example/pymesh:0.1")
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    original = [d for d in yaml.safe_load_all(BOOKINFO.read_text()) if d]
    assert len(docs) == len(original)
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert len(deployments) == 6
    for doc in docs:
        _validate(doc)
        if doc["kind"] != "Deployment":
            assert doc in original  # Services and ServiceAccounts pass through
            continue
        pod = doc["spec"]["template"]
        spec = pod["spec"]
        assert [c["name"] for c in spec["initContainers"]] == ["istio-init"]
        assert [c["name"] for c in spec["containers"]][-1] == "istio-proxy"
        init = spec["initContainers"][0]
        assert init["args"][:10] == ["iptables", "-p", "15001", "-z", "15006", "-u", "1337",
                                     "-m", "REDIRECT", "-i"]  # fmt: skip
        assert init["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
        proxy = spec["containers"][-1]
        assert proxy["image"] == "registry.example/pymesh:0.1"
        assert proxy["securityContext"]["runAsUser"] == 1337
        env = {e["name"]: e for e in proxy["env"]}
        assert env["INSTANCE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert json.loads(env["ISTIO_METAJSON_LABELS"]["value"]) == {
            k: v for k, v in pod["metadata"]["labels"].items() if k in ("app", "version")
        }
        assert env["WORKLOAD_NAME"]["value"] == doc["metadata"]["name"]
        status = json.loads(pod["metadata"]["annotations"][STATUS])
        assert status["containers"] == ["istio-proxy"]
        assert {v["name"] for v in spec["volumes"]} >= set(status["volumes"])
        assert pod["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio"
        # The identity: pilot-agent's CA address, token (for the CA's audience) and root.
        assert env["CA_ADDR"]["value"] == "istiod.istio-system.svc:15012"
        volumes = {v["name"]: v for v in spec["volumes"]}
        token = volumes["istio-token"]["projected"]["sources"][0]["serviceAccountToken"]
        assert token["audience"] == "istio-ca" and token["path"] == "istio-token"
        assert volumes["istiod-ca-cert"]["configMap"]["name"] == "istio-ca-root-cert"
        mounts = {m["name"]: m["mountPath"] for m in proxy["volumeMounts"]}
        assert mounts["istio-token"] == "/var/run/secrets/tokens"
        assert mounts["istiod-ca-cert"] == "/var/run/secrets/istio"
        assert mounts["workload-socket"] == "/var/run/secrets/workload-spiffe-uds"


def test_injecting_twice_changes_nothing() -> None:
    cfg = InjectConfig()
    docs = bookinfo_deployments()
    once = inject_documents(docs, cfg).documents
    twice = inject_documents(once, cfg)
    assert twice.documents == once
    assert all("already injected" in note for note in twice.notes)


def _pod(annotations: dict[str, str] | None = None, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web", **labels},
            "annotations": annotations or {},
        },
        "spec": {
            "containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]
        },
    }


def test_opt_out_by_annotation_or_label_and_host_network() -> None:
    cfg = InjectConfig()
    assert inject_pod(_pod({"sidecar.istio.io/inject": "false"}), cfg).skipped
    assert inject_pod(_pod(**{"sidecar.istio.io/inject": "false"}), cfg).skipped
    host = _pod()
    host["spec"]["hostNetwork"] = True
    assert "host's network" in inject_pod(host, cfg).skipped
    assert not inject_pod(_pod({"sidecar.istio.io/inject": "true"}), cfg).skipped


def test_traffic_annotations_reach_the_init_container() -> None:
    pod = _pod(
        {
            "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.96.0.0/12",
            "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.1/32",
            "traffic.sidecar.istio.io/includeInboundPorts": "80",
            "traffic.sidecar.istio.io/excludeInboundPorts": "9901",
            "traffic.sidecar.istio.io/excludeOutboundPorts": "3306,5432",
        }
    )
    args = inject_pod(pod, InjectConfig()).pod["spec"]["initContainers"][0]["args"]
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    assert flags["-i"] == "10.96.0.0/12" and flags["-x"] == "10.96.0.1/32"
    assert flags["-b"] == "80" and flags["-d"] == "15090,15021,15020,9901"
    assert flags["-o"] == "3306,5432"


def test_proxy_config_annotation() -> None:
    pod = _pod(
        {
            "proxy.istio.io/config": (
                "terminationDrainDuration: 20s\nholdApplicationUntilProxyStarts: true\n"
                "proxyMetadata: {EXIT_ON_ZERO_ACTIVE_CONNECTIONS: 'true'}\n"
                "concurrency: 4\ndrainDuration: 45s\n"
            )
        }
    )
    result = inject_pod(pod, InjectConfig())
    containers = result.pod["spec"]["containers"]
    # holdApplicationUntilProxyStarts: the sidecar first, with a postStart that waits for it.
    assert containers[0]["name"] == "istio-proxy" and "postStart" in containers[0]["lifecycle"]
    env = {e["name"]: e.get("value") for e in containers[0]["env"]}
    assert env["TERMINATION_DRAIN_DURATION_SECONDS"] == "20"
    assert env["EXIT_ON_ZERO_ACTIVE_CONNECTIONS"] == "true"
    # The sidecar runs `pymesh proxy --concurrency 4` (pymesh.container reads CONCURRENCY).
    assert env["CONCURRENCY"] == "4"
    assert result.warnings == ("proxy.istio.io/config: drainDuration is not applied by pymesh",)
    _validate(result.pod)


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"traffic.sidecar.istio.io/excludeInboundPorts": "http"}, "'http' is not a port"),
        ({"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/40"}, "-i"),
        ({"proxy.istio.io/config": "terminationDrainDuration: [1"}, "not YAML"),
        ({"proxy.istio.io/config": "- a list"}, "expected a mapping"),
        ({"proxy.istio.io/config": "terminationDrainDuration: soon"}, "invalid duration 'soon'"),
        ({"proxy.istio.io/config": "concurrency: two"}, "concurrency must be a whole number"),
        ({"proxy.istio.io/config": "concurrency: -1"}, "concurrency must be a whole number"),
    ],
)
def test_bad_annotations_are_refused(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        inject_pod(_pod(annotations), InjectConfig())


def test_cli_errors_and_notes(tmp_path: Any) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_pod({"traffic.sidecar.istio.io/includeInboundPorts": "x"})))
    done = _kube_inject("-f", str(bad))
    assert done.returncode == 1 and "Pod/web (document 0)" in done.stderr
    done = _kube_inject("-f", "-", stdin=yaml.safe_dump(_pod({"sidecar.istio.io/inject": "false"})))
    assert done.returncode == 0 and "not injected: sidecar.istio.io/inject: false" in done.stderr
    assert _kube_inject("-f", "-", stdin="a: [").returncode == 1


def test_install_manifests_pass_kubernetes_validate() -> None:
    path = ROOT / "docker/kubernetes/pymesh.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    kinds = {d["kind"] for d in docs}
    assert kinds >= {
        "Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
        "ClusterRoleBinding", "Deployment", "Service", "MutatingWebhookConfiguration",
    }  # fmt: skip
    for doc in docs:
        _validate(doc)
    crds = {d["spec"]["names"]["kind"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert crds >= {"VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "Sidecar"}
    webhook = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")["webhooks"][0]
    assert webhook["admissionReviewVersions"] == ["v1"] and webhook["failurePolicy"] == "Fail"
    assert webhook["namespaceSelector"] == {"matchLabels": {"istio-injection": "enabled"}}
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    istiod = deployments["istiod"]["spec"]["template"]["spec"]["containers"]
    ca = next(c for c in istiod if c["name"] == "ca")
    assert ca["args"] == ["ca"] and ca["ports"][0]["containerPort"] == 15012
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert {"name": "grpc-ca", "port": 15012, "targetPort": 15012} in services["istiod"]["spec"][
        "ports"
    ]
    # mixer, found by a Prometheus with the standard pod annotations
    mixer = deployments["mixer"]["spec"]["template"]
    assert mixer["metadata"]["annotations"]["prometheus.io/port"] == "15014"
    assert mixer["spec"]["containers"][0]["args"] == ["mixer"]
    assert {p["port"] for p in services["mixer"]["spec"]["ports"]} == {9091, 15014, 9411, 20001}
    mesh = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["mesh"])
    assert mesh["defaultConfig"]["tracing"]["zipkin"]["address"] == "mixer.istio-system.svc:9411"
    assert mesh["defaultConfig"]["envoyAccessLogService"] == {
        "address": "mixer.istio-system.svc:9091"
    }
