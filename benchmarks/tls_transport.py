"""HTTP over TLS through the loop's own TLS protocol (uvloop's, in C) against pymesh's
half-closable :class:`~proxy.transport.tls_transport.TlsTransport`, server side.

``python -m benchmarks.tls_transport [--reps N] [--duration S] [--connections C]``

Per repetition and kind, a fresh server process on uvloop (on CPU 1 when there are two)
answers keep-alive HTTP/1.1 requests with 1 KiB over TLS 1.3 (a mesh certificate; no client
certificate, which costs only at the handshake); ``wrk -t1 -cC`` on CPU 0 keeps it busy for
``S`` seconds after a second of warm-up. Reported per kind: requests per second and the
server's CPU microseconds per request (``/proc``), medians of the interleaved repetitions
with min and max, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import procstat
from tests.support.mesh_pki import MeshPki
from tests.support.procs import free_port

__all__ = ["main"]

HOST = "127.0.0.1"
KINDS = ("loop", "half-close")
_BODY = b"x" * 1024
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n" % len(_BODY)
    + _BODY
)
_REQUEST = b"GET /1k HTTP/1.1\r\nhost: bench\r\n\r\n"


class _Responder(asyncio.Protocol):
    """Answers every request head with the 1 KiB response (no body parsing: GETs only)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if count:
            self.buffer = self.buffer[self.buffer.rindex(b"\r\n\r\n") + 4 :]
            assert self.transport is not None
            self.transport.write(_RESPONSE * count)


async def _serve(kind: str, port: int, cert_dir: Path) -> None:
    from proxy.transport.tls_engine import TlsEngine
    from proxy.transport.tls_transport import TlsTransport

    loop = asyncio.get_running_loop()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_dir / "server.pem", cert_dir / "server-key.pem")
    if kind == "loop":
        server = await loop.create_server(_Responder, HOST, port, ssl=context)
    else:

        def factory() -> asyncio.Protocol:
            engine = TlsEngine(context, server_side=True)
            return TlsTransport(loop, engine, lambda _: _Responder(), handshake_timeout=10)

        server = await loop.create_server(factory, HOST, port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def _wrk(port: int, duration: float, connections: int) -> int:
    """Requests ``wrk`` completed (its summary line ``N requests in ...``)."""
    cmd = [*_pin(0), "wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s"]
    out = subprocess.run(
        [*cmd, f"https://{HOST}:{port}/1k"], capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in out.splitlines() if " requests in " in x)
    return int(line.split()[0])


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if (os.cpu_count() or 1) > 1 else []


def _one(kind: str, cert_dir: Path, args: argparse.Namespace) -> tuple[float, float]:
    port = free_port(HOST)
    cmd = [*_pin(1), sys.executable, "-m", "benchmarks.tls_transport", "--serve", kind]
    cmd += ["--port", str(port), "--certs", str(cert_dir)]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        _wrk(port, 1, args.connections)  # warm-up
        before = procstat.cpu_seconds(server.pid)
        started = time.monotonic()
        served = _wrk(port, args.duration, args.connections)
        elapsed = time.monotonic() - started
        cpu = procstat.cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        server.wait(10)
    return served / elapsed, cpu / served * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--serve", choices=KINDS)
    parser.add_argument("--port", type=int)
    parser.add_argument("--certs", type=Path)
    args = parser.parse_args(argv)
    if args.serve:
        import uvloop

        uvloop.run(_serve(args.serve, args.port, args.certs))
        return
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        cert_dir = Path(tmp)
        MeshPki().workload("default", "server").write(cert_dir, "server")
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in KINDS}
        for _ in range(args.reps):
            for kind in KINDS:
                results[kind].append(_one(kind, cert_dir, args))
                print(kind, *(f"{v:.1f}" for v in results[kind][-1]), flush=True)
    medians = {}
    for kind, runs in results.items():
        rps = [r for r, _ in runs]
        cpu = [c for _, c in runs]
        medians[kind] = (statistics.median(rps), statistics.median(cpu))
        print(
            f"{kind:>10}: {medians[kind][0]:8.0f} req/s ({min(rps):.0f}-{max(rps):.0f}), "
            f"{medians[kind][1]:6.1f} µs CPU/req ({min(cpu):.1f}-{max(cpu):.1f})"
        )
    loop_rps, loop_cpu = medians["loop"]
    half_rps, half_cpu = medians["half-close"]
    print(
        f"half-close / loop: {half_rps / loop_rps:.2f}x req/s, {half_cpu / loop_cpu:.2f}x CPU/req"
    )


if __name__ == "__main__":
    main()
