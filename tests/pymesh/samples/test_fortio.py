"""The fortio stand-in: fortio's flags and the lines Istio's circuit-breaking task shows,
against a real server on 127.0.12.121 (through a proxy when ``HTTP_PROXY`` says so)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from pymesh.samples import fortio
from tests.support.procs import free_port

HOST = "127.0.12.121"


@pytest.fixture
async def url() -> AsyncIterator[str]:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=503 if calls % 3 == 0 else 200, text='{"ok": true}')

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port(HOST)
    await web.TCPSite(runner, HOST, port).start()
    yield f"http://{HOST}:{port}/get"
    await runner.cleanup()


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = fortio.main(argv, env={}, out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def test_durations() -> None:
    assert fortio.parse_duration("30s") == 30
    assert fortio.parse_duration("1m30s") == 90
    assert fortio.parse_duration("500ms") == 0.5
    assert fortio.parse_duration("2") == 2
    for bad in ("", "5x", "s", "1s2"):
        with pytest.raises(argparse.ArgumentTypeError):
            fortio.parse_duration(bad)


async def test_load_prints_fortio_lines(url: str) -> None:
    argv = ["load", "-c", "3", "-qps", "0", "-n", "30", "-loglevel", "Warning", url]
    rc, out, err = await asyncio.to_thread(_run, argv)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Fortio pymesh-") and lines[0].endswith(f"for 30 calls: {url}")
    assert lines[1].startswith("Starting at max qps with 3 thread(s)")
    assert lines[1].endswith("for exactly 30 calls (10 per thread + 0)")
    assert "Code 200 : 20 (66.7 %)" in lines and "Code 503 : 10 (33.3 %)" in lines
    for p in ("50", "75", "90", "99", "99.9"):
        assert any(re.fullmatch(rf"# target {re.escape(p)}% [\d.e-]+", line) for line in lines)
    assert re.search(r"^Aggregated Function Time : count 30 avg [\d.e-]+ \+/- ", out, re.M)
    assert re.search(r"^>= [\d.e-]+ <= [\d.e-]+ , [\d.e-]+ , [\d.]+, \d+$", out, re.M)
    assert "Sockets used: 3 (for perfect keepalive, would be 3)" in lines
    assert lines[-1].startswith("All done 30 calls (plus 0 warmup)")
    assert "Log level is now 3 Warning (was 2 Info)" in err
    assert err.count("Parsed non ok code 503 (HTTP/1.1 503)") == 10
    # -loglevel Error: no per-request warnings.
    rc, _, err = await asyncio.to_thread(
        _run, ["load", "-c", "1", "-qps", "0", "-n", "3", "-loglevel", "Error", url]
    )
    assert "Parsed non ok" not in err


async def test_json_for_scripts(url: str) -> None:
    argv = ["load", "-c", "2", "-qps", "100", "-t", "0.3s", "-json", "-", url]
    rc, out, err = await asyncio.to_thread(_run, argv)
    assert rc == 0
    doc = json.loads(out)
    assert doc["RequestedQPS"] == "100" and doc["NumThreads"] == 2
    total = doc["DurationHistogram"]["Count"]
    assert 20 <= total <= 31 and sum(doc["RetCodes"].values()) == total
    assert [p["Percentile"] for p in doc["DurationHistogram"]["Percentiles"]] == [
        50, 75, 90, 99, 99.9,
    ]  # fmt: skip
    assert "Code 200 :" in err  # the text goes to stderr when the JSON has stdout


def test_usage_errors() -> None:
    with pytest.raises(SystemExit) as exc:
        _run(["load", "-c", "x", "http://h/"])
    assert exc.value.code == 2
    rc, _, err = _run(["load", "-n", "1", "https://h/"])
    assert rc == 1 and "only http://" in err
