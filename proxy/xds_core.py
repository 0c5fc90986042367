"""What the proxy's two ADS clients share: the accepted state, warming, whole snapshots.

:class:`XdsCore` subscribes the way Envoy does on start: clusters, then the endpoints of the
EDS clusters, then listeners, then the route tables their connection managers name (and SDS
secrets, when referenced). The accepted state of every type, plus the bootstrap's static
resources, becomes ONE :class:`ProxySnapshot` that :meth:`ProxyServer.apply` makes live. A
response that does not translate or apply is NACKed with the error (prefixed with the resource
name) and the last good snapshot keeps running. While pilot is unreachable the proxy keeps
serving and reconnects with jittered exponential backoff.

The wire protocol is a subclass's: state of the world (:mod:`proxy.xds_client`) or delta
(:mod:`proxy.xds_delta`). It opens the stream, turns a response into the new state of its
type, and says how a type's subscription, ACK and NACK are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Mapping
from types import MappingProxyType
from typing import Any

import grpc
import structlog

from proxy.config.model import Bootstrap
from proxy.config.snapshot import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    ProxySnapshot,
)
from proxy.config.translate import FilterRegistry, default_registry
from proxy.sds_client import AgentSds
from proxy.xds_resources import PROTOS, ads_target, node_of
from proxy.xds_warming import Need, Selection, Warming, names_by_source, needs_of, report
from pymesh.backoff import Backoff, sleep_before_retry
from pymesh.errors import ConfigError, ControlPlaneError

__all__ = ["ORDER", "XdsCore"]

log = structlog.get_logger(__name__)

#: the order Envoy subscribes in (and resubscribes on a reconnect)
ORDER = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE)
_UPDATE_STATS = {CLUSTER_TYPE: "cluster_manager.cds", LISTENER_TYPE: "listener_manager.lds"}
_KEEPALIVE = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000)]


class XdsCore:
    def __init__(
        self,
        server: Any,
        *,
        rng: random.Random | None = None,
        registry: FilterRegistry | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.server = server
        self.bootstrap: Bootstrap = server.bootstrap
        self.target = ads_target(self.bootstrap)
        self.node = node_of(self.bootstrap)
        self.registry = registry or server.registry or default_registry()
        self.backoff = backoff or Backoff(rng or random.Random())
        self.static = ProxySnapshot.from_bootstrap(self.bootstrap)
        dynamic = self.bootstrap.dynamic_resources
        assert dynamic is not None
        self.types = tuple(
            t
            for t, source in (
                (CLUSTER_TYPE, dynamic.cds_config),
                (LISTENER_TYPE, dynamic.lds_config),
            )
            if source is not None
        )
        timeouts = [s.initial_fetch_timeout for s in (dynamic.cds_config, dynamic.lds_config) if s]
        self.initial_fetch_timeout = 0.0 if not timeouts or 0 in timeouts else max(timeouts)
        # accepted state, by type and name; survives reconnects
        self.accepted: dict[str, dict[str, Any]] = {t: {} for t in PROTOS}
        self.versions: dict[str, str] = {}
        self.names: dict[str, frozenset[str]] = {}
        self.received: set[str] = set()
        self.applied = False
        self.connected = asyncio.Event()
        self.updates = 0
        self.rejects = 0
        self._nonces: dict[str, str] = {}
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False  # the stream broke and no response came since
        self._warming = Warming()
        self._warm_timer: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._late_nack: tuple[str, tuple[str, ...]] | None = None
        self._applying = asyncio.Lock()
        # SDS from the identity agent (merged into every snapshot's secrets).
        self.agent = AgentSds(self.bootstrap, self.node, self._agent_changed, self.server.stats)

    # -- the protocol's part -----------------------------------------------------------------
    def _open(self, channel: grpc.aio.Channel, requests: AsyncIterator[Any]) -> Any:
        """The ADS call on ``channel`` (an async iterable of responses)."""
        raise NotImplementedError

    async def _on_response(self, reply: Any) -> None:
        raise NotImplementedError

    def _hello(self) -> None:
        """On a (re)connect: subscribe again to what was subscribed before."""
        raise NotImplementedError

    def _subscribe(self, type_url: str, names: frozenset[str]) -> None:
        """Subscribe ``type_url`` to ``names`` (a wildcard type: none), first time or again."""
        raise NotImplementedError

    def _send(self, type_url: str, error: str | None = None) -> None:
        """ACK the last response of ``type_url``, or NACK it with ``error``."""
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="xds-client")
        if self.initial_fetch_timeout > 0:
            self._timer = loop.call_later(self.initial_fetch_timeout, self._initial_timeout)

    async def stop(self) -> None:
        await self.agent.stop()
        for timer in (self._timer, self._warm_timer):
            if timer is not None:
                timer.cancel()
        for pending in list(self._pending):
            pending.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _initial_timeout(self) -> None:
        if not self.server.ready:
            log.warning("initial xDS fetch timed out; serving what is there", target=self.target)
            self.server.ready = True

    async def _run(self) -> None:
        while True:
            got_response = False
            try:
                async for _ in self._stream():
                    if not got_response:
                        got_response = True
                        self.backoff.reset()
                        if self._lost:
                            self._lost = False
                            log.info("xds stream re-established", target=self.target)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
            except ControlPlaneError as exc:
                reason = str(exc)
            except Exception as exc:  # a bug: keep the traceback
                log.exception("xds stream failed", target=self.target)
                reason = f"{type(exc).__name__}: {exc}"
            self.connected.clear()
            delay = self.backoff.next()
            # A pilot restart is routine: one warning when the stream is lost, no traceback,
            # and the retries until pilot is back at debug level.
            say = log.warning if got_response or not self._lost else log.debug
            self._lost = True
            say(
                "xds stream lost; reconnecting",
                target=self.target,
                error=reason,
                in_seconds=round(delay, 2),
            )
            await sleep_before_retry(delay)

    # -- one stream --------------------------------------------------------------------------
    async def _stream(self) -> AsyncIterator[None]:
        self._nonces = {}
        self._outbox = asyncio.Queue()
        async with grpc.aio.insecure_channel(self.target, options=_KEEPALIVE) as channel:
            call = self._open(channel, self._requests())
            self._hello()
            async for reply in call:
                self.connected.set()
                await self._on_response(reply)
                yield None
            raise ControlPlaneError("pilot closed the xDS stream")

    async def _requests(self) -> AsyncIterator[Any]:
        while (request := await self._outbox.get()) is not None:
            yield request

    def _first_types(self) -> list[str]:
        """The types to subscribe on a (re)connect: what was subscribed before, else the
        first type (Envoy: CDS)."""
        subscribed = [t for t in ORDER if t in self.names]
        if not subscribed and self.types:
            subscribed = [self.types[0]]
            self.names[self.types[0]] = frozenset()
        return subscribed

    def _resubscribe(self, type_url: str, names: frozenset[str]) -> None:
        if type_url not in self.names and not names:
            return  # never subscribed and nothing to ask for
        if self.names.get(type_url) != names:
            self._subscribe(type_url, names)

    async def _accept(self, type_url: str, version: str, state: dict[str, Any]) -> bool:
        """Make ``state`` the accepted state of ``type_url`` and apply it; ACK it, or NACK it
        (and go back to the previous state) when it does not apply. True when accepted."""
        previous, previous_version = self.accepted[type_url], self.versions.get(type_url)
        self.accepted[type_url] = state
        self.versions[type_url] = version
        self.received.add(type_url)
        try:
            bind_errors = await self._update()
        except ConfigError as exc:
            self.accepted[type_url] = previous
            if previous_version is None:
                self.versions.pop(type_url, None)
            else:
                self.versions[type_url] = previous_version
            self._nack(type_url, version, str(exc))
            return False
        if bind_errors and type_url == LISTENER_TYPE:
            # As Envoy: the listeners that bound serve, the update is NACKed with the reason.
            self._late_nack = (self._nonces.get(type_url, ""), tuple(bind_errors))
            self._nack(type_url, version, "; ".join(bind_errors))
        else:
            self._count(type_url, "update_success")
            self._send(type_url)  # ACK
            self._nack_late_binds(bind_errors)
        self._follow_up(type_url)
        return True

    def _count(self, type_url: str, outcome: str) -> None:
        """Envoy's ``cluster_manager.cds.*`` and ``listener_manager.lds.*`` update counters."""
        scope = _UPDATE_STATS.get(type_url)
        if scope is not None:
            self.server.stats.counter(f"{scope}.{outcome}").value += 1

    def _nack(self, type_url: str, version: str, message: str) -> None:
        self.rejects += 1
        self._count(type_url, "update_rejected")
        log.warning(
            "xds rejected", type=type_url.rpartition(".")[2], version=version, error=message
        )
        self._send(type_url, error=message)

    def _nack_late_binds(self, errors: list[str]) -> None:
        """A listener binds once it is warm, so one whose routes or secrets came after its
        LDS answer fails to bind only then. Envoy binds at LDS time and NACKs it: NACK the
        latest LDS answer with the reason, once, so proxy-status says why."""
        nonce = self._nonces.get(LISTENER_TYPE)
        if not errors or nonce is None or self._late_nack == (nonce, tuple(errors)):
            return
        self._late_nack = (nonce, tuple(errors))
        self.rejects += 1
        message = "; ".join(errors)
        log.warning(
            "xds rejected", type="Listener", version=self.versions.get(LISTENER_TYPE), error=message
        )
        self._send(LISTENER_TYPE, error=message)

    def _follow_up(self, type_url: str) -> None:
        """After clusters: their endpoints; after listeners: their routes (Envoy's order);
        the first listener request goes out once clusters (and endpoints) are in."""
        self._subscribe_needs(type_url)
        eds = self.names.get(ENDPOINT_TYPE, frozenset())
        clusters_ready = CLUSTER_TYPE not in self.types or (
            CLUSTER_TYPE in self.received and (not eds or ENDPOINT_TYPE in self.received)
        )
        if LISTENER_TYPE in self.types and LISTENER_TYPE not in self.names and clusters_ready:
            self._subscribe(LISTENER_TYPE, frozenset())

    def _subscribe_needs(self, type_url: str | None = None) -> None:
        """Ask for what the running and the warming clusters and listeners need: a version
        replaced by one still warming keeps its own subscriptions, as in Envoy."""
        live = self.server.holder.current
        ads, agent = names_by_source(
            needs_of(
                (*self.accepted[CLUSTER_TYPE].values(), *live.clusters.values()),
                (*self.accepted[LISTENER_TYPE].values(), *live.listeners.values()),
            )
        )
        if type_url in (CLUSTER_TYPE, None):
            self._resubscribe(ENDPOINT_TYPE, ads.get(ENDPOINT_TYPE, frozenset()))
        if type_url in (LISTENER_TYPE, None):
            self._resubscribe(ROUTE_TYPE, ads.get(ROUTE_TYPE, frozenset()))
        if type_url in (CLUSTER_TYPE, LISTENER_TYPE, None):
            self._resubscribe(SECRET_TYPE, ads.get(SECRET_TYPE, frozenset()))
            self.agent.subscribe(agent)

    async def _agent_changed(self) -> None:
        """The agent delivered secrets: live at once (what waited for them warms), or with
        the first complete snapshot."""
        self._nack_late_binds(await self._update())

    async def _warm_timed_out(self) -> None:
        self._nack_late_binds(await self._update())

    async def _update(self) -> list[str]:
        """Apply what is warm, once the initial fetch is complete; returns the listeners that
        could not bind."""
        # One at a time: an agent secret or a warming timeout lands while a response is
        # being applied, and two applies binding one new listener would collide on its port.
        async with self._applying:
            clusters, listeners = self._select()
            if self.applied or self._complete(clusters, listeners):
                return await self._apply(clusters, listeners)
            self._schedule(clusters, listeners)  # the initial fetch's own timeouts run too
            return []

    # -- the snapshot ------------------------------------------------------------------------
    def _has(self, need: Need) -> bool:
        if need.agent is not None:
            return self.agent.has({need.agent: frozenset((need.name,))})
        if need.type_url == ENDPOINT_TYPE:
            return need.name in self.accepted[ENDPOINT_TYPE] or (
                need.name in self.static.load_assignments
            )
        if need.type_url == SECRET_TYPE:
            return need.name in self.accepted[SECRET_TYPE] or need.name in self.static.secrets
        return need.name in self.accepted[need.type_url]

    def _select(self) -> tuple[Selection, Selection]:
        """Which version of each pushed cluster and listener runs (see proxy.xds_warming)."""
        a = self.accepted
        return self._warming.select(
            a[CLUSTER_TYPE], a[LISTENER_TYPE], self.server.holder.current, self.static,
            self._has, self.server.loop.time(),
        )  # fmt: skip

    def _complete(self, clusters: Selection, listeners: Selection) -> bool:
        """The initial fetch: every subscribed type answered, nothing warming, and what the
        static resources need present (the proxy starts with everything at once, as Envoy
        starts its workers once the initial clusters and listeners are warm)."""
        if any(t not in self.received for t in self.types):
            return False
        if clusters.warming or listeners.warming:
            return False
        static = needs_of(self.static.clusters.values(), self.static.listeners.values())
        return all(self._has(need) for need in static)

    def snapshot(self) -> ProxySnapshot:
        """Static resources (which pushed ones cannot replace, as in Envoy) plus the accepted
        dynamic ones, warming clusters and listeners in their previous version (or absent)."""
        return self._snapshot(*self._select())

    def _snapshot(self, clusters: Selection, listeners: Selection) -> ProxySnapshot:
        s, a = self.static, self.accepted

        def merged(dynamic: Mapping[str, Any], static: Mapping[str, Any]) -> Mapping[str, Any]:
            return MappingProxyType({**dynamic, **static})

        return ProxySnapshot(
            versions=MappingProxyType(dict(self.versions)),
            listeners=merged(listeners.use, s.listeners),
            route_configurations=merged(a[ROUTE_TYPE], s.route_configurations),
            clusters=merged(clusters.use, s.clusters),
            load_assignments=merged(a[ENDPOINT_TYPE], s.load_assignments),
            secrets=merged(
                {**self.agent.secrets(), **a[SECRET_TYPE]},
                s.secrets,
            ),
        )

    async def _apply(self, clusters: Selection, listeners: Selection) -> list[str]:
        """Apply the snapshot; returns the listeners that could not bind."""
        errors: list[str] = await self.server.apply(self._snapshot(clusters, listeners))
        self.updates += 1
        report(self.server.stats, clusters, listeners, len(self.server.listener_manager.listeners))
        self._schedule(clusters, listeners)
        self._subscribe_needs()  # what replaced versions needed is asked for no more
        if errors:
            log.error("xds config applied with errors", errors=errors)
        if not self.applied:
            self.applied = True
            self.server.ready = True
            log.info("xds initial config applied", versions=dict(self.versions))
        return errors

    def _schedule(self, clusters: Selection, listeners: Selection) -> None:
        deadlines = [d for d in (clusters.deadline, listeners.deadline) if d is not None]
        if self._warm_timer is not None:
            self._warm_timer.cancel()
            self._warm_timer = None
        if deadlines:
            delay = max(0.0, min(deadlines) - self.server.loop.time())
            self._warm_timer = self.server.loop.call_later(delay, self._warm_timeout)

    def _warm_timeout(self) -> None:
        self._warm_timer = None
        task = self.server.loop.create_task(self._warm_timed_out(), name="xds-warming-timeout")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
