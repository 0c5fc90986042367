"""The supervisor's side of pilot's admin API: readiness, apply, the workloads it should run,
and the sync state of every proxy (what ``pymesh proxy-status`` shows)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from pymesh.errors import ControlPlaneError

__all__ = ["PilotApi", "SyncState", "sync_states"]

_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
# The columns of proxy-status that every proxy subscribes to: a proxy is in sync when both
# are SYNCED and nothing is STALE or NACKed.
_REQUIRED = ("CDS", "LDS")


@dataclass(frozen=True, slots=True)
class SyncState:
    status: str  # SYNCED, STALE, NACK, NOT CONNECTED
    detail: str = ""
    #: how long the proxy's current ADS stream has been open, as pilot says
    connected_seconds: float | None = None


def sync_states(body: Mapping[str, Any]) -> dict[str, SyncState]:
    """Node id → sync state, from the ``/proxies`` answer."""
    out: dict[str, SyncState] = {}
    for proxy in body.get("proxies") or ():
        types: Mapping[str, Any] = proxy.get("types") or {}
        errors: Mapping[str, Any] = proxy.get("errors") or {}
        statuses = {name: str((t or {}).get("status", "")) for name, t in types.items()}
        if errors:
            name, error = next(iter(sorted(errors.items())))
            state = SyncState("NACK", f"{name}: {error}")
        elif any(s == "STALE" for s in statuses.values()):
            stale = ", ".join(sorted(n for n, s in statuses.items() if s == "STALE"))
            state = SyncState("STALE", f"{stale} not acknowledged")
        elif all(statuses.get(n) == "SYNCED" for n in _REQUIRED):
            state = SyncState("SYNCED")
        else:
            waiting = ", ".join(n for n in _REQUIRED if statuses.get(n) != "SYNCED")
            state = SyncState("STALE", f"{waiting} not sent yet")
        age = proxy.get("connected_seconds")
        if isinstance(age, int | float):
            state = SyncState(state.status, state.detail, float(age))
        out[str(proxy.get("id", ""))] = state
    return out


class PilotApi:
    """A session on pilot's admin API; the token is read from the config directory on first
    use (pilot writes it there when it starts)."""

    def __init__(self, base_url: str, token_file: Path) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_file = token_file
        self._token: str | None = None
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # trust_env=False: an HTTP_PROXY in the caller's environment is not for pilot.
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT, trust_env=False)
        return self._session

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            try:
                self._token = self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ControlPlaneError(f"pilot token {self.token_file}: {exc.strerror}") from None
        return {"Authorization": f"Bearer {self._token}"}

    async def ready(self) -> bool:
        try:
            async with self._client().get(f"{self.base_url}/ready") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def _call(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, body: str = ""
    ) -> Any:
        url = f"{self.base_url}{path}"
        try:
            async with self._client().request(
                method,
                url,
                params=params,
                data=body.encode() if body else None,
                headers=self._headers(),
            ) as resp:
                data = await resp.json(content_type=None)
                if resp.status != 200:
                    message = data.get("error") if isinstance(data, dict) else None
                    raise ControlPlaneError(f"pilot {path}: {message or f'HTTP {resp.status}'}")
                return data
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise ControlPlaneError(f"pilot {path}: {type(exc).__name__}: {exc}") from None

    async def apply(self, body: str, source: str) -> list[dict[str, Any]]:
        data = await self._call("POST", "/apply", params={"source": source}, body=body)
        return list(data.get("changes") or ())

    async def workloads(self) -> list[dict[str, Any]]:
        """Every Deployment, Pod, Service and Namespace in pilot's configuration."""
        items: list[dict[str, Any]] = []
        for kind in ("Deployment", "Pod", "Service", "Namespace"):
            data = await self._call("GET", "/resources", params={"kind": kind})
            items.extend(data.get("items") or ())
        return items

    async def sync(self) -> dict[str, SyncState]:
        return sync_states(await self._call("GET", "/proxies"))
