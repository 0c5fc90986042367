"""Istio's metrics merging, as pilot-agent serves it on ``:15020/stats/prometheus``: the
proxy's exposition (Envoy's statistics and Istio's standard metrics, from the proxy's admin
``/stats/prometheus``), then the application's own metrics when the pod asked for them to be
scraped, then the agent's own counters, in one response. A standard ``kubernetes-pods``
scrape job then reaches all three through the one port the injector's annotations name.

Where the application's metrics are comes from ``ISTIO_PROMETHEUS_ANNOTATIONS``, the pod's
original ``prometheus.io/*`` annotations as Istio's injector saves them (JSON: ``scrape``,
``port``, ``path``, ``scheme``) before pointing the annotations at 15020. A source that
cannot be read is left out and counted in ``istio_agent_scrape_failures_total``; the rest is
still served, as pilot-agent does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from pymesh.errors import ConfigError

__all__ = ["MetricsMerger", "app_metrics_url"]

Fetch = Callable[[str], Awaitable[str]]
"""``fetch(url) -> text``; raises OSError, TimeoutError or ValueError when it cannot."""


def app_metrics_url(annotations: str | None, host: str) -> str | None:
    """The application's metrics URL from ``ISTIO_PROMETHEUS_ANNOTATIONS`` (None when the
    pod does not ask to be scraped). ConfigError for JSON that is not such an object."""
    if not annotations:
        return None
    try:
        found = json.loads(annotations)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"ISTIO_PROMETHEUS_ANNOTATIONS: {exc}") from None
    if not isinstance(found, Mapping):
        raise ConfigError("ISTIO_PROMETHEUS_ANNOTATIONS: expected a JSON object")
    if str(found.get("scrape", "")).lower() != "true":
        return None
    port = str(found.get("port") or "80")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"ISTIO_PROMETHEUS_ANNOTATIONS: bad port {port!r}")
    path = str(found.get("path") or "/metrics")
    if not path.startswith("/"):
        path = "/" + path
    scheme = str(found.get("scheme") or "http")
    if scheme not in ("http", "https"):
        raise ConfigError(f"ISTIO_PROMETHEUS_ANNOTATIONS: bad scheme {scheme!r}")
    return f"{scheme}://{host}:{port}{path}"


@dataclass(slots=True)
class MetricsMerger:
    """The merged exposition of one pod; ``fetch`` is the HTTP client (a seam for tests)."""

    proxy_url: str
    app_url: str | None
    fetch: Fetch
    failures: dict[str, int] = field(default_factory=lambda: {"envoy": 0, "application": 0})

    async def exposition(self) -> str:
        sources = [("envoy", self.proxy_url)]
        if self.app_url is not None:
            sources.append(("application", self.app_url))
        texts = await asyncio.gather(*(self._one(kind, url) for kind, url in sources))
        return "".join(texts) + self._own()

    async def _one(self, kind: str, url: str) -> str:
        try:
            text = await self.fetch(url)
        except (TimeoutError, OSError, ValueError):
            self.failures[kind] += 1
            return ""
        return text if not text or text.endswith("\n") else text + "\n"

    def _own(self) -> str:
        name = "istio_agent_scrape_failures_total"
        lines = [
            f"# HELP {name} Scrapes of a merged source that failed.",
            f"# TYPE {name} counter",
            *(f'{name}{{type="{kind}"}} {n}' for kind, n in sorted(self.failures.items())),
        ]
        return "\n".join(lines) + "\n"
