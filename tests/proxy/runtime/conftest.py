"""Fixtures for the proxy runtime tests: the proxy in the test's own event loop.

``start_proxy(config)`` builds the runtime from a bootstrap dict exactly as ``pymesh proxy``
does (``bootstrap_from_dict`` → :class:`~proxy.server.ProxyServer`, or the whole
:class:`~proxy.sidecar.Sidecar` with its admin interface) and stops it at teardown. Tests that
need a process of their own (signals, memory, the command line) use ``proxy_factory``.

Addresses: 127.0.1.1-9 for proxies and admin, 127.0.1.10-99 for upstreams (see
:mod:`tests.support`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from proxy.config.bootstrap import bootstrap_from_dict
from proxy.config.translate import FilterRegistry
from proxy.server import ProxyServer
from proxy.sidecar import Sidecar
from tests.support import PROXY_NET, address
from tests.support.envoy import listener_address
from tests.support.procs import free_port

PROXY = address(PROXY_NET, 1)
ADMIN = address(PROXY_NET, 2)


def upstream_ip(n: int) -> str:
    """The n-th upstream address (127.0.1.10 + n)."""
    return address(PROXY_NET, 10 + n)


def listen_address(host: str = PROXY) -> tuple[str, int]:
    return (host, free_port(host))


@dataclass
class InProcessProxy:
    server: ProxyServer
    sidecar: Sidecar | None
    config: dict[str, Any]
    stopped: bool = False

    @property
    def address(self) -> tuple[str, int]:
        return listener_address(self.config)

    def listener(self, name: str) -> tuple[str, int]:
        return listener_address(self.config, name)

    def stat(self, name: str) -> int:
        """A counter or gauge by its Envoy name; 0 when it was never created."""
        for s in (*self.server.stats.counters(), *self.server.stats.gauges()):
            if s.name == name:
                return int(s.value)
        return 0

    async def stop(self) -> None:
        """Stop (and flush the access logs), as at process exit; a second call does nothing."""
        if self.stopped:
            return
        self.stopped = True
        if self.sidecar is not None:
            await self.sidecar.stop()
        else:
            await self.server.shutdown()


StartProxy = Callable[..., Awaitable[InProcessProxy]]


@pytest.fixture
async def start_proxy(upstream_factory: Any) -> AsyncIterator[StartProxy]:
    """``await start_proxy(config, *, admin=False, registry=None, seed=None)``.

    ``admin=True`` runs the whole :class:`Sidecar` (the bootstrap must have an ``admin``);
    ``registry`` adds user filters (translation and factory); ``seed`` makes the proxy's RNG
    repeatable.
    Depends on ``upstream_factory`` so that proxies stop before the upstreams they use.
    """
    started: list[InProcessProxy] = []

    async def start(
        config: dict[str, Any],
        *,
        admin: bool = False,
        registry: FilterRegistry | None = None,
        seed: int | None = None,
        drain_time: float = 2.0,
    ) -> InProcessProxy:
        boot = bootstrap_from_dict(config, registry=registry)
        loop = asyncio.get_running_loop()
        if admin:
            sidecar = Sidecar(boot, loop=loop, drain_time=drain_time)
            proxy = InProcessProxy(sidecar.server, sidecar, config)
            started.append(proxy)
            await sidecar.start()
            return proxy
        rng = random.Random(seed) if seed is not None else None
        server = ProxyServer(boot, loop=loop, registry=registry, rng=rng)
        proxy = InProcessProxy(server, None, config)
        started.append(proxy)
        await server.start()
        return proxy

    yield start
    for proxy in reversed(started):
        await proxy.stop()
