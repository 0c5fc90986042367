"""The security differential table: the RBAC and jwt_authn filters pilot writes for one policy
set (``security_table.py``), run by Envoy 1.40 and by the pymesh proxy from the same bootstrap,
the same requests through both. Every row must give the same status, headers and body, the
same access-log line (response details, flags, RBAC and JWT metadata), and the proxies must
end with the same ``rbac`` / ``jwt_authn`` stats.

Callers: plaintext, mTLS with SPIFFE identities signed by pymesh's CA (productpage, reviews,
foo/sleep), a client certificate without a SPIFFE ID, TLS without a client certificate, and
raw TCP. Tokens: RS256 / PS256 / ES256, valid, expired, not yet valid, wrong issuer, wrong
audience, tampered, malformed, in the header, a custom header, a query parameter.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.integration.security_table import (
    SERVER_NAME,
    Identities,
    Ports,
    Tokens,
    bootstrap,
    identities,
    tokens,
)
from tests.proxy.security.tokens import tamper
from tests.support import POLICY_NET, address
from tests.support.differential import DiffReport, Exchange, normalize_echo
from tests.support.envoy import ProxyProcess
from tests.support.httpclient import build_request, request
from tests.support.procs import free_port
from tests.support.upstream import Echo

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(180)]

PROXY = address(POLICY_NET, 1)
UPSTREAM = address(POLICY_NET, 60)
STATS = re.compile(r"\.(rbac|jwt_authn)\.")


def _row(
    name: str,
    path: str,
    *,
    listener: str = "plain",
    caller: str | None = None,
    method: str = "GET",
    host: str = "httpbin.foo:8000",
    sni: str = SERVER_NAME,
    headers: Sequence[tuple[str, str]] = (),
    ids: Identities,
) -> Exchange:
    tls: ssl.SSLContext | None = ids.clients[caller] if caller is not None else None
    raw = build_request(method, path, list(headers), b"", host=host)
    return Exchange(raw, method, name, listener=listener, tls=tls, server_name=sni if tls else None)


def _tcp(name: str, listener: str) -> Exchange:
    return Exchange(
        build_request("GET", "/tcp", [], b"", host="tcp-echo"), "GET", name, listener=listener
    )


def _rows(ids: Identities, tok: Tokens) -> list[Exchange]:
    def plain(name: str, path: str, **kw: Any) -> Exchange:
        return _row(name, path, ids=ids, **kw)

    def mtls(caller: str, name: str, path: str, **kw: Any) -> Exchange:
        return _row(name, path, listener="mtls", caller=caller, ids=ids, **kw)

    def tls(name: str, path: str, **kw: Any) -> Exchange:
        return _row(name, path, listener="tls", caller="no-certificate", ids=ids, **kw)

    def jwt(name: str, path: str, token: str, header: str = "authorization") -> Exchange:
        value = f"Bearer {token}" if header == "authorization" else token
        return _row(name, path, headers=[(header, value)], ids=ids)

    a, b = tok.a, tok.b
    pp = "productpage"
    return [
        # -- principals over mTLS, methods, paths ------------------------------------------
        plain("plaintext caller, ALLOW by principal", "/productpage"),
        mtls(pp, "productpage GET", "/productpage"),
        mtls(pp, "productpage HEAD", "/productpage", method="HEAD"),
        mtls(pp, "productpage POST", "/productpage", method="POST"),
        mtls(pp, "productpage DELETE (DENY wins)", "/productpage", method="DELETE"),
        mtls(pp, "productpage prefix", "/static/app.css?v=1"),
        mtls(pp, "productpage other path", "/productpage/x"),
        mtls("reviews", "reviews GET", "/productpage"),
        mtls("dns-only", "no SPIFFE ID", "/productpage"),
        tls("no client certificate, TLS", "/productpage"),
        mtls("no-certificate", "no client certificate, mTLS required", "/productpage"),
        # -- namespaces and path templates ---------------------------------------------------
        mtls("sleep", "foo ns {*}", "/api/v1/items"),
        mtls("sleep", "foo ns {*} two segments", "/api/v1/x/items"),
        mtls("sleep", "foo ns {**}", "/files/a/b/c.txt"),
        mtls("sleep", "foo ns {**} query", "/files/a?x=1#frag"),
        mtls(pp, "default ns {*}", "/api/v1/items"),
        mtls("sleep", "DENY when header missing", "/files/admin/x"),
        mtls("sleep", "DENY when header wrong", "/files/admin/x", headers=[("x-token", "guest")]),
        mtls("sleep", "no DENY: admin", "/files/admin/x", headers=[("x-token", "admin")]),
        # -- hosts, SNI, ports, IPs ----------------------------------------------------------
        plain("host suffix", "/anything", host="api.example.com"),
        plain("host suffix with port", "/anything", host="API.example.com:8000"),
        plain("host suffix notPaths", "/private/x", host="api.example.com"),
        plain("other host", "/anything", host="api.example.org"),
        tls("SNI matches", "/sni", sni="api.example.com"),
        tls("SNI other", "/sni"),
        plain("SNI on plaintext", "/sni"),
        mtls("sleep", "SNI without TLS inspector", "/sni", sni="api.example.com"),
        plain("destination port", "/port"),
        tls("destination port other listener", "/port"),
        plain("remote IP from XFF", "/ip", headers=[("x-forwarded-for", "10.1.2.3")]),
        plain("remote IP XFF list", "/ip", headers=[("x-forwarded-for", "10.9.9.9, 10.1.2.7")]),
        plain("remote IP other", "/ip", headers=[("x-forwarded-for", "10.9.9.9")]),
        plain("remote IP no XFF", "/ip"),
        plain("notPrincipals on plaintext", "/plaintext-only"),
        mtls("reviews", "notPrincipals over mTLS", "/plaintext-only"),
        # -- JWT -------------------------------------------------------------------------------
        jwt("JWT RS256 alice admins", "/jwt", a()),
        jwt("JWT PS256 alice admins", "/jwt", a("PS256")),
        plain("JWT in access_token", "/jwt?access_token=" + a() + "&z=1"),
        jwt("JWT without groups", "/jwt", a(groups=["dev"])),
        jwt("JWT groups string", "/jwt", a(groups="admins")),
        jwt("JWT other subject", "/jwt", a(sub="mallory")),
        plain("JWT missing", "/jwt"),
        jwt("JWT expired", "/jwt", a(exp=1_600_000_000)),
        jwt("JWT not yet valid", "/jwt", a(nbf=4_000_000_000)),
        jwt("JWT wrong audience", "/jwt", a(aud="other.example.com")),
        jwt("JWT audience list", "/jwt", a(aud=["x", "api.example.com"])),
        jwt("JWT wrong issuer", "/jwt", a(iss="https://evil.example.com")),
        jwt("JWT tampered", "/jwt?q=1", tamper(a())),
        jwt("JWT malformed", "/jwt", "not-a-token"),
        jwt("JWT unsigned", "/jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
        plain("JWT lower-case bearer", "/jwt", headers=[("authorization", "bearer " + a())]),
        jwt("JWT B in its header", "/b/x", b(), "x-token-b"),
        plain("JWT B in its param", "/b/x?tok=" + b()),
        jwt("JWT B in Authorization", "/b/x", b()),
        jwt("JWT B path not allowed", "/other", b(), "x-token-b"),
        jwt("JWT B expired", "/b/x", b(exp=1_600_000_000), "x-token-b"),
        plain("JWT forged claim header", "/b/x", headers=[("x-token-b", b()), ("x-jwt-sub", "r")]),
        plain("JWT valid A, bad B", "/jwt", headers=[("authorization", "Bearer " + a()),
                                                      ("x-token-b", "junk")]),
        mtls("reviews", "JWT over mTLS", "/jwt", headers=[("authorization", "Bearer " + a())]),
        # -- AUDIT and dry-run ---------------------------------------------------------------
        mtls(pp, "AUDIT and dry-run DENY match", "/static/a.js"),
        mtls("reviews", "AUDIT and dry-run, denied anyway", "/static/a.js"),
        # -- TCP -------------------------------------------------------------------------------
        _tcp("TCP port allowed", "tcp"),
        _tcp("TCP DENY with an HTTP method denies all", "tcp_other"),
    ]  # fmt: skip


async def _stats(proxy: ProxyProcess) -> dict[str, int]:
    resp = await request(*proxy.admin, "GET", "/stats")
    out: dict[str, int] = {}
    for line in resp.text.splitlines():
        name, _, value = line.partition(": ")
        if STATS.search(name) and value.isdigit():
            out[name] = int(value)
    return out


@pytest.fixture
async def table(
    tmp_path: Path, upstream_factory: Any
) -> tuple[dict[str, Any], list[Exchange], Path]:
    ids = identities(tmp_path / "pki")
    tok = tokens()
    upstream = await upstream_factory(UPSTREAM, 0, default=Echo())
    ports = Ports(*(free_port(PROXY) for _ in range(5)))
    log = tmp_path / "access.log"
    config = bootstrap(PROXY, ports, upstream.address, ids, tok, log)
    return config, _rows(ids, tok), log


async def test_policy_verdicts_match_envoy(differ: Any, table: Any) -> None:
    config, rows, log = table
    stats: dict[str, dict[str, int]] = {}
    logs: dict[str, list[str]] = {}

    def clear_log(kind: str) -> None:
        log.write_text("")

    async def collect(kind: str, proxy: ProxyProcess) -> None:
        stats[kind] = await _stats(proxy)

    report: DiffReport = await differ(
        config,
        rows,
        body=normalize_echo,
        volatile_headers={
            "date",
            "x-request-id",
            "x-envoy-upstream-service-time",
            "content-length",
        },
        before_each=clear_log,
        after_each=_reading_logs(collect, log, logs),
    )
    _tls_refusals_alike(report)
    report.assert_same()
    outcomes = [o.status for o in report.observed["envoy"]]
    # The table exercises every outcome: allowed, RBAC-denied, JWT-refused, closed.
    assert {200, 401, 403, None} <= set(outcomes), outcomes
    assert logs["envoy"] == logs["pymesh"], _first_difference(logs["envoy"], logs["pymesh"])
    assert stats["envoy"] == stats["pymesh"]


def _tls_refusals_alike(report: DiffReport) -> None:
    """A TLS connection the server refuses ends before any response: Envoy sends the TLS alert
    first (the client sees an SSL error), pymesh's TLS stack closes or resets without it. Both
    refuse."""
    for observed in report.observed.values():
        for index, exchange in enumerate(report.exchanges):
            seen = observed[index]
            if exchange.tls is not None and seen.status is None and seen.outcome != "refused":
                observed[index] = replace(seen, outcome="refused")


def _reading_logs(collect: Any, log: Path, logs: dict[str, list[str]]) -> Any:
    async def after(kind: str, proxy: ProxyProcess) -> None:
        await collect(kind, proxy)
        await proxy.astop()  # access logs are flushed when the proxy stops
        logs[kind] = log.read_text().splitlines()

    return after


def _first_difference(left: list[str], right: list[str]) -> str:
    for a, b in zip(left, right, strict=False):
        if a != b:
            return f"envoy:  {a}\npymesh: {b}"
    return f"{len(left)} lines vs {len(right)}"
