"""``pymesh agent`` gives an unmodified Envoy 1.40 its identity over SDS (Istio's socket and
secret names), and Envoy follows each rotation; mTLS through that Envoy accepts a mesh peer
and refuses a client without a certificate."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from auth.workload import KeyType, WorkloadCertificate, make_csr, new_key
from pymesh.identity import SpiffeId
from tests.auth.conftest import RunningCa, start_ca
from tests.auth.envoy_sds import downstream_mtls
from tests.support import AUTH_NET, address
from tests.support.envoy import EnvoyProcess, sds_cluster
from tests.support.procs import ManagedProcess, async_wait_for_http, free_port

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(120)]

HOST = address(AUTH_NET, 1)
HTTPBIN = SpiffeId("cluster.local", "foo", "httpbin")
SLEEP = SpiffeId("cluster.local", "foo", "sleep")


def _admin_json(admin: tuple[str, int], path: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{admin[0]}:{admin[1]}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def _envoy_serials(envoy: EnvoyProcess) -> list[str]:
    certs = _admin_json(envoy.admin, "/certs").get("certificates", [])
    return [c["serial_number"] for entry in certs for c in entry.get("cert_chain", [])]


def _bootstrap(socket_path: Path, listen: tuple[str, int]) -> dict:
    route = {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": "secure\n"}},
    }
    hcm = {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
            "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "inbound",
            "route_config": {
                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        },
    }  # fmt: skip
    return {
        "node": {"id": f"sidecar~{HOST}~httpbin.foo~foo.svc.cluster.local", "cluster": "httpbin"},
        "static_resources": {
            "listeners": [
                {
                    "name": "inbound",
                    "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                    "filter_chains": [{"filters": [hcm], "transport_socket": downstream_mtls()}],
                }
            ],
            "clusters": [sds_cluster(socket_path)],
        },
    }


async def _client_cert(ca: RunningCa, identity: SpiffeId) -> WorkloadCertificate:
    key = new_key(KeyType.EC_P256)
    token = ca.issuer.issue(identity.namespace, identity.service_account)
    chain = await ca.client().create_certificate(make_csr(key, identity), 600, token=token)
    return WorkloadCertificate.from_response(identity, key, chain, ca.root)


async def _https(listen, ca: RunningCa, cert: WorkloadCertificate | None, tmp: Path) -> str:
    context = ssl.create_default_context(cadata=ca.root)
    context.check_hostname = False  # workload certificates carry a SPIFFE ID, not a name
    if cert is not None:
        (tmp / "c.pem").write_text(cert.chain_pem)
        (tmp / "k.pem").write_bytes(cert.key)
        context.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*listen, ssl=context), 10)
    writer.write(b"GET / HTTP/1.1\r\nhost: httpbin\r\nconnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data.decode()


async def test_envoy_gets_its_identity_from_the_agent_and_follows_rotation(
    tmp_path: Path, short_dir: Path
) -> None:
    ca = await start_ca(tmp_path / "ca")
    (tmp_path / "token").write_text(ca.issuer.issue("foo", "httpbin"))
    (tmp_path / "root.pem").write_text(ca.root)
    socket_path = short_dir / "workload-spiffe-uds/socket"
    status = (HOST, free_port(HOST))
    agent = ManagedProcess(
        [sys.executable, "-m", "pymesh.cli.main", "agent", "--ca-address", ca.address,
         "--ca-root", str(tmp_path / "root.pem"), "--token-file", str(tmp_path / "token"),
         "--namespace", "foo", "--service-account", "httpbin", "--sds-socket", str(socket_path),
         "--cert-ttl", "4s", "--status-address", f"{status[0]}:{status[1]}"],
        log_path=tmp_path / "agent.log", name="agent", die_with_parent=False,
    )  # fmt: skip
    listen = (HOST, free_port(HOST))
    envoy = EnvoyProcess(_bootstrap(socket_path, listen), workdir=tmp_path / "envoy")
    try:
        agent.start()
        await async_wait_for_http(*status, "/ready", 20, proc=agent)
        assert socket_path.stat().st_mode & 0o777 == 0o600
        await envoy.astart(30)
        sans = _admin_json(envoy.admin, "/certs")["certificates"][0]["cert_chain"][0]
        assert sans["subject_alt_names"] == [{"uri": HTTPBIN.uri}]
        # A mesh peer with its own workload certificate gets through ...
        sleep_cert = await _client_cert(ca, SLEEP)
        assert "secure" in await _https(listen, ca, sleep_cert, tmp_path)
        # ... a client without one does not (STRICT's behaviour).
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await _https(listen, ca, None, tmp_path)
        # Rotation: Envoy's certificate changes with the agent's, new connections work.
        first = _envoy_serials(envoy)
        deadline = time.monotonic() + 30
        while _envoy_serials(envoy) == first:
            assert time.monotonic() < deadline, "Envoy never got a rotated certificate"
            await asyncio.sleep(0.2)
        assert "secure" in await _https(listen, ca, sleep_cert, tmp_path)
        stats = (
            urllib.request.build_opener(urllib.request.ProxyHandler({}))
            .open(f"http://{status[0]}:{status[1]}/stats", timeout=5)
            .read()
            .decode()
        )
        assert "pymesh_agent.certificate_ready: 1" in stats
        assert "pymesh_agent.certificate_rotations: " in stats
        log = (tmp_path / "agent.log").read_text()
        assert "PRIVATE KEY" not in log
    finally:
        await envoy.astop()
        agent.stop()
        await ca.server.stop()


def test_agent_refuses_a_socket_path_too_long_for_unix(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "root.pem").write_text("x")
    (tmp_path / "token").write_text("x")
    long_path = tmp_path / ("d" * 120) / "socket"
    done = subprocess.run(
        [sys.executable, "-m", "pymesh.cli.main", "agent", "--ca-root", str(tmp_path / "root.pem"),
         "--token-file", str(tmp_path / "token"), "--sds-socket", str(long_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "longer than a Unix socket path may be" in done.stderr
    assert "Traceback" not in done.stderr
