"""Pilot's admin API (aiohttp): what ``pymesh apply|delete|get|proxy-status|proxy-config|
analyze|explain`` talk to.

Every path but ``/metrics`` and ``/ready`` needs ``Authorization: Bearer <token>``; the token
is ``PYMESH_TOKEN`` or generated at first start into ``<config-dir>/.pymesh-token`` (0600), so
that anyone who can read the config directory can change it, and nobody else. ``/metrics``
stays open the way Istio's monitoring port is: Prometheus scrapes without credentials and the
numbers reveal no configuration.

Errors are ``{"error": "<one line>"}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from pilot.api_views import kind_alias, proxy_config, resource_json, to_jsonable
from pilot.generate import explain
from pilot.sources import Action
from pilot.xds.status import proxy_status
from pymesh import __version__
from pymesh.config.analyze import analyze
from pymesh.config.kinds import KINDS
from pymesh.errors import ConfigError, ValidationError

__all__ = ["TOKEN_FILE", "AdminApi", "ensure_token"]

log = structlog.get_logger(__name__)

TOKEN_FILE = ".pymesh-token"
_OPEN_PATHS = frozenset({"/metrics", "/ready", "/version"})
_MAX_BODY = 16 << 20


def ensure_token(config_dir: Path) -> str:
    """The token in ``<config_dir>/.pymesh-token``, created (0600) on first use."""
    path = config_dir / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise ConfigError(f"{path}: token file is empty") from None
        return token
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot create the admin token ({exc.strerror}); set PYMESH_TOKEN"
        ) from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    log.info("admin token created", path=str(path))
    return token


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class AdminApi:
    def __init__(self, pilot: Any, token: str) -> None:
        self.pilot = pilot
        self._token = token.encode()
        app = web.Application(middlewares=[self._auth], client_max_size=_MAX_BODY)
        r = app.router
        r.add_get("/ready", self._ready)
        r.add_get("/metrics", self._metrics)
        r.add_get("/version", self._version)
        r.add_post("/apply", self._apply)
        r.add_delete("/resources", self._delete_body)
        r.add_delete("/resources/{kind}/{namespace}/{name}", self._delete_one)
        r.add_get("/resources", self._resources)
        r.add_get("/proxies", self._proxies)
        r.add_get("/proxies/{id}/config/{type}", self._proxy_config)
        r.add_get("/explain", self._explain)
        r.add_get("/analyze", self._analyze)
        self._app = app
        self._runner: web.AppRunner | None = None

    async def start(self, address: str) -> int:
        host, _, port = address.rpartition(":")
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]") or "127.0.0.1", int(port))
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(f"admin API: cannot listen on {address}: {exc.strerror}") from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = int(sockets[0].getsockname()[1]) if sockets else int(port)
        log.info("admin api listening", address=address, port=bound)
        return bound

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path not in _OPEN_PATHS:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self._token
            ):
                return _error(401, "missing or wrong bearer token")
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            return _error(exc.status, exc.reason or "error")
        except ValidationError as exc:
            return _error(400, str(exc))
        except ConfigError as exc:
            return _error(500, str(exc))
        return response

    # -- open --------------------------------------------------------------------------------
    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": __version__})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            text=self.pilot.discovery.metrics.render(),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Format": "text/plain; version=0.0.4"},
        )

    # -- config ------------------------------------------------------------------------------
    async def _body(self, request: web.Request) -> str:
        raw = await request.read()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("request body is not UTF-8 text") from None

    async def _apply(self, request: web.Request) -> web.Response:
        source = request.query.get("source", "<apply>")
        namespace = request.query.get("namespace") or None
        dry_run = request.query.get("dryRun", "") == "All"  # kubectl's ?dryRun=All
        changes = await self.pilot.apply(
            await self._body(request), source, namespace, dry_run=dry_run
        )
        return web.json_response(
            {"changes": [c.to_json() for c in changes], "version": self.pilot.ctx.version}
        )

    async def _delete_body(self, request: web.Request) -> web.Response:
        source = request.query.get("source", "<delete>")
        namespace = request.query.get("namespace") or None
        changes = await self.pilot.delete(
            body=await self._body(request), source=source, namespace=namespace
        )
        return self._delete_result(changes)

    async def _delete_one(self, request: web.Request) -> web.Response:
        kind = kind_alias(request.match_info["kind"])
        if kind is None:
            return _error(400, f"unknown kind {request.match_info['kind']!r}")
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if not any(i.kind == kind and i.namespaced for i in KINDS.values()) or namespace == "-":
            namespace = ""  # cluster-scoped kinds have no namespace
        changes = await self.pilot.delete(keys=[(kind, namespace, name)])
        return self._delete_result(changes)

    def _delete_result(self, changes: list[Any]) -> web.Response:
        refused = [c for c in changes if c.action is Action.REFUSED]
        missing = [c for c in changes if c.action is Action.NOT_FOUND]
        status = 409 if refused else 404 if missing and len(missing) == len(changes) else 200
        body: dict[str, Any] = {"changes": [c.to_json() for c in changes]}
        if refused:
            c = refused[0]
            body["error"] = f"{c.kind} {c.namespace}/{c.name}: {c.message}"
        elif status == 404:
            c = missing[0]
            body["error"] = f'{c.kind} "{c.name}" not found in namespace {c.namespace or "-"}'
        return web.json_response(body, status=status)

    async def _resources(self, request: web.Request) -> web.Response:
        query = request.query
        kind = None
        if query.get("kind"):
            kind = kind_alias(query["kind"])
            if kind is None:
                return _error(400, f'the server doesn\'t have a resource type "{query["kind"]}"')
        name, namespace = query.get("name"), query.get("namespace")
        found = [
            r
            for r in self.pilot.snapshot
            if (kind is None or r.kind == kind)
            and (not name or r.name == name)
            and (not namespace or r.namespace == namespace)
        ]
        if name and not found:
            where = f" in namespace {namespace}" if namespace else ""
            return _error(404, f'{kind or "resource"} "{name}" not found{where}')
        return web.json_response(
            {"items": [resource_json(r) for r in found], "version": self.pilot.snapshot.version}
        )

    # -- proxies -----------------------------------------------------------------------------
    async def _proxies(self, request: web.Request) -> web.Response:
        discovery = self.pilot.discovery
        items = proxy_status(list(discovery.connections.values()), discovery.clock())
        return web.json_response({"pilot": {"version": self.pilot.ctx.version}, "proxies": items})

    def _find_proxy(self, wanted: str) -> Any:
        """A connection by proxy id, or by ``pod.namespace``, pod name or IP when unambiguous."""
        discovery = self.pilot.discovery
        exact = discovery.connection_for(wanted)
        if exact is not None:
            return exact
        matches = {
            c.proxy_id: c
            for c in discovery.connections.values()
            if c.proxy is not None
            and wanted
            in (
                f"{c.proxy.pod_name}.{c.proxy.namespace}",
                c.proxy.pod_name,
                c.proxy.ip,
            )
        }
        if len(matches) == 1:
            return next(iter(matches.values()))
        if matches:
            raise ValidationError(
                f"{wanted!r} matches several proxies: {', '.join(sorted(matches))}"
            )
        raise web.HTTPNotFound(reason=f"proxy {wanted!r} is not connected")

    async def _proxy_config(self, request: web.Request) -> web.Response:
        conn = self._find_proxy(request.match_info["id"])
        body = proxy_config(conn, request.match_info["type"])
        return web.json_response(body)

    # -- analysis ----------------------------------------------------------------------------
    async def _analyze(self, request: web.Request) -> web.Response:
        findings = analyze(self.pilot.snapshot.resources)
        return web.json_response(
            {
                "findings": [
                    {
                        "level": f.level.value,
                        "code": f.code,
                        "name": f.type.name,
                        "resource": f.resource.ref,
                        "source": f.resource.source,
                        "path": f.path,
                        "message": f.message,
                        "text": str(f),
                    }
                    for f in findings
                ]
            }
        )

    async def _explain(self, request: web.Request) -> web.Response:
        source = request.query.get("source", "")
        url = request.query.get("url", "")
        if not source or not url:
            return _error(400, "explain needs source and url")
        headers: dict[str, str] = {}
        for item in request.query.getall("header", []):
            key, sep, value = item.partition(":")
            if not sep or not key.strip():
                return _error(400, f"header {item!r} is not 'name: value'")
            headers[key.strip().lower()] = value.strip()
        conn = self._find_proxy(source)
        result = explain(self.pilot.ctx, conn.proxy, url, headers)
        return web.json_response(
            {"proxy": conn.proxy_id, "explanation": to_jsonable(result), "text": result.render()}
        )
