"""The supervisor's control socket: ``<run dir>/control.sock``, JSON over HTTP/1.1.

Only whoever can open the run directory can reach it (a Unix socket, mode 0600), so it needs
no token. ``POST /restart`` (``{"target": POD|"pilot", "what": "all"|"app"|"proxy"}``) and
``POST /stop`` change things; ``GET /state`` is the state file, fresh.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from pymesh.errors import PymeshError

__all__ = ["ControlClient", "ControlError", "ControlServer", "Handler"]

#: ``handler(op, body) -> answer``; raise ControlError for a 4xx answer.
Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(PymeshError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        app = web.Application()
        app.router.add_get("/state", self._op("state"))
        app.router.add_post("/restart", self._op("restart"))
        app.router.add_post("/stop", self._op("stop"))
        self._runner = web.AppRunner(app, access_log=None)

    def _op(self, op: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            body: dict[str, Any] = {}
            if request.can_read_body:
                try:
                    parsed = await request.json()
                except ValueError:
                    return web.json_response({"error": "body is not JSON"}, status=400)
                body = parsed if isinstance(parsed, dict) else {}
            try:
                return web.json_response(await self._handler(op, body))
            except ControlError as exc:
                return web.json_response({"error": str(exc)}, status=exc.status)

        return handle

    async def start(self) -> None:
        if len(str(self.path)) > 100:
            raise ControlError(
                f"{self.path}: path too long for a Unix socket; use a shorter --run-dir"
            )
        self.path.unlink(missing_ok=True)
        await self._runner.setup()
        site = web.UnixSite(self._runner, str(self.path))
        await site.start()
        self.path.chmod(0o600)

    async def stop(self) -> None:
        await self._runner.cleanup()
        self.path.unlink(missing_ok=True)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class ControlClient:
    """Blocking calls to a running supervisor (the CLI has no event loop)."""

    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The answer's JSON; ControlError with the supervisor's message for a 4xx/5xx, or
        when the supervisor cannot be reached."""
        conn = _UnixConnection(str(self.path), self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ControlError(f"cannot reach the demo supervisor at {self.path}: {exc}") from None
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"error": raw.decode("utf-8", "replace")[:200]}
        if resp.status >= 400:
            raise ControlError(str(data.get("error") or f"HTTP {resp.status}"), resp.status)
        return data if isinstance(data, dict) else {}
