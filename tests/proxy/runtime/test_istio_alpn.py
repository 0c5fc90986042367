"""What Istio's ``istio.alpn`` filter does, done by the proxy's HTTP pools: HTTP to a mesh mTLS
cluster (ALPN ``istio``) offers ``istio-http/1.1``, so a server sidecar sniffing the port takes
the connection to its connection manager; ``tcp_proxy`` to the same cluster keeps the
cluster's own ALPN and reaches the server's TCP chain."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, sa, vhost
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.proxy.runtime.test_upstream_tls import CLIENT_ID, upstream_tls
from tests.support.httpclient import request
from tests.support.mesh_pki import MeshPki

# What a server sidecar accepts on a sniffed port, its own preference first.
SERVER_ALPN = ("istio-http/1.1", "istio-h2", "istio-peer-exchange", "istio")


async def test_http_offers_istio_http_and_tcp_keeps_the_cluster_alpn(
    tmp_path: Path, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    pki = MeshPki()
    server_tls = pki.server_context(pki.workload("default", "server"), alpn=SERVER_ALPN)
    up = await upstream_factory(upstream_ip(0), tls=server_tls)
    socket = upstream_tls(pki.workload("default", "client"), tmp_path, pki.write_root(tmp_path))
    http_address, tcp_address = listen_address(), listen_address()
    tcp = {
        "name": "tcp",
        "address": sa(*tcp_address),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network"
                            ".tcp_proxy.v3.TcpProxy",
                            "stat_prefix": "tcp",
                            "cluster": "backend",
                        },
                    }
                ]
            }
        ],
    }
    await start_proxy(
        bootstrap(
            [listener(http_address, hcm([vhost([route("/")])])), tcp],
            [cluster("backend", [up.address], transport_socket=socket)],
        )
    )
    assert (await request(*http_address, "GET", "/http", host_header="server")).status == 200
    assert up.tls_peers == [("istio-http/1.1", (CLIENT_ID,))]
    reader, writer = await asyncio.open_connection(*tcp_address)
    writer.write(b"GET /tcp HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
    writer.close()
    assert up.tls_peers[1:] == [("istio-peer-exchange", (CLIENT_ID,))]
    assert [r.path for r in up.received] == ["/http", "/tcp"]
