"""Verdicts compared with Envoy on mutated raw requests: one valid request, many one-byte
changes to its authority, target and header names. Only the verdict is compared (the status,
or how the connection ended); each class of difference found this way is either fixed (the
test asserts the same verdict) or pinned here as a documented difference."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost
from tests.support import ENVOY_DIFF_NET, address
from tests.support.differential import DiffReport, Exchange
from tests.support.procs import free_port
from tests.support.upstream import Upstream

pytestmark = pytest.mark.envoy

Differ = Callable[..., Awaitable[DiffReport]]
Factory = Callable[..., Awaitable[Upstream]]

# Bytes that RFC 3986's authority grammar does not allow, and some it does.
AUTHORITY_BYTES = [bytes([b]) for b in b' "<>\\^`{|}%\x7f\x80\xff'] + [
    bytes([b]) for b in b"!$&'()*+,;=~_-.@[]:"
]


def authority_mutations() -> list[Exchange]:
    out = []
    for byte in AUTHORITY_BYTES:
        host = b"sv" + byte + b"c"
        out.append(Exchange(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", name=repr(host)))
    for host in (b"svc:", b"svc:80x", b"svc:99999", b"[::1]:80", b"user@svc", b"sv c:80"):
        out.append(Exchange(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", name=repr(host)))
    return out


def line_mutations() -> list[Exchange]:
    """The request line and header names, one change at a time."""
    lines = [
        b"get / HTTP/1.1",
        b"FOO / HTTP/1.1",
        b"GET /a%zz HTTP/1.1",
        b"GET /a#frag HTTP/1.1",
        b"GET /a?b c HTTP/1.1",
        b"GET * HTTP/1.1",
        b"GET /\x7f HTTP/1.1",
        b"GET /\x80 HTTP/1.1",
        b"GET / HTTP/1.2",
        b"GET / HTTP/2.0",
        b"GET  / HTTP/1.1",
    ]
    out = [Exchange(line + b"\r\nHost: svc\r\n\r\n", name=repr(line)) for line in lines]
    for name in (b"X_Foo", b"X Foo", b"X\x80", b"X@Foo", b"X{Foo", b'X"Foo'):
        head = b"GET / HTTP/1.1\r\nHost: svc\r\n" + name + b": v\r\n\r\n"
        out.append(Exchange(head, name=repr(name)))
    return out


def verdict(observed: object) -> object:
    status = getattr(observed, "status", None)
    return status if status is not None else getattr(observed, "outcome", None)


async def test_mutated_request_verdicts_match_envoy(
    differ: Differ, upstream_factory: Factory
) -> None:
    up = await upstream_factory(address(ENVOY_DIFF_NET, 10))
    listen = (address(ENVOY_DIFF_NET, 1), free_port(address(ENVOY_DIFF_NET, 1)))
    config = bootstrap(
        [listener(listen, hcm([vhost([route("/")])]))], [cluster("backend", [up.address])]
    )
    exchanges = authority_mutations() + line_mutations()
    report = await differ(config, exchanges)
    rows = [
        (ex.name, verdict(e), verdict(p))
        for ex, e, p in zip(
            exchanges, report.observed["envoy"], report.observed["pymesh"], strict=True
        )
    ]
    different = [row for row in rows if row[1] != row[2]]
    assert different == [], "\n".join(f"{n}: envoy {e} pymesh {p}" for n, e, p in rows)
