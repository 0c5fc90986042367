"""The HTTP filter interface and the registry that creates filters by name.

A filter has two halves, as in Envoy: a *factory* built once per configuration snapshot from
the filter's translated config, and a *filter instance* created per request by calling that
factory. Hooks return a :class:`FilterStatus`; ``STOP`` pauses the chain until the filter
calls ``stream.resume()`` (after a fault delay, say) or answers with
``stream.send_local_reply(...)``.

A complete user filter::

    class AddHeader(HttpFilter):
        def __init__(self, value: bytes) -> None:
            self.value = value

        def on_request_headers(self, stream: FilterStream) -> FilterStatus:
            stream.request_headers.append((b"x-added", self.value))
            return FilterStatus.CONTINUE

    factories.register("example.add_header", lambda config, ctx: lambda: AddHeader(b"yes"))
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from proxy.config.model_http import HttpFilter as HttpFilterModel
from pymesh.errors import UnsupportedError

if TYPE_CHECKING:
    from proxy.config.model_route import Route
    from proxy.stats import Counter, StatsStore

__all__ = [
    "FilterContext",
    "FilterFactory",
    "FilterStatus",
    "FilterStream",
    "HttpFilter",
    "HttpFilterFactories",
]


class FilterStatus(enum.IntEnum):
    CONTINUE = 0
    STOP = 1


class FilterStream(Protocol):
    """What a filter sees of the request it runs on."""

    request_headers: list[tuple[bytes, bytes]]
    method: bytes
    path: bytes
    authority: bytes
    route: Route | None
    cluster_name: str | None
    downstream_address: str
    loop: asyncio.AbstractEventLoop

    def per_route_config(self, filter_name: str) -> object | None: ...
    def send_local_reply(
        self,
        status: int,
        body: bytes = b"",
        *,
        flag: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        details: str = "",
    ) -> None: ...
    def resume(self) -> None: ...
    def add_response_flag(self, flag: str) -> None: ...
    def counter(self, name: str) -> Counter: ...
    def on_complete(self, callback: Callable[[], None]) -> None: ...


class HttpFilter:
    """Base class of per-request filter instances; override the hooks you need."""

    __slots__ = ()

    def on_request_headers(self, stream: FilterStream) -> FilterStatus:
        return FilterStatus.CONTINUE

    def on_response_headers(
        self, stream: FilterStream, status: int, headers: list[tuple[bytes, bytes]]
    ) -> int:
        """May edit ``headers`` in place; returns the status to send."""
        return status


@dataclass(frozen=True, slots=True)
class FilterContext:
    """What a filter factory may hold on to: the proxy's clock, RNG and stats."""

    loop: asyncio.AbstractEventLoop
    rng: random.Random
    clock: Callable[[], float]
    stats: StatsStore
    stat_prefix: str


# (translated config, context) -> per-request instance maker
FilterFactory = Callable[[object, FilterContext], Callable[[], HttpFilter]]


class HttpFilterFactories:
    """Maps filter names (and type URLs) to factories. One registry per proxy process."""

    def __init__(self) -> None:
        self._by_name: dict[str, FilterFactory] = {}
        self._by_type: dict[str, FilterFactory] = {}

    def register(self, name: str, factory: FilterFactory, *, type_url: str = "") -> None:
        self._by_name[name] = factory
        if type_url:
            self._by_type[type_url] = factory

    def build(self, spec: HttpFilterModel, context: FilterContext) -> Callable[[], HttpFilter]:
        factory = self._by_type.get(spec.type_url) or self._by_name.get(spec.name)
        if factory is None:
            raise UnsupportedError(f"HTTP filter {spec.name!r} has no pymesh implementation")
        return factory(spec.config, context)

    @property
    def names(self) -> Mapping[str, FilterFactory]:
        return self._by_name
