"""What the mixer tests share: an in-process mixer on free ports, its metrics parsed back with
prometheus-client's own parser, and waits on what mixer has seen."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mixer.server import Mixer, MixerSettings, build_mixer
from tests.support.procs import free_port

__all__ = ["get_json", "get_text", "running_mixer", "sample_value", "samples", "wait_until"]


@asynccontextmanager
async def running_mixer(host: str, **overrides: Any) -> AsyncIterator[Mixer]:
    settings = MixerSettings(
        grpc_address=f"{host}:{free_port(host)}",
        metrics_address=f"{host}:{free_port(host)}",
        zipkin_address=f"{host}:{free_port(host)}",
        dashboard_address=f"{host}:{free_port(host)}",
    )
    mixer = build_mixer(replace(settings, **overrides))
    await mixer.start()
    try:
        yield mixer
    finally:
        await mixer.stop()


def url(mixer: Mixer, site: str, path: str) -> str:
    s = mixer.site(site)
    host = s.address.rpartition(":")[0]
    return f"http://{host}:{s.port}{path}"


def _open(target: str, timeout: float = 5.0) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(target, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def get_text(target: str) -> tuple[int, str]:
    status, body = await asyncio.to_thread(_open, target)
    return status, body.decode()


async def get_json(target: str) -> Any:
    status, body = await asyncio.to_thread(_open, target)
    assert status == 200, f"{target}: HTTP {status}: {body[:500]!r}"
    return json.loads(body)


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called ``name`` in an exposition."""
    found = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                found.append((dict(s.labels), s.value))
    return found


def sample_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        v for lab, v in samples(text, name) if all(lab.get(k) == w for k, w in labels.items())
    )


async def wait_until(
    check: Callable[[], Any], what: str, timeout: float = 15.0, interval: float = 0.1
) -> Any:
    """Until ``await check()`` (or ``check()``) is truthy; its value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


def labels_subset(labels: Mapping[str, str], want: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in want.items())
