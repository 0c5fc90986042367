"""The admin interface on the bootstrap's ``admin.address`` (Envoy's endpoints and formats).

Off the data path, so aiohttp is fine here. Mutating endpoints require POST, as in Envoy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import re
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from proxy.config.model import SocketAddress
from proxy.config.snapshot import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from proxy.stats import render_prometheus, render_text

__all__ = ["AdminServer", "to_jsonable"]

log = structlog.get_logger(__name__)


def to_jsonable(value: Any) -> Any:
    """The model (frozen dataclasses, enums, bytes, regexes) as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) not in (None, (), {}, "")
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, re.Pattern):
        return (
            value.pattern.decode("latin-1") if isinstance(value.pattern, bytes) else value.pattern
        )
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


class AdminServer:
    def __init__(self, proxy: Any, address: SocketAddress, *, on_quit: Callable[[], None]) -> None:
        self._proxy = proxy
        self._address = address
        self._on_quit = on_quit
        self._runner: web.AppRunner | None = None
        app = web.Application()
        r = app.router
        r.add_get("/", self._index)
        r.add_get("/ready", self._ready)
        r.add_get("/stats", self._stats)
        r.add_get("/stats/prometheus", self._prometheus)
        r.add_get("/clusters", self._clusters)
        r.add_get("/config_dump", self._config_dump)
        r.add_get("/listeners", self._listeners)
        r.add_get("/server_info", self._server_info)
        r.add_post("/healthcheck/fail", self._hc_fail)
        r.add_post("/healthcheck/ok", self._hc_ok)
        r.add_post("/drain_listeners", self._drain_listeners)
        r.add_post("/quitquitquit", self._quit)
        self._app = app

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._address.host, self._address.port, reuse_address=True)
        await site.start()
        log.info("admin listening", address=f"{self._address.host}:{self._address.port}")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- handlers ----------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.Response:
        paths = sorted(str(r.resource.canonical) for r in self._app.router.routes() if r.resource)
        return web.Response(text="\n".join(paths) + "\n")

    def _state(self) -> str:
        p = self._proxy
        if p.draining:
            return "DRAINING"
        return "LIVE" if p.ready else "PRE_INITIALIZING"

    async def _ready(self, request: web.Request) -> web.Response:
        state = self._state()
        ok = state == "LIVE" and not self._proxy.health_check_failed
        return web.Response(text=state + "\n", status=200 if ok else 503)

    async def _stats(self, request: web.Request) -> web.Response:
        store = self._proxy.stats
        fmt = request.query.get("format")
        flt = request.query.get("filter")
        pattern = re.compile(flt) if flt else None
        if fmt == "prometheus":
            return await self._prometheus(request)
        if fmt == "json":
            stats = [
                {"name": s.name, "value": s.value}
                for s in (*store.counters(), *store.gauges())
                if pattern is None or pattern.search(s.name)
            ]
            return web.json_response({"stats": stats})
        text = render_text(store)
        if pattern is not None:
            text = "".join(line + "\n" for line in text.splitlines() if pattern.search(line))
        return web.Response(text=text)

    async def _prometheus(self, request: web.Request) -> web.Response:
        return web.Response(
            text=render_prometheus(self._proxy.stats), content_type="text/plain", charset="utf-8"
        )

    async def _clusters(self, request: web.Request) -> web.Response:
        lines: list[str] = []
        data: list[dict[str, Any]] = []
        for cluster in self._proxy.cluster_manager:
            limits = cluster.limits
            name = cluster.name
            for key, value in (
                ("max_connections", limits.max_connections),
                ("max_pending_requests", limits.max_pending_requests),
                ("max_requests", limits.max_requests),
                ("max_retries", limits.max_retries),
            ):
                lines.append(f"{name}::default_priority::{key}::{value}")
            hosts = []
            for host in cluster.hosts:
                prefix = f"{name}::{host.address_str}"
                health = (
                    "healthy"
                    if host.healthy
                    else ("/failed_outlier_check" if host.ejected else "/failed_eds_health")
                )
                lines.append(f"{prefix}::cx_active::{_active(host)}")
                lines.append(f"{prefix}::rq_active::{host.active_requests}")
                lines.append(f"{prefix}::weight::{host.weight}")
                lines.append(f"{prefix}::health_flags::{health}")
                hosts.append(
                    {
                        "address": {
                            "socket_address": {"address": host.address, "port_value": host.port}
                        },
                        "weight": host.weight,
                        "health_status": {
                            "eds_health_status": "HEALTHY" if host.eds_healthy else "UNHEALTHY",
                            "failed_outlier_check": host.ejected,
                        },
                        "stats": [{"name": "rq_active", "value": host.active_requests}],
                    }
                )
            data.append({"name": name, "host_statuses": hosts})
        if request.query.get("format") == "json":
            return web.json_response({"cluster_statuses": data})
        return web.Response(text="\n".join(lines) + "\n")

    async def _config_dump(self, request: web.Request) -> web.Response:
        snap = self._proxy.holder.current
        p = self._proxy
        dump = {
            "configs": [
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
                    "bootstrap": to_jsonable(p.bootstrap),
                },
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                    "version_info": snap.versions.get(CLUSTER_TYPE, ""),
                    "clusters": to_jsonable(list(snap.clusters.values())),
                },
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                    "version_info": snap.versions.get(LISTENER_TYPE, ""),
                    "listeners": to_jsonable(list(snap.listeners.values())),
                },
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                    "version_info": snap.versions.get(ROUTE_TYPE, ""),
                    "route_configs": to_jsonable(list(snap.route_configurations.values())),
                },
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
                    "version_info": snap.versions.get(ENDPOINT_TYPE, ""),
                    "endpoint_configs": to_jsonable(list(snap.load_assignments.values())),
                },
            ]
        }
        return web.Response(text=json.dumps(dump, indent=2), content_type="application/json")

    async def _listeners(self, request: web.Request) -> web.Response:
        lines = []
        for name, runtime in self._proxy.listener_manager.listeners.items():
            a = runtime.model.address
            where = f"{a.host}:{a.port}" if isinstance(a, SocketAddress) else str(a)
            lines.append(f"{name}::{where}")
        return web.Response(text="\n".join(lines) + "\n")

    async def _server_info(self, request: web.Request) -> web.Response:
        p = self._proxy
        return web.json_response(
            {
                "version": "pymesh",
                "state": self._state(),
                "uptime_current_epoch": f"{int(p.uptime)}s",
                "node": to_jsonable(p.bootstrap.node),
            }
        )

    async def _hc_fail(self, request: web.Request) -> web.Response:
        self._proxy.health_check_failed = True
        return web.Response(text="OK\n")

    async def _hc_ok(self, request: web.Request) -> web.Response:
        self._proxy.health_check_failed = False
        return web.Response(text="OK\n")

    async def _drain_listeners(self, request: web.Request) -> web.Response:
        p = self._proxy
        graceful = "graceful" in request.query
        if graceful:
            asyncio.get_running_loop().create_task(p.drain(p.drain_timeout))
        else:
            p.listener_manager.stop_accepting()
            p.listener_manager.drain_connections()
        return web.Response(text="OK\n")

    async def _quit(self, request: web.Request) -> web.Response:
        asyncio.get_running_loop().call_soon(self._on_quit)
        return web.Response(text="OK\n")


def _active(host: Any) -> int:
    pool = host.pool
    return len(pool.active) if pool is not None else 0
