"""Upstream mTLS, Envoy 1.40 against the pymesh proxy: the same bootstrap (Istio's
``ISTIO_MUTUAL`` socket shape, auto mTLS ``transport_socket_matches``) to real TLS servers on
loopback. A good peer, a wrong SPIFFE ID, a certificate from another root, an expired one and
a server that does not speak TLS must get the same verdicts, flags and stats from both."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.mtls_harness import admin_stats
from tests.proxy.runtime.bootstrap import cluster, file_access_log, hcm, route, sa, vhost
from tests.proxy.runtime.test_upstream_tls import CLIENT_ID, upstream_tls
from tests.support.differential import Exchange, differential
from tests.support.envoy import ProxyProcess
from tests.support.httpclient import build_request
from tests.support.mesh_pki import MeshPki
from tests.support.procs import free_port
from tests.support.upstream import Upstream

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(120)]

NET = "127.0.0"
PROXY = f"{NET}.100"
CASES = ("good", "wrong-san", "other-root", "expired", "plaintext")
LOG_FORMAT = {
    "path": "%REQ(:PATH)%",
    "code": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}


@pytest.fixture
def pki() -> MeshPki:
    return MeshPki()


@pytest.fixture
async def servers(pki: MeshPki) -> AsyncIterator[dict[str, Upstream]]:
    served = {
        "good": pki.workload("default", "server"),
        "wrong-san": pki.workload("default", "impostor"),
        "other-root": MeshPki().workload("default", "server"),
        "expired": pki.workload("default", "server", ttl=600, at=time.time() - 3600),
    }
    ups = {
        name: Upstream(f"{NET}.{101 + i}", tls=pki.server_context(cert, alpn=("istio",)))
        for i, (name, cert) in enumerate(served.items())
    }
    ups["plaintext"] = Upstream(f"{NET}.105")
    ups["auto"] = Upstream(f"{NET}.106", tls=pki.server_context(served["good"]))
    ups["legacy"] = Upstream(f"{NET}.107")
    for up in ups.values():
        await up.start()
    yield ups
    for up in ups.values():
        await up.stop()


def _auto_cluster(ups: dict[str, Upstream], socket: dict[str, Any]) -> dict[str, Any]:
    backend = cluster("auto", [], connect_timeout="2s")
    tls_mode = {"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}}
    backend["load_assignment"]["endpoints"] = [
        {
            "lb_endpoints": [
                {"endpoint": {"address": sa(*ups["auto"].address)}, "metadata": tls_mode},
                {"endpoint": {"address": sa(*ups["legacy"].address)}},
            ]
        }
    ]
    backend["transport_socket_matches"] = [
        {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": socket},
        {
            "name": "tlsMode-disabled",
            "match": {},
            "transport_socket": {
                "name": "envoy.transport_sockets.raw_buffer",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
                },
            },
        },
    ]
    return backend


def _bootstrap(
    pki: MeshPki, ups: dict[str, Upstream], tmp: Path, port: int, log: Path
) -> dict[str, Any]:
    socket = upstream_tls(pki.workload("default", "client"), tmp, pki.write_root(tmp))
    clusters = [
        cluster(name, [ups[name].address], connect_timeout="2s", transport_socket=socket)
        for name in CASES
    ]
    clusters.append(_auto_cluster(ups, socket))
    routes = [route(f"/{name}", name, retry_policy=_RETRY) for name in (*CASES, "auto")]
    manager = hcm([vhost(routes)], access_log=file_access_log(str(log), LOG_FORMAT))
    return {
        "admin": {"address": sa(PROXY, free_port(PROXY))},
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": sa(PROXY, port),
                    "filter_chains": [{"filters": [manager]}],
                }
            ],
            "clusters": clusters,
        },
    }


_RETRY = {"retry_on": "connect-failure", "num_retries": 1}
_STAT = re.compile(r"^cluster\.[a-z-]+\.(ssl\.[a-z_]+|upstream_cx_total|upstream_rq_\dxx)$")
# Envoy's reason carries BoringSSL's packed error code, and the depth in the chain where
# verification failed, which Python's ssl does not expose: the reason and the check that
# failed are compared.
_REASON = re.compile(
    r"TLS_error:\|(?:\d+:)?SSL_routines:OPENSSL_internal:([A-Z_]+):([^:]*:_[^:,]*)"
)


def _reason(text: str) -> str:
    found = _REASON.match(text)
    return f"{found[1]} {found[2]}" if found else text


def _body(body: bytes) -> bytes:
    # Which of the auto cluster's two hosts round robin starts with differs; both are
    # checked below.
    try:
        echo = json.loads(body)
    except ValueError:
        return body
    return json.dumps({"path": echo["path"], "headers": sorted(echo["headers"])}).encode()


async def test_upstream_tls_verdicts_match_envoy(
    pki: MeshPki, servers: dict[str, Upstream], tmp_path: Path
) -> None:
    port = free_port(PROXY)
    log = tmp_path / "access.log"
    config = _bootstrap(pki, servers, tmp_path, port, log)
    exchanges = [
        Exchange(build_request("GET", f"/{name}", [], b"", host="server"), name=name)
        for name in (*CASES, "auto", "auto")
    ]
    stats: dict[str, dict[str, int]] = {}
    peers: dict[str, list[Any]] = {}
    logs: dict[str, list[dict[str, str]]] = {}
    ran: list[str] = []

    def keep_log() -> None:
        # The proxy that wrote it has stopped (and flushed) by now.
        if ran and ran[-1] not in logs:
            lines = log.read_text().splitlines() if log.exists() else []
            logs[ran[-1]] = [json.loads(line) for line in lines if line.strip()]
            log.unlink(missing_ok=True)

    async def before(kind: str) -> None:
        keep_log()
        ran.append(kind)
        for up in servers.values():
            up.received.clear()
            up.tls_peers.clear()

    async def after(kind: str, proxy: ProxyProcess) -> None:
        found = await asyncio.to_thread(admin_stats, proxy, "cluster.")
        stats[kind] = {name: value for name, value in found.items() if _STAT.match(name) and value}
        # A SAN is checked after the handshake by pymesh (Python's ssl has no verify
        # callback) and during it by Envoy: that server alone sees a finished handshake.
        peers[kind] = [
            (name, len(up.received), [] if name == "wrong-san" else list(up.tls_peers))
            for name, up in servers.items()
        ]

    report = await differential(
        config,
        exchanges,
        workdir=tmp_path,
        before_each=before,
        after_each=after,
        body=_body,
        volatile_headers=(
            "date",
            "x-request-id",
            "x-envoy-upstream-service-time",
            "server",
            "x-upstream-name",
            "content-length",
        ),
    )
    keep_log()
    report.assert_same()
    observed = report.observed["envoy"]
    assert [o.status for o in observed] == [200, 503, 503, 503, 503, 200, 200]
    assert stats["envoy"] == stats["pymesh"], stats
    assert peers["envoy"] == peers["pymesh"]
    assert ("good", 1, [("istio", (CLIENT_ID,))]) in peers["pymesh"]
    assert ("wrong-san", 0, []) in peers["pymesh"]
    flags = {
        kind: [(e["path"], e["flags"], _reason(e["reason"] or "")) for e in entries]
        for kind, entries in logs.items()
    }
    assert flags["pymesh"][1] == (
        "/wrong-san",
        "URX,UF",
        "CERTIFICATE_VERIFY_FAILED verify_cert_failed:_SAN_matcher",
    )
    assert flags["envoy"] == flags["pymesh"], flags
