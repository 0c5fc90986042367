"""Remote JWKS (``jwksUri``): fetched through a cluster, cached, and what happens when the
endpoint is down — the same answers from Envoy and pymesh while it is up or was never up; and
pymesh keeping the keys it has when a refresh fails, counting the failure."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost
from tests.proxy.security.tokens import jwks_json, make_keys, tamper
from tests.support import POLICY_NET, address
from tests.support.differential import Exchange
from tests.support.envoy import PymeshProxyProcess
from tests.support.httpclient import build_request, request
from tests.support.procs import free_port
from tests.support.upstream import Echo, Fixed, Steps

pytestmark = pytest.mark.envoy

PROXY = address(POLICY_NET, 2)
BACKEND = address(POLICY_NET, 61)
JWKS_HOST = address(POLICY_NET, 62)
ISSUER = "https://issuer.example.com"
KEYS = make_keys()


def _filter(cache_duration: str = "300s") -> dict[str, Any]:
    provider = {
        "issuer": ISSUER,
        "payload_in_metadata": "payload",
        "remote_jwks": {
            "http_uri": {
                "uri": "http://jwks.example.com/keys.json",
                "cluster": "jwks",
                "timeout": "1s",
            },
            "cache_duration": cache_duration,
        },
    }
    optional = {"requires_any": {"requirements": [{"provider_name": "p"}, {"allow_missing": {}}]}}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3"
            ".JwtAuthentication",
            "providers": {"p": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": optional}],
        },
    }


Address = tuple[str, int]


def _config(backend: Address, jwks: Address, cache: str = "300s") -> tuple[Any, Address]:
    listen = (PROXY, free_port(PROXY))
    config = bootstrap(
        [listener(listen, hcm([vhost([route("/")])], http_filters=[_filter(cache)]))],
        [cluster("backend", [backend]), cluster("jwks", [jwks])],
    )
    return config, listen


def _token(**claims: Any) -> str:
    return KEYS["RS256"].sign({"iss": ISSUER, "sub": "alice", "exp": 4_000_000_000, **claims})


def _get(name: str, token: str | None) -> Exchange:
    headers = [("authorization", f"Bearer {token}")] if token else []
    return Exchange(build_request("GET", "/p", headers, b"", host="h"), "GET", name)


async def _stat(admin: tuple[str, int], name: str) -> int:
    text = (await request(*admin, "GET", "/stats")).text
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key.endswith(name):
            return int(value)
    raise AssertionError(f"no {name} in:\n{text}")


@pytest.fixture
async def backend(upstream_factory: Any) -> Address:
    up = await upstream_factory(BACKEND, 0, default=Echo())
    address: Address = up.address
    return address


async def _compare(
    differ: Any, config: Any, rows: Sequence[Exchange], stats: Sequence[str]
) -> None:
    counts: dict[str, list[int]] = {}

    async def read(kind: str, proxy: Any) -> None:
        counts[kind] = [await _stat(proxy.admin, s) for s in stats]

    # Echo bodies carry ports that differ between runs; the JWT answers are what matters.
    report = await differ(
        config, rows, body=lambda b: b if b.startswith(b"Jwt") else b"", after_each=read
    )
    report.assert_same()
    assert counts["envoy"] == counts["pymesh"], counts


async def test_keys_fetched_through_the_cluster(
    differ: Any, backend: Address, upstream_factory: Any
) -> None:
    jwks = await upstream_factory(
        JWKS_HOST, 0, routes={"/keys.json": Fixed(200, jwks_json(KEYS["RS256"]).encode())}
    )
    config, _ = _config(backend, jwks.address)
    rows = [
        _get("valid, first fetch", _token()),
        _get("tampered", tamper(_token())),
        _get("valid, cached keys", _token()),
        _get("no token", None),
    ]
    await _compare(differ, config, rows, ["jwks_fetch_success", "jwks_fetch_failed", "allowed"])
    assert jwks.received[0].headers["host"] == "jwks.example.com"


async def test_an_endpoint_that_never_answered(differ: Any, backend: Address) -> None:
    dead = (JWKS_HOST, free_port(JWKS_HOST))  # nothing listens there
    config, _ = _config(backend, dead)
    rows = [_get("valid token, no keys", _token()), _get("no token", None)]
    await _compare(differ, config, rows, ["jwks_fetch_failed", "denied", "allowed"])


async def test_a_jwks_that_does_not_parse(
    differ: Any, backend: Address, upstream_factory: Any
) -> None:
    jwks = await upstream_factory(JWKS_HOST, 0, routes={"/keys.json": Fixed(200, b"not json")})
    config, _ = _config(backend, jwks.address)
    await _compare(differ, config, [_get("valid token", _token())], ["denied"])


async def test_cached_keys_outlive_an_endpoint_that_goes_down(
    tmp_path: Path, backend: Address, upstream_factory: Any
) -> None:
    """Keys due for a refresh keep verifying while the refresh runs; a refresh that fails (here
    the endpoint answers 503) keeps them and counts the failure."""
    document = jwks_json(KEYS["RS256"]).encode()
    jwks = await upstream_factory(
        JWKS_HOST, 0, routes={"/keys.json": Steps((Fixed(200, document), Fixed(503)))}
    )
    config, listen = _config(backend, jwks.address, cache="1s")
    proxy = PymeshProxyProcess(config, workdir=tmp_path)
    await proxy.astart()
    try:
        bearer = [("authorization", "Bearer " + _token())]
        assert (await request(*listen, "GET", "/p", bearer)).status == 200
        await asyncio.sleep(1.1)  # past cache_duration: the next request starts a refresh
        for _ in range(3):
            assert (await request(*listen, "GET", "/p", bearer)).status == 200
        async with asyncio.timeout(10):
            while await _stat(proxy.admin, "jwks_fetch_failed") < 1:
                await asyncio.sleep(0.05)
        bad = await request(*listen, "GET", "/p", [("authorization", "Bearer " + tamper(_token()))])
        assert (bad.status, bad.body) == (401, b"Jwt verification fails")
        assert await _stat(proxy.admin, "jwks_fetch_success") == 1
    finally:
        await proxy.astop()
