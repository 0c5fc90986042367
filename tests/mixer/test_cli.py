"""``pymesh logs`` and ``pymesh dashboard`` as a user runs them, against a running mixer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator

import pytest

from mixer.server import Mixer
from pymesh.cli.dashboard import DASHBOARDS_DIR
from tests.integration.pilot_harness import pymesh_argv
from tests.mixer.als_client import batch, http_entry, identifier, stream
from tests.mixer.harness import running_mixer, url
from tests.support import TELEMETRY_NET, address

HOST = address(TELEMETRY_NET, 113)


@pytest.fixture
async def mixer() -> AsyncIterator[Mixer]:
    async with running_mixer(HOST, peer_wait=0.1) as m:
        await stream(
            HOST,
            m,
            [
                identifier(
                    "productpage-v1-1", "127.0.7.70", "productpage", "v1"
                ).SerializeToString(),
                batch(
                    http_entry("127.0.7.71:9080", 200, "/reviews/0"),
                    http_entry("127.0.7.71:9080", 503, "/reviews/1"),
                ).SerializeToString(),
            ],
        )
        assert m.telemetry is not None
        while len(m.telemetry.recent) < 2:  # the held reports go out after peer_wait
            await asyncio.sleep(0.05)
        yield m


async def pymesh(*args: str, mixer: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISPLAY": ""}
    if mixer is not None:
        env["PYMESH_MIXER"] = mixer
    return await asyncio.to_thread(
        subprocess.run, [*pymesh_argv(), *args], capture_output=True, text=True, env=env, timeout=30
    )


async def test_logs_shows_the_workloads_requests_oldest_first(mixer: Mixer) -> None:
    base = url(mixer, "dashboard", "")
    done = await pymesh("logs", "productpage-v1", mixer=base)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert '"GET /reviews/0 HTTP" 200 -' in lines[0] and "source unknown" in lines[0]
    assert '"GET /reviews/1 HTTP" 503' in lines[1]
    assert "outbound|9080||reviews.default.svc.cluster.local" in lines[1]
    failed = await pymesh("logs", "productpage-v1.default", "--status", "5xx", "-o", "json",
                          "--since", "5m", mixer=base)  # fmt: skip
    assert [e["path"] for e in json.loads(failed.stdout)] == ["/reviews/1"]
    bad = await pymesh("logs", "productpage-v1", "--status", "teapot", mixer=base)
    assert bad.returncode == 1 and "expected a code (503) or a class (5xx)" in bad.stderr


async def test_logs_says_when_mixer_is_not_there() -> None:
    done = await pymesh("logs", "x", mixer=f"http://{HOST}:9")
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: mixer at http://{HOST}:9 is not reachable")


async def test_dashboard_prints_where_to_look(mixer: Mixer) -> None:
    base = url(mixer, "dashboard", "")
    graph = await pymesh("dashboard", "graph", mixer=base)
    assert graph.stdout.strip() == base + "/"
    prom = await pymesh("dashboard", "prometheus", "--prometheus", "http://127.0.0.1:9999")
    assert prom.stdout.strip() == "http://127.0.0.1:9999/graph"
    grafana = await pymesh("dashboard", "grafana")
    for board in ("pymesh-mesh.json", "pymesh-service.json", "pymesh-workload.json"):
        assert str(DASHBOARDS_DIR / board) in grafana.stdout
