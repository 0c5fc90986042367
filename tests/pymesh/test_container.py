"""The image's entry point: the sidecar's bootstrap from the pod's environment, and its
readiness on 15021, which answers 503 until pilot has configured the proxy."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import yaml

from pymesh.container import ROLES, main, sidecar_bootstrap
from tests.support.procs import free_port, wait_for_port

IP = "127.0.11.110"
ENV = {
    "POD_NAME": "reviews-v2-5d8f7c9b6-x2k4q",
    "POD_NAMESPACE": "default",
    "INSTANCE_IP": IP,
    "SERVICE_ACCOUNT": "bookinfo-reviews",
    "WORKLOAD_NAME": "reviews-v2",
    "ISTIO_METAJSON_LABELS": json.dumps({"app": "reviews", "version": "v2"}),
    "PILOT_ADDRESS": "istiod.istio-system.svc:15010",
    "APP_PORT": "9080",
}


def test_sidecar_bootstrap_from_the_environment() -> None:
    boot = yaml.safe_load(sidecar_bootstrap("sidecar", ENV))
    node = boot["node"]
    assert (
        node["id"] == f"sidecar~{IP}~reviews-v2-5d8f7c9b6-x2k4q.default~default.svc.cluster.local"
    )
    meta = node["metadata"]
    assert meta["LABELS"] == {"app": "reviews", "version": "v2"}
    assert meta["SERVICE_ACCOUNT"] == "bookinfo-reviews" and meta["WORKLOAD_NAME"] == "reviews-v2"
    assert "PYMESH_MODE" not in meta  # captured: pilot sends Istio's listeners
    assert boot["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    xds = boot["static_resources"]["clusters"][0]
    assert xds["type"] == "STRICT_DNS"  # pilot by name
    health, agent = boot["static_resources"]["listeners"]
    assert health["address"]["socket_address"] == {"address": IP, "port_value": 15021}
    assert agent["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15020}
    router = yaml.safe_load(sidecar_bootstrap("router", {**ENV, "ISTIO_METAJSON_LABELS": ""}))
    assert router["node"]["id"].startswith("router~")
    assert router["static_resources"]["listeners"] == []


def test_unknown_role_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nonsense"]) == 2
    err = capsys.readouterr().err
    assert all(role in err for role in ROLES)


def _port(listener_or_cluster: dict, host: str, port: int) -> None:
    if "load_assignment" in listener_or_cluster:
        endpoints = listener_or_cluster["load_assignment"]["endpoints"]
        endpoints[0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] = {
            "address": host,
            "port_value": port,
        }
    else:
        listener_or_cluster["address"]["socket_address"] = {"address": host, "port_value": port}


def test_readiness_and_quitquitquit() -> None:
    """No pilot answers: the proxy runs, its readiness port says 503 PRE_INITIALIZING; a
    Job's ``POST :15020/quitquitquit`` stops it (a GET does not)."""
    env = {**ENV, "PILOT_ADDRESS": f"{IP}:{free_port(IP)}"}  # nothing listens there
    boot = yaml.safe_load(sidecar_bootstrap("sidecar", env))
    # Tests run side by side: every port of this proxy on this test's address.
    admin, health, agent = (free_port(IP) for _ in range(3))
    boot["admin"]["address"]["socket_address"] = {"address": IP, "port_value": admin}
    _port(boot["static_resources"]["clusters"][1], IP, admin)
    _port(boot["static_resources"]["listeners"][0], IP, health)
    _port(boot["static_resources"]["listeners"][1], IP, agent)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pymesh.cli.main", "proxy", "--config-yaml", yaml.safe_dump(boot)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        wait_for_port(IP, agent, timeout=30)
        with pytest.raises(urllib.error.HTTPError) as info:
            opener.open(f"http://{IP}:{health}/healthz/ready", timeout=5)
        assert info.value.code == 503
        assert info.value.read().decode().strip() == "PRE_INITIALIZING"
        with pytest.raises(urllib.error.HTTPError) as info:
            opener.open(f"http://{IP}:{agent}/quitquitquit", timeout=5)
        assert info.value.code == 404 and proc.poll() is None
        request = urllib.request.Request(f"http://{IP}:{agent}/quitquitquit", method="POST")
        with opener.open(request, timeout=5) as resp:
            assert resp.status == 200
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
