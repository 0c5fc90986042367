"""The admin interface on the bootstrap's ``admin.address`` (Envoy's endpoints and formats).

Mutating endpoints require POST, as in Envoy.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import enum
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from proxy.config.model import Secret, SocketAddress
from proxy.config.snapshot import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
)
from proxy.stats import render_prometheus, render_text
from proxy.transport.mini_http import MiniHttpServer, MiniRequest, MiniResponse

Handler = Callable[[MiniRequest], Awaitable[MiniResponse]]

__all__ = ["AdminServer", "to_jsonable"]

log = structlog.get_logger(__name__)


REDACTED = "[redacted]"


def _secret_dump(secret: Secret, version: str) -> dict[str, Any]:
    """A secret as Envoy's ``SecretsConfigDump`` shows it: PEM as base64 ``inline_bytes``,
    the private key redacted."""

    def inline(data: bytes) -> dict[str, str]:
        return {"inline_bytes": base64.b64encode(data).decode("ascii")}

    body: dict[str, Any] = {"@type": SECRET_TYPE, "name": secret.name}
    if secret.tls_certificate is not None:
        body["tls_certificate"] = {
            "certificate_chain": inline(secret.tls_certificate.certificate_chain),
            "private_key": inline(REDACTED.encode()),
        }
    if secret.validation_context is not None and secret.validation_context.trusted_ca:
        body["validation_context"] = {"trusted_ca": inline(secret.validation_context.trusted_ca)}
    return {"name": secret.name, "version_info": version, "secret": body}


def to_jsonable(value: Any) -> Any:
    """The model (frozen dataclasses, enums, bytes, regexes) as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            # Private keys never leave the proxy (Envoy writes "[redacted]" too).
            f.name: REDACTED if f.name == "private_key" else to_jsonable(getattr(value, f.name))
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
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", "/"): self._index,
            ("GET", "/ready"): self._ready,
            ("GET", "/stats"): self._stats,
            ("GET", "/stats/prometheus"): self._prometheus,
            ("GET", "/clusters"): self._clusters,
            ("GET", "/config_dump"): self._config_dump,
            ("GET", "/listeners"): self._listeners,
            ("GET", "/server_info"): self._server_info,
            ("GET", "/logging"): self._logging,
            ("POST", "/logging"): self._logging,
            ("POST", "/healthcheck/fail"): self._hc_fail,
            ("POST", "/healthcheck/ok"): self._hc_ok,
            ("POST", "/drain_listeners"): self._drain_listeners,
            ("POST", "/quitquitquit"): self._quit,
        }
        self._server = MiniHttpServer(self._routes)

    async def start(self) -> None:
        await self._server.start(self._address.host, self._address.port)
        log.info("admin listening", address=f"{self._address.host}:{self._address.port}")

    async def stop(self) -> None:
        await self._server.stop()

    @property
    def port(self) -> int:
        return self._server.port

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """An endpoint beyond Envoy's (a worker's stats dump for its main process)."""
        self._routes[(method, path)] = handler

    # -- handlers ----------------------------------------------------------------------------
    async def _index(self, request: MiniRequest) -> MiniResponse:
        paths = sorted({path for _, path in self._routes})
        return MiniResponse(body="\n".join(paths) + "\n")

    def _state(self) -> str:
        p = self._proxy
        # Envoy reports a failed health check (/healthcheck/fail) as DRAINING too.
        if p.draining or p.health_check_failed:
            return "DRAINING"
        return "LIVE" if p.ready else "PRE_INITIALIZING"

    async def _ready(self, request: MiniRequest) -> MiniResponse:
        state = self._state()
        errors = self._proxy.bind_errors
        ok = state == "LIVE" and not self._proxy.health_check_failed and not errors
        detail = "".join(f"{e}\n" for e in errors)
        return MiniResponse(200 if ok else 503, state + "\n" + detail)

    async def _stats(self, request: MiniRequest) -> MiniResponse:
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
            return _json({"stats": stats})
        text = render_text(store)
        if pattern is not None:
            # Envoy matches the filter against the stat's name, not the whole line.
            text = "".join(
                line + "\n" for line in text.splitlines() if pattern.search(line.partition(": ")[0])
            )
        return MiniResponse(body=text)

    async def _prometheus(self, request: MiniRequest) -> MiniResponse:
        return MiniResponse(
            body=render_prometheus(self._proxy.stats) + self._proxy.istio_exposition(),
            content_type="text/plain; version=0.0.4; charset=utf-8",
        )

    async def _clusters(self, request: MiniRequest) -> MiniResponse:
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
            return _json({"cluster_statuses": data})
        return MiniResponse(body="\n".join(lines) + "\n")

    async def _config_dump(self, request: MiniRequest) -> MiniResponse:
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
                self._secrets_dump(snap),
            ]
        }
        return _json(dump)

    def _secrets_dump(self, snap: Any) -> dict[str, Any]:
        static_names = {s.name for s in self._proxy.bootstrap.static_resources.secrets}
        version = snap.versions.get(SECRET_TYPE, "")
        secrets = sorted(snap.secrets.values(), key=lambda s: s.name)
        return {
            "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
            "static_secrets": [_secret_dump(s, "") for s in secrets if s.name in static_names],
            "dynamic_active_secrets": [
                _secret_dump(s, version) for s in secrets if s.name not in static_names
            ],
        }

    async def _listeners(self, request: MiniRequest) -> MiniResponse:
        lines = []
        for name, runtime in self._proxy.listener_manager.listeners.items():
            a = runtime.model.address
            where = f"{a.host}:{a.port}" if isinstance(a, SocketAddress) else str(a)
            lines.append(f"{name}::{where}")
        return MiniResponse(body="\n".join(lines) + "\n")

    async def _server_info(self, request: MiniRequest) -> MiniResponse:
        p = self._proxy
        return _json(
            {
                "version": "pymesh",
                "state": self._state(),
                "uptime_current_epoch": f"{int(p.uptime)}s",
                "node": to_jsonable(p.bootstrap.node),
            }
        )

    async def _logging(self, request: MiniRequest) -> MiniResponse:
        # One level for the whole process, set at start (--log-level); Envoy lists a level
        # per logger and can change them here, which pymesh cannot do at run time yet.
        if request.query:
            return MiniResponse(
                501,
                "changing log levels at run time is not supported: restart the proxy "
                "with --log-level LEVEL\n",
            )
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        return MiniResponse(body=f"active loggers:\n  pymesh: {level}\n")

    async def _hc_fail(self, request: MiniRequest) -> MiniResponse:
        self._proxy.health_check_failed = True
        return MiniResponse(body="OK\n")

    async def _hc_ok(self, request: MiniRequest) -> MiniResponse:
        self._proxy.health_check_failed = False
        return MiniResponse(body="OK\n")

    async def _drain_listeners(self, request: MiniRequest) -> MiniResponse:
        p = self._proxy
        graceful = "graceful" in request.query
        if graceful:
            asyncio.get_running_loop().create_task(p.drain(p.drain_timeout))
        else:
            p.listener_manager.stop_accepting()
            p.listener_manager.drain_connections()
        return MiniResponse(body="OK\n")

    async def _quit(self, request: MiniRequest) -> MiniResponse:
        asyncio.get_running_loop().call_soon(self._on_quit)
        return MiniResponse(body="OK\n")


def _active(host: Any) -> int:
    return sum(len(pool.active) for pool in (host.pool, host.h2_pool) if pool is not None)


def _json(data: Any) -> MiniResponse:
    return MiniResponse(body=json.dumps(data, indent=2), content_type="application/json")
