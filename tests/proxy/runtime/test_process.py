"""``pymesh proxy -c`` as a process: bounded memory under a 1 GiB body, SIGTERM drain,
/quitquitquit, the JSON access log on stdout, and the command line itself."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.proxy.runtime.bootstrap import (
    bootstrap,
    cluster,
    hcm,
    listener,
    route,
    stdout_access_log,
    vhost,
)
from tests.proxy.runtime.conftest import ADMIN, listen_address, upstream_ip
from tests.support.behaviours import STREAM_BLOCK
from tests.support.envoy import ProxyProcess, find_pymesh, pymesh_proxy_missing
from tests.support.httpclient import AsyncConnection, request
from tests.support.procs import free_port, port_accepts
from tests.support.upstream import Delay, Stream

pytestmark = pytest.mark.skipif(pymesh_proxy_missing() is not None, reason="no pymesh command")

GIB = 1 << 30


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def routed(listen: tuple[str, int], up: tuple[str, int], **hcm_extra: Any) -> dict[str, Any]:
    return bootstrap(
        [listener(listen, hcm([vhost([route("/")])], **hcm_extra))],
        [cluster("backend", [up])],
        admin=(ADMIN, free_port(ADMIN)),
    )


# The bodies are the upstream's deterministic pattern (a 64 KiB block repeated): what the
# client sends, and what it checks the download against, without hashing on the hot path.
PATTERN = STREAM_BLOCK * 17  # any 1 MiB window at any block offset fits in it


def pattern_sha256(size: int) -> str:
    sha = hashlib.sha256()
    for offset in range(0, size, len(STREAM_BLOCK)):
        sha.update(STREAM_BLOCK[: min(len(STREAM_BLOCK), size - offset)])
    return sha.hexdigest()


async def stream_upload(conn: AsyncConnection, size: int) -> None:
    """POST ``size`` bytes of the pattern without holding them."""
    await conn.send(b"POST /upload HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n" % size)
    piece = STREAM_BLOCK * 16
    sent = 0
    while sent < size:
        n = min(len(piece), size - sent)
        await conn.send(piece[:n])
        sent += n


async def stream_download(conn: AsyncConnection, size: int) -> None:
    """GET a chunked ``size``-byte body as it comes, checking every byte against the pattern.

    The chunk framing is parsed here off 1 MiB reads: a read per 64 KiB chunk would make the
    client, not the proxy, the slow part."""
    await conn.send(b"GET /download HTTP/1.1\r\nHost: svc\r\n\r\n")
    reader = conn.reader
    buf = bytearray()
    pos = 0

    async def fill(need: int) -> None:
        nonlocal buf, pos
        while len(buf) - pos < need:
            if pos > 1 << 20:
                del buf[:pos]
                pos = 0
            data = await reader.read(1 << 20)
            assert data, "connection closed mid-body"
            buf += data

    async with asyncio.timeout(GIB_SECONDS):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower()
        block = len(STREAM_BLOCK)
        got = 0
        while True:
            await fill(3)
            while (end := buf.find(b"\r\n", pos)) < 0:
                await fill(len(buf) - pos + 1)
            n = int(bytes(buf[pos:end]).split(b";")[0], 16)
            pos = end + 2
            await fill(n + 2)
            offset = got % block
            assert buf[pos : pos + n] == PATTERN[offset : offset + n], f"corrupt bytes at {got}"
            assert buf[pos + n : pos + n + 2] == b"\r\n"
            pos += n + 2
            got += n
            if n == 0:
                break
    assert got == size


# Two GiB through a Python proxy, a Python upstream and a Python client on two shared cores:
# a minute when the machine is quiet, several when it is not. Only the memory is asserted.
GIB_SECONDS = 300


@pytest.mark.timeout(GIB_SECONDS + 60)
async def test_one_gib_each_way_with_bounded_memory(
    upstream_process_factory: Any, proxy_factory: Any
) -> None:
    """1 GiB up (content-length) and 1 GiB down (chunked) through the proxy process; its peak
    resident memory grows by far less than one body (flow control, no buffering)."""
    up = upstream_process_factory(upstream_ip(0), routes={"/download": Stream(GIB, chunked=True)})
    proxy = await proxy_factory("pymesh", routed(listen_address(), up.address))
    baseline = vm_kib(proxy.pid, "VmHWM")
    # Hashed beside the transfer (hashlib lets go of the GIL): what the upstream must report.
    expected = asyncio.ensure_future(asyncio.to_thread(pattern_sha256, GIB))
    async with await AsyncConnection.open(*proxy.listener()) as conn:
        await stream_upload(conn, GIB)
        r = await conn.read_response("POST", timeout=GIB_SECONDS)
        assert r.status == 200
        doc = r.json()
        assert (doc["body_length"], doc["body_sha256"]) == (GIB, await expected)
        await stream_download(conn, GIB)
    peak = vm_kib(proxy.pid, "VmHWM")
    assert peak - baseline < 48 * 1024, f"peak RSS grew by {(peak - baseline) // 1024} MiB"


async def test_sigterm_drains(upstream_factory: Any, proxy_factory: Any) -> None:
    up = await upstream_factory(upstream_ip(0), routes={"/slow": Delay(0.8)})
    proxy = await proxy_factory(
        "pymesh", routed(listen_address(), up.address), extra_args=["--drain-time-s", "10"]
    )
    address = proxy.listener()
    idle = await AsyncConnection.open(*address)
    busy = await AsyncConnection.open(*address)
    arriving = await AsyncConnection.open(*address)
    try:
        assert (await idle.request("GET", "/", host="svc")).status == 200
        assert (await arriving.request("GET", "/", host="svc")).status == 200
        await busy.send(b"GET /slow HTTP/1.1\r\nHost: svc\r\n\r\n")
        await arriving.send(b"GET /late HTTP/1.1\r\nHost: svc\r\n")  # head not finished yet
        for _ in range(200):
            if up.stats.by_path["/slow"]:
                break
            await asyncio.sleep(0.01)
        started = time.monotonic()
        os.kill(proxy.pid, signal.SIGTERM)
        # Idle keep-alive connections are closed at once, new connections refused.
        assert await idle.wait_closed_by_peer(1.0)
        await asyncio.sleep(0.1)
        assert not await asyncio.to_thread(port_accepts, *address, 0.5)
        # A request that was arriving is still served, and told the connection closes.
        await arriving.send(b"\r\n")
        r = await arriving.read_response(timeout=3.0)
        assert (r.status, r.header("connection")) == (200, "close")
        # The request in flight finishes, with connection: close.
        r = await busy.read_response(timeout=3.0)
        assert (r.status, r.header("connection")) == (200, "close")
        assert await busy.wait_closed_by_peer(1.0)
        # Nothing left in flight: the process exits well before the 10 s drain time.
        rc = await asyncio.to_thread(proxy.proc.popen.wait, 5.0)  # type: ignore[union-attr]
        assert rc == 0 and time.monotonic() - started < 4.0
    finally:
        for c in (idle, busy, arriving):
            await c.close()


async def test_quitquitquit_stops_the_process(upstream_factory: Any, proxy_factory: Any) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await proxy_factory("pymesh", routed(listen_address(), up.address))
    assert (await request(*proxy.listener(), host_header="svc")).status == 200
    r = await request(*proxy.admin, "POST", "/quitquitquit", host_header="admin")
    assert r.status == 200
    rc = await asyncio.to_thread(proxy.proc.popen.wait, 10.0)  # type: ignore[union-attr]
    assert rc == 0


async def test_json_access_log_on_stdout(upstream_factory: Any, proxy_factory: Any) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy: ProxyProcess = await proxy_factory(
        "pymesh", routed(listen_address(), up.address, access_log=stdout_access_log())
    )
    r = await request(
        *proxy.listener(),
        target="/logged?q=1",
        headers=[("x-request-id", "r-1")],
        host_header="svc",
    )
    assert r.status == 200
    await proxy.astop()  # the log is flushed at exit at the latest
    lines = [
        json.loads(line)
        for line in proxy.log_path.read_text().splitlines()
        if line.startswith("{") and '"response_code"' in line
    ]
    assert len(lines) == 1
    entry = lines[0]
    assert entry["path"] == "/logged?q=1" and entry["request_id"] == "r-1"
    assert (entry["response_code"], entry["response_flags"]) == (200, "-")
    assert entry["upstream_host"] == f"{up.host}:{up.port}"
    assert entry["upstream_cluster"] == "backend" and entry["method"] == "GET"
    assert list(entry) == sorted(entry)  # one line per request, keys sorted as Envoy writes them


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    binary = find_pymesh()
    assert binary is not None
    return subprocess.run(
        [binary, "proxy", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_validate_mode(tmp_path: Path) -> None:
    good = routed(listen_address(), (upstream_ip(0), 8080))
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(good))
    done = run_cli("-c", str(path), "--validate")
    assert done.returncode == 0 and "OK" in done.stdout
    bad = routed(listen_address(), (upstream_ip(0), 8080))
    bad["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"
    ]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] = "missing"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    done = run_cli("-c", str(path), "--validate")
    assert done.returncode == 1 and "missing" in done.stderr


def test_bad_bootstrap_exits_with_the_reason(tmp_path: Path) -> None:
    config = routed(listen_address(), (upstream_ip(0), 8080))
    config["static_resources"]["clusters"][0]["no_such_field"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    done = run_cli("-c", str(path))
    assert done.returncode == 1 and "no_such_field" in done.stderr
