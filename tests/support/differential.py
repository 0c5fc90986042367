"""Differential testing: the same requests through Envoy and ``pymesh proxy``, compared.

:func:`differential` runs the exchanges through each proxy kind in turn, with the same
bootstrap on the same addresses, and a :class:`DiffReport` says where status, headers or
body differ. Headers whose values legitimately vary (``date``, ``x-request-id``, …) are
compared for presence only; :func:`normalize_echo` does the same inside echo bodies.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.envoy import PROXY_KINDS, Bootstrap, ProxyProcess, make_proxy
from tests.support.httpclient import (
    AsyncConnection,
    BadResponse,
    IncompleteResponse,
    Response,
    ResponseTimeout,
)

__all__ = [
    "VOLATILE_HEADERS",
    "DiffReport",
    "Exchange",
    "Observed",
    "differential",
    "normalize_echo",
]

# Compared for presence only: their values legitimately differ between runs.
VOLATILE_HEADERS = frozenset({"date", "x-envoy-upstream-service-time", "x-request-id"})


@dataclass(frozen=True, slots=True)
class Exchange:
    """Exact request bytes to send; ``method`` tells the parser whether a body follows.
    ``listener`` (a listener's name) overrides the run's; ``tls`` opens a TLS connection with
    that client context (its certificate, if any, for mTLS) and ``server_name`` as SNI."""

    request: bytes
    method: str = "GET"
    name: str = ""
    timeout: float = 5.0
    listener: str | None = None
    tls: ssl.SSLContext | None = None
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class Observed:
    """What the client saw, normalised: a response, or how the connection ended."""

    status: int | None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    outcome: str = "response"  # response | closed | reset | timeout | bad-response


@dataclass(slots=True)
class DiffReport:
    exchanges: list[Exchange]
    observed: dict[str, list[Observed]] = field(default_factory=dict)

    @property
    def differences(self) -> list[str]:
        kinds = list(self.observed)
        out: list[str] = []
        for i, ex in enumerate(self.exchanges):
            seen = {k: self.observed[k][i] for k in kinds}
            first = seen[kinds[0]]
            for k in kinds[1:]:
                if seen[k] != first:
                    label = ex.name or ex.request.split(b"\r\n", 1)[0].decode("latin-1")
                    out.append(f"[{i}] {label}:\n  {kinds[0]}: {first}\n  {k}: {seen[k]}")
        return out

    def assert_same(self) -> None:
        diffs = self.differences
        assert not diffs, "proxies differ:\n" + "\n".join(diffs)


def normalize_echo(body: bytes, drop_headers: Iterable[str] = VOLATILE_HEADERS) -> bytes:
    """An :class:`~tests.support.upstream.Echo` body without what varies between runs."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    for key in ("connection", "index_on_connection", "raw_headers"):
        doc.pop(key, None)
    for h in drop_headers:
        if h in doc.get("headers", {}):
            doc["headers"][h] = "*"
    return json.dumps(doc, sort_keys=True).encode()


def _observe(
    resp: Response, volatile: frozenset[str], body_fn: Callable[[bytes], bytes]
) -> Observed:
    hs = sorted((k, "*" if k in volatile else v) for k, v in resp.headers)
    return Observed(resp.status, tuple(hs), body_fn(resp.body))


async def _run_exchanges(
    proxy: ProxyProcess,
    exchanges: Sequence[Exchange],
    listener: str | None,
    keep_alive: bool,
    volatile: frozenset[str],
    body_fn: Callable[[bytes], bytes],
) -> list[Observed]:
    out: list[Observed] = []
    conn: AsyncConnection | None = None
    opened_for: tuple[object, ...] | None = None
    for ex in exchanges:
        target = (ex.listener or listener, ex.tls, ex.server_name)
        if conn is not None and target != opened_for:
            await conn.close()
            conn = None
        try:
            if conn is None:
                host, port = proxy.listener(ex.listener or listener)
                opened_for = target
                conn = await AsyncConnection.open(
                    host, port, tls=ex.tls, server_name=ex.server_name
                )
            await conn.send(ex.request)
            resp = await conn.read_response(ex.method, ex.timeout)
            out.append(_observe(resp, volatile, body_fn))
            if not keep_alive or resp.will_close:
                await conn.close()
                conn = None
            continue
        except IncompleteResponse as exc:
            out.append(Observed(exc.status, outcome="reset" if exc.reset else "closed"))
        except ResponseTimeout as exc:
            out.append(Observed(exc.status, outcome="timeout"))
        except BadResponse:
            out.append(Observed(None, outcome="bad-response"))
        except (ssl.SSLError, ConnectionError):
            # The TLS handshake failed (a client certificate the listener refuses).
            out.append(Observed(None, outcome="refused"))
        if conn is not None:
            await conn.close()
            conn = None
    if conn is not None:
        await conn.close()
    return out


async def differential(
    bootstrap: Bootstrap,
    exchanges: Sequence[Exchange],
    *,
    workdir: str | os.PathLike[str],
    kinds: Sequence[str] = PROXY_KINDS,
    listener: str | None = None,
    keep_alive: bool = False,
    volatile_headers: Iterable[str] = VOLATILE_HEADERS,
    body: Callable[[bytes], bytes] = lambda b: b,
    before_each: Callable[[str], Awaitable[None] | None] | None = None,
    after_each: Callable[[str, ProxyProcess], Awaitable[None]] | None = None,
) -> DiffReport:
    """Send ``exchanges`` through each proxy kind in turn (same bootstrap, same addresses).

    Each kind gets a fresh process; ``before_each(kind)`` runs before it starts (reset the
    upstreams there), ``after_each(kind, proxy)`` after the exchanges, before it stops (read
    its stats there). One connection per exchange unless ``keep_alive``. ``body`` normalises
    response bodies (:func:`normalize_echo` for echo upstreams).
    """
    report = DiffReport(list(exchanges))
    volatile = frozenset(h.lower() for h in volatile_headers)
    for kind in kinds:
        if before_each is not None:
            maybe = before_each(kind)
            if maybe is not None:
                await maybe
        proxy = make_proxy(kind, bootstrap, workdir=Path(workdir) / kind)
        await proxy.astart()
        try:
            report.observed[kind] = await _run_exchanges(
                proxy, exchanges, listener, keep_alive, volatile, body
            )
            if after_each is not None:
                await after_each(kind, proxy)
        finally:
            await proxy.astop()
    return report
