"""What one side call (``ShouldRateLimit``) costs the proxy's process: the proxy's own HTTP/2
client (``proxy.upstream.h2_unary``) beside grpcio's asyncio channel, in the same run.

``python -m benchmarks.side_call [--calls N] [--reps R] [--concurrency C]``

The Rate Limit Service runs alone (``python -m mixer.ratelimit``, counters in memory, pinned
to CPU 1); this process, pinned to CPU 0 under uvloop as the proxy runs, makes ``N`` calls
with ``C`` in flight, first with one client then the other, ``R`` times interleaved. The
table gives this process's CPU per call (user + system) and the calls per second it saw;
medians (min-max). The service's own cost is ``benchmarks.ratelimit``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from benchmarks.ratelimit import CONFIG, median
from tests.support.procs import ManagedProcess, free_port, wait_for_port

__all__ = ["main"]

HOST = "127.0.0.1"
_METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

Call = Callable[[Any], Awaitable[Any]]


def _requests() -> list[Any]:
    return [
        rls_pb2.RateLimitRequest(
            domain="bench",
            descriptors=[
                ratelimit_pb2.RateLimitDescriptor(
                    entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="client", value=f"c{i}")]
                )
            ],
        )
        for i in range(64)
    ]


async def _drive(call: Call, calls: int, concurrency: int) -> tuple[float, float]:
    """(CPU µs per call, calls per second)."""
    requests = _requests()
    await call(requests[0])
    left = calls

    async def worker(k: int) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call(requests[(left + k) % 64])

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    return cpu / calls * 1e6, calls / wall


async def _h2_unary(target: str, calls: int, concurrency: int) -> tuple[float, float]:
    from proxy.upstream.h2_unary import H2Unary

    unary = H2Unary(
        _METHOD,
        rls_pb2.RateLimitRequest.SerializeToString,
        rls_pb2.RateLimitResponse.FromString,
    )
    loop = asyncio.get_running_loop()

    async def call(request: Any) -> Any:
        future: asyncio.Future[Any] = loop.create_future()

        def done(response: Any, error: str | None) -> None:
            if error is not None:
                future.set_exception(RuntimeError(error))
            else:
                future.set_result(response)

        unary.call(target, request, 5.0, done)
        return await future

    try:
        return await _drive(call, calls, concurrency)
    finally:
        await unary.close()


async def _grpcio(target: str, calls: int, concurrency: int) -> tuple[float, float]:
    import grpc

    channel = grpc.aio.insecure_channel(target)
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    try:
        return await _drive(lambda r: stub.ShouldRateLimit(r, timeout=5), calls, concurrency)
    finally:
        await channel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.side_call")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    import uvloop

    os.sched_setaffinity(0, {0})
    results: dict[str, list[tuple[float, float]]] = {"h2_unary": [], "grpcio": []}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "ratelimit.yaml"
        config.write_text(CONFIG)
        port = free_port(HOST)
        argv_ = [sys.executable, "-m", "mixer.ratelimit", "--host", HOST,
                 "--grpc-port", str(port), "--ratelimit-config", str(config),
                 "--log-level", "warning"]  # fmt: skip
        service = ManagedProcess(argv_, log_path=Path(tmp) / "rls.log", name="rls", cpus="1")
        service.start()
        try:
            wait_for_port(HOST, port, timeout=20, proc=service)
            target = f"{HOST}:{port}"
            for rep in range(args.reps):
                for name, run in (("h2_unary", _h2_unary), ("grpcio", _grpcio)):
                    results[name].append(uvloop.run(run(target, args.calls, args.concurrency)))
                print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
        finally:
            service.stop()
    print("| client | CPU µs per call (caller) | calls/s |")
    print("| --- | --- | --- |")
    for name, label in (("h2_unary", "proxy's HTTP/2 codec"), ("grpcio", "grpcio aio channel")):
        rows = results[name]
        print(
            f"| {label} | {median([r[0] for r in rows], ',.1f')} "
            f"| {median([r[1] for r in rows], ',.0f')} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
