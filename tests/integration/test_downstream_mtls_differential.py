"""Inbound mesh mTLS, Envoy 1.40 against the pymesh proxy from one bootstrap shaped as pilot
writes Istio's inbound listener: the TLS inspector, a ``transport_protocol: tls`` chain that
requires a client certificate from the mesh root, and (PERMISSIVE) a ``raw_buffer`` chain.

Plaintext into STRICT, no client certificate, one from another root and an expired one must
get the same verdicts; accepted callers reach the app with the same
``x-forwarded-client-cert`` (``By``, ``Hash``, ``Subject``, ``URI``), forged ones are dropped.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from auth.pem import load_cert_chain
from tests.integration.mtls_harness import admin_stats
from tests.proxy.runtime.bootstrap import cluster, hcm, route, sa, vhost
from tests.support.differential import Exchange, differential, normalize_echo
from tests.support.envoy import ProxyProcess
from tests.support.httpclient import build_request
from tests.support.mesh_pki import MeshPki, WorkloadCert
from tests.support.procs import free_port
from tests.support.upstream import Upstream

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(120)]

PROXY = "127.0.0.110"
APP = "127.0.0.111"
SNI = "outbound_.8000_._.httpbin.foo.svc.cluster.local"
SERVER_ID = "spiffe://cluster.local/ns/foo/sa/httpbin"
CLIENT_ID = "spiffe://cluster.local/ns/foo/sa/sleep"
_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."


@pytest.fixture
async def app() -> AsyncIterator[Upstream]:
    up = Upstream(APP)
    await up.start()
    yield up
    await up.stop()


def inbound_socket(server: WorkloadCert, root: Path, tmp: Path) -> dict[str, Any]:
    """What pilot's ``inbound_mtls(http=True)`` writes, with files instead of SDS."""
    cert, key = server.write(tmp, "server")
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TLS + "DownstreamTlsContext",
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(cert)},
                        "private_key": {"filename": str(key)},
                    }
                ],
                "validation_context": {"trusted_ca": {"filename": str(root)}},
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
            },
            "require_client_certificate": True,
        },
    }


def inbound_listener(
    name: str,
    port: int,
    socket: dict[str, Any],
    backend: str,
    *,
    permissive: bool,
    host: str = PROXY,
) -> dict[str, Any]:
    def manager() -> dict[str, Any]:
        return hcm(
            [vhost([route("/", backend)])],
            stat_prefix=name,
            forward_client_cert_details="APPEND_FORWARD",
            set_current_client_cert_details={"subject": True, "dns": True, "uri": True},
        )

    chains: list[dict[str, Any]] = [
        {
            "filter_chain_match": {"transport_protocol": "tls"},
            "filters": [manager()],
            "transport_socket": socket,
        }
    ]
    if permissive:
        chains.append(
            {"filter_chain_match": {"transport_protocol": "raw_buffer"}, "filters": [manager()]}
        )
    return {
        "name": name,
        "address": sa(host, port),
        "listener_filters": [
            {
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
                },
            }
        ],
        "filter_chains": chains,
    }


def client_context(pki: MeshPki, cert: WorkloadCert | None) -> ssl.SSLContext:
    """A client sidecar's side: verifies the mesh root, offers Istio's ALPN."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=pki.root_pem)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # Envoy's client default
    context.set_alpn_protocols(["istio-peer-exchange", "istio"])
    if cert is not None:
        load_cert_chain(context, cert.chain, cert.key)
    return context


_STAT = re.compile(
    r"^listener\.[0-9.]+_\d+\.(ssl\.(handshake|connection_error|fail_\w+)|no_filter_chain_match)$"
)
_FORGED = ("x-forwarded-client-cert", "By=spiffe://evil;URI=spiffe://cluster.local/ns/x/sa/admin")


async def test_inbound_mtls_verdicts_and_xfcc_match_envoy(app: Upstream, tmp_path: Path) -> None:
    pki = MeshPki()
    other = MeshPki()
    root = pki.write_root(tmp_path)
    socket = inbound_socket(pki.workload("foo", "httpbin"), root, tmp_path)
    good = client_context(pki, pki.workload("foo", "sleep"))
    strict_port, permissive_port = free_port(PROXY), free_port(PROXY)
    config = {
        "admin": {"address": sa(PROXY, free_port(PROXY))},
        "static_resources": {
            "listeners": [
                inbound_listener("strict", strict_port, socket, "app", permissive=False),
                inbound_listener("permissive", permissive_port, socket, "app", permissive=True),
            ],
            "clusters": [cluster("app", [app.address])],
        },
    }

    def ask(
        name: str, listener: str, tls: ssl.SSLContext | None, *headers: tuple[str, str]
    ) -> Exchange:
        raw = build_request("GET", f"/{name}", list(headers), b"", host="httpbin.foo:8000")
        return Exchange(
            raw, "GET", name, listener=listener, tls=tls, server_name=SNI if tls else None
        )

    exchanges = [
        ask("plaintext-into-strict", "strict", None),
        ask("mtls", "strict", good),
        ask("mtls-forged-xfcc", "strict", good, _FORGED),
        ask("no-client-cert", "strict", client_context(pki, None)),
        ask("another-root", "strict", client_context(pki, other.workload("foo", "sleep"))),
        ask(
            "expired",
            "strict",
            client_context(pki, pki.workload("foo", "sleep", ttl=600, at=time.time() - 3600)),
        ),
        ask("plaintext-forged-xfcc", "permissive", None, _FORGED),
        ask("permissive-mtls", "permissive", good),
    ]
    stats: dict[str, dict[str, int]] = {}

    async def after(kind: str, proxy: ProxyProcess) -> None:
        found = await asyncio.to_thread(admin_stats, proxy, "listener.")
        stats[kind] = {n: v for n, v in found.items() if _STAT.match(n) and v}

    report = await differential(
        config,
        exchanges,
        workdir=tmp_path,
        after_each=after,
        body=normalize_echo,
        volatile_headers=(
            "date",
            "x-request-id",
            "x-envoy-upstream-service-time",
            "server",
            "content-length",
            "x-upstream-name",
        ),
    )
    report.assert_same()
    observed = {ex.name: o for ex, o in zip(exchanges, report.observed["pymesh"], strict=True)}
    assert observed["plaintext-into-strict"].status is None
    for refused in ("no-client-cert", "another-root", "expired"):
        assert observed[refused].status is None, refused
    xfcc = json.loads(observed["mtls"].body)["headers"]["x-forwarded-client-cert"]
    assert re.fullmatch(rf'By={SERVER_ID};Hash=[0-9a-f]{{64}};Subject="";URI={CLIENT_ID}', xfcc), (
        xfcc
    )
    forged = json.loads(observed["mtls-forged-xfcc"].body)["headers"]["x-forwarded-client-cert"]
    assert forged == f"{_FORGED[1]},{xfcc}"
    plain = json.loads(observed["plaintext-forged-xfcc"].body)["headers"]
    assert "x-forwarded-client-cert" not in plain
    assert stats["envoy"] == stats["pymesh"], stats
