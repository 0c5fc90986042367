"""The apps as real processes: flags, HTTP_PROXY from the environment, clean signal exits."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time

import aiohttp
import pytest

from pymesh.samples.runtime import proxy_for
from tests.support.procs import free_port


def test_proxy_for():
    env = {"HTTP_PROXY": "127.0.0.100:15001", "NO_PROXY": "localhost,.svc.local,10.0.0.1:80"}
    assert proxy_for("http://details:9080/x", env) == "http://127.0.0.100:15001"
    assert proxy_for("https://details:9080/x", env) is None
    assert proxy_for("http://localhost:1/", env) is None
    assert proxy_for("http://a.svc.local/", env) is None
    assert proxy_for("http://10.0.0.1/", env) is None
    assert proxy_for("http://10.0.0.1:81/", env) == "http://127.0.0.100:15001"
    assert proxy_for("http://details/", {"http_proxy": "http://p:1"}) == "http://p:1"
    assert proxy_for("http://details/", {"HTTP_PROXY": "http://p:1", "no_proxy": "*"}) is None
    assert proxy_for("http://details/", {}) is None
    cidr = {"HTTP_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}
    assert proxy_for("http://10.2.3.4/", cidr) is None
    assert proxy_for("http://11.2.3.4/", cidr) == "http://p:1"
    assert proxy_for("http://details/", cidr) == "http://p:1"


async def _start(module: str, host: str, *args: str, env: dict[str, str] | None = None):
    port = free_port(host)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "--host",
        host,
        "--port",
        str(port),
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://{host}:{port}"
    # A cold interpreter importing aiohttp takes seconds on a busy 2-core machine: wait on the
    # process (its exit ends the wait), with a deadline that only a hung start reaches.
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline and proc.returncode is None:
            try:
                async with session.get(url + "/health") as resp:
                    if resp.status == 200:
                        return proc, url
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    _, err = await proc.communicate()
    raise AssertionError(f"{module} did not come up: {err.decode()}")


async def _stop(proc, sig=signal.SIGTERM) -> int:
    proc.send_signal(sig)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert b"Traceback" not in err, err.decode()
    code: int = proc.returncode
    return code


async def test_bookinfo_as_processes_behind_the_proxy(mesh, client):
    """Every app started by its command line; productpage reaches the others by name."""
    proxy = {"HTTP_PROXY": mesh.proxy_url}
    started = await asyncio.gather(
        _start("pymesh.samples.bookinfo.details", "127.0.0.111"),
        _start("pymesh.samples.bookinfo.ratings", "127.0.0.112"),
        _start(
            "pymesh.samples.bookinfo.reviews", "127.0.0.113", env={**proxy, "SERVICE_VERSION": "v3"}
        ),
        _start("pymesh.samples.bookinfo.productpage", "127.0.0.114", env=proxy),
        _start("pymesh.samples.httpbin", "127.0.0.115", "--version", "v2"),
    )
    try:
        for authority, (_, url) in zip(
            ("details:9080", "ratings:9080", "reviews:9080", "productpage:9080", "httpbin:8000"),
            started,
            strict=True,
        ):
            host, port = url[len("http://") :].split(":")
            mesh.proxy.routes[authority] = (host, int(port))
        async with client.get(started[3][1] + "/productpage") as resp:
            page = await resp.text()
        assert 'color="red"' in page and "reviews-v3-" in page and "PublisherA" in page
        async with client.get(started[4][1] + "/status/204") as resp:
            assert resp.status == 204
    finally:
        codes = await asyncio.gather(
            *(
                _stop(proc, signal.SIGINT if i % 2 else signal.SIGTERM)
                for i, (proc, _) in enumerate(started)
            )
        )
    assert codes == [0] * len(started)


async def test_bad_version_is_refused():
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pymesh.samples.bookinfo.reviews",
        "--version",
        "v9",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 2 and b"v9" in err


@pytest.mark.parametrize("module", ["pymesh.samples.bookinfo.ratings"])
async def test_port_in_use_exits_1(module):
    host = "127.0.0.116"
    with socket.socket() as s:
        s.bind((host, 0))
        s.listen()
        port = s.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            "--host",
            host,
            "--port",
            str(port),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 1 and b"cannot listen" in err
