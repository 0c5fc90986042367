"""The TLS inspector in the proxy's own event loop: PERMISSIVE (TLS and plaintext on one
port), chains chosen by ALPN, the caller's identity in the stream info."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.integration.test_downstream_mtls_differential import (
    CLIENT_ID,
    SNI,
    client_context,
    inbound_listener,
    inbound_socket,
)
from tests.proxy.runtime.bootstrap import bootstrap, cluster, file_access_log, hcm, route, vhost
from tests.proxy.runtime.conftest import PROXY, StartProxy, upstream_ip
from tests.support.httpclient import AsyncConnection, request
from tests.support.mesh_pki import MeshPki
from tests.support.procs import free_port

LOG = {
    "path": "%REQ(:PATH)%",
    "peer": "%DOWNSTREAM_PEER_URI_SAN%",
    "sni": "%REQUESTED_SERVER_NAME%",
    "tls": "%DOWNSTREAM_TLS_VERSION%",
}


async def _tls_get(port: int, context: Any, path: str) -> Any:
    async with await AsyncConnection.open(
        PROXY, port, tls=context, server_name=SNI, timeout=5
    ) as conn:
        return await conn.request("GET", path, host="httpbin.foo:8000", timeout=5)


async def test_permissive_takes_mtls_and_plaintext_on_one_port(
    tmp_path: Path, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    pki = MeshPki()
    app = await upstream_factory(upstream_ip(0))
    port = free_port(PROXY)
    socket = inbound_socket(pki.workload("foo", "httpbin"), pki.write_root(tmp_path), tmp_path)
    listener = inbound_listener("inbound", port, socket, "app", permissive=True, host=PROXY)
    log = tmp_path / "access.log"
    for chain in listener["filter_chains"]:
        manager = chain["filters"][0]["typed_config"]
        manager["access_log"] = file_access_log(str(log), LOG)
    proxy = await start_proxy(bootstrap([listener], [cluster("app", [app.address])]))
    plain = await request(PROXY, port, "GET", "/plain", host_header="httpbin.foo:8000")
    assert plain.status == 200
    mtls = await _tls_get(port, client_context(pki, pki.workload("foo", "sleep")), "/mtls")
    assert mtls.status == 200
    assert app.received[-1].headers["x-forwarded-client-cert"].endswith(f"URI={CLIENT_ID}")
    assert app.received[-1].headers["x-forwarded-proto"] == "https"
    await proxy.stop()
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["path"], e["peer"], e["sni"]) for e in entries] == [
        ("/plain", None, None),
        ("/mtls", CLIENT_ID, SNI),
    ]
    assert entries[1]["tls"] == "TLSv1.2"
    assert proxy.stat(f"listener.{PROXY}_{port}.ssl.handshake") == 1


async def test_chains_chosen_by_the_client_alpn(
    tmp_path: Path, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    """Istio tells mesh mTLS (ALPN ``istio``) apart from an application's own TLS."""
    pki = MeshPki()
    mesh_app = await upstream_factory(upstream_ip(0))
    own_tls_app = await upstream_factory(upstream_ip(1))
    port = free_port(PROXY)
    socket = inbound_socket(pki.workload("foo", "httpbin"), pki.write_root(tmp_path), tmp_path)
    listener = inbound_listener("inbound", port, socket, "mesh", permissive=False, host=PROXY)
    other = {
        "filter_chain_match": {"transport_protocol": "tls"},
        "filters": [hcm([vhost([route("/", "own")])])],
        "transport_socket": socket,
    }
    listener["filter_chains"][0]["filter_chain_match"]["application_protocols"] = ["istio"]
    listener["filter_chains"].append(other)
    await start_proxy(
        bootstrap(
            [listener],
            [cluster("mesh", [mesh_app.address]), cluster("own", [own_tls_app.address])],
        )
    )
    client = pki.workload("foo", "sleep")
    assert (await _tls_get(port, client_context(pki, client), "/istio")).status == 200
    plain_alpn = client_context(pki, client)
    plain_alpn.set_alpn_protocols(["http/1.1"])
    assert (await _tls_get(port, plain_alpn, "/h1")).status == 200
    assert [r.path for r in mesh_app.received] == ["/istio"]
    assert [r.path for r in own_tls_app.received] == ["/h1"]


async def test_openssl_s_client_without_a_certificate_is_refused_by_strict(
    tmp_path: Path, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    pki = MeshPki()
    app = await upstream_factory(upstream_ip(0))
    port = free_port(PROXY)
    socket = inbound_socket(pki.workload("foo", "httpbin"), pki.write_root(tmp_path), tmp_path)
    listener = inbound_listener("inbound", port, socket, "app", permissive=False, host=PROXY)
    proxy = await start_proxy(bootstrap([listener], [cluster("app", [app.address])]))
    s_client = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"{PROXY}:{port}", "-servername", SNI,
        "-alpn", "istio", "-CAfile", str(tmp_path / "root-cert.pem"), "-ign_eof",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    request_bytes = b"GET / HTTP/1.1\r\nHost: httpbin.foo:8000\r\nConnection: close\r\n\r\n"
    out, _ = await asyncio.wait_for(s_client.communicate(request_bytes), 10)
    text = out.decode(errors="replace")
    # TLS 1.3: the client finished its side; the server ends the connection once it sees no
    # certificate (without the alert Envoy sends first: the loop's TLS protocol drops it).
    assert "HTTP/1.1" not in text, text
    assert app.received == []
    assert proxy.stat(f"listener.{PROXY}_{port}.ssl.fail_verify_no_cert") == 1
