"""The image's entry point: the sidecar's bootstrap from the pod's environment, and its
readiness on 15021, which answers 503 until pilot has configured the proxy."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

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


def _role(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pymesh.container", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_tokens_are_what_the_ca_accepts(tmp_path: Path) -> None:
    """``tokens`` (docker-compose's stand-in for the API server's projected tokens): the
    mesh root and one token per account, readable by the proxy's uid only, that the CA of
    the same directory (the ``ca`` role's) verifies for that account."""
    env = {"CA_DIR": str(tmp_path / "ca"), "SECRETS_DIR": str(tmp_path / "secrets")}
    env["PROXY_UID"] = str(os.getuid())
    done = _role(["tokens", "default/bookinfo-reviews", "istio-system/gw"], env)
    assert done.returncode == 0, done.stderr
    from auth.server import CaOptions, open_ca
    from auth.tokens import ServiceAccount

    service, issuer = open_ca(CaOptions(tmp_path / "ca"), time.time)
    assert (tmp_path / "secrets/root-cert.pem").read_text() == service.ca.root_pem
    token = tmp_path / "secrets/default/bookinfo-reviews/istio-token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert token.stat().st_uid == os.getuid()
    verifier = issuer.verifier()
    assert verifier.verify(token.read_text()) == ServiceAccount("default", "bookinfo-reviews")
    gateway = (tmp_path / "secrets/istio-system/gw/istio-token").read_text()
    assert verifier.verify(gateway) == ServiceAccount("istio-system", "gw")
    # The ca role's own subcommands on the same directory: the same root.
    root = _role(["ca", "root"], env)
    assert root.returncode == 0 and root.stdout == service.ca.root_pem, root.stderr


@pytest.mark.parametrize("args", [[], ["bookinfo-reviews"], ["default/"]])
def test_tokens_usage_errors(tmp_path: Path, args: list[str]) -> None:
    done = _role(["tokens", *args], {"CA_DIR": str(tmp_path), "SECRETS_DIR": str(tmp_path)})
    assert done.returncode == 2 and "usage: tokens NAMESPACE/SERVICE_ACCOUNT" in done.stderr
    assert not (tmp_path / "root-cert.pem").exists()


def test_wait_for_a_url_times_out_with_its_reason() -> None:
    port = free_port(IP)  # nothing listens there
    done = _role(["wait", "0.5", f"http://{IP}:{port}/ready"], {})
    assert done.returncode == 1
    assert f"http://{IP}:{port}/ready is not ready after" in done.stderr


def test_tokens_report_a_bad_ca_directory(tmp_path: Path) -> None:
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca/token-key.pem").write_text("not a key")
    env = {"CA_DIR": str(tmp_path / "ca"), "SECRETS_DIR": str(tmp_path / "secrets")}
    done = _role(["tokens", "default/sleep"], env)
    assert done.returncode == 1 and done.stderr.startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "secrets").exists()
