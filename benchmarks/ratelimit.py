"""Rate Limit Service benchmark: decisions per second per mixer core.

``python -m benchmarks.ratelimit [--seconds S] [--reps N] [--concurrency C]``

Three measurements, each repeated and interleaved (BENCHMARKING.md):

* ``core`` — the decision itself (plan, in-memory counters, decide) in this process, no I/O:
  the ceiling the transport is measured against.
* ``grpc-memory`` / ``grpc-redis`` — ``python -m mixer.ratelimit`` alone on CPU 1 (counters in
  memory, or in a Redis on CPU 0), driven over gRPC from CPU 0 by ``C`` concurrent callers.
  Decisions per core is calls answered per second of the service's own CPU time (utime +
  stime from ``/proc``), so it does not depend on how fast the load generator is.

Prints a Markdown table; one decision is one ``ShouldRateLimit`` call with one descriptor.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import procstat
from tests.support.procs import ManagedProcess, free_port, wait_for_port
from tests.support.redis import RedisServer

__all__ = ["CONFIG", "main", "median"]

HOST = "127.0.0.1"
CONFIG = """
domain: bench
descriptors:
  - key: client
    rate_limit: {unit: hour, requests_per_unit: 4000000000}
"""


def core_rate(seconds: float) -> float:
    """Decisions per second of the pure decision path, in this process."""
    from mixer.ratelimit.config import ConfigFile, load_config
    from mixer.ratelimit.counters import MemoryCounters
    from mixer.ratelimit.decide import Descriptor, Request
    from mixer.ratelimit.service import RateLimitService, StaticConfig
    from mixer.ratelimit.stats import RateLimitStats

    service = RateLimitService(
        StaticConfig(load_config([ConfigFile("bench", CONFIG)])),
        MemoryCounters(time.time),
        clock=time.time,
        stats=RateLimitStats(),
    )
    requests = [Request("bench", (Descriptor((("client", f"c{i}"),)),)) for i in range(64)]

    async def run() -> float:
        done = 0
        started = time.process_time()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for request in requests:
                await service.should_rate_limit(request)
            done += len(requests)
        return done / (time.process_time() - started)

    return asyncio.run(run())


_CLIENT = """
import asyncio, sys, time, grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
target, seconds, concurrency = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
async def main():
    channel = grpc.aio.insecure_channel(target)
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    def req(i):
        e = ratelimit_pb2.RateLimitDescriptor.Entry(key="client", value=f"c{i % 64}")
        return rls_pb2.RateLimitRequest(domain="bench", descriptors=[
            ratelimit_pb2.RateLimitDescriptor(entries=[e])])
    reqs = [req(i) for i in range(64)]
    await stub.ShouldRateLimit(reqs[0])
    done = 0
    deadline = time.monotonic() + seconds
    async def worker(k):
        nonlocal done
        i = k
        while time.monotonic() < deadline:
            await stub.ShouldRateLimit(reqs[i % 64], timeout=5)
            i += 1
            done += 1
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    print(done)
asyncio.run(main())
"""


def grpc_rate(
    workdir: Path, seconds: float, concurrency: int, redis_url: str | None
) -> tuple[float, float]:
    """(calls/s seen by the client, calls per second of the service's CPU)."""
    config = workdir / "ratelimit.yaml"
    config.write_text(CONFIG)
    port = free_port(HOST)
    argv = [sys.executable, "-m", "mixer.ratelimit", "--host", HOST, "--grpc-port", str(port),
            "--ratelimit-config", str(config), "--log-level", "warning"]  # fmt: skip
    if redis_url:
        argv += ["--redis-url", redis_url]
    service = ManagedProcess(argv, log_path=workdir / "rls.log", name="rls", cpus="1").start()
    try:
        wait_for_port(HOST, port, timeout=20, proc=service)
        warm = ManagedProcess(
            [sys.executable, "-c", _CLIENT, f"{HOST}:{port}", "1", str(concurrency)],
            log_path=workdir / "warm.log",
            cpus="0",
        ).start()
        warm.popen.wait(timeout=60)  # type: ignore[union-attr]
        before = procstat.cpu_seconds(service.pid)
        started = time.monotonic()
        client = ManagedProcess(
            [sys.executable, "-c", _CLIENT, f"{HOST}:{port}", str(seconds), str(concurrency)],
            log_path=workdir / "client.log",
            cpus="0",
        ).start()
        client.popen.wait(timeout=seconds + 60)  # type: ignore[union-attr]
        elapsed = time.monotonic() - started
        cpu = procstat.cpu_seconds(service.pid) - before
        done = int(client.log_path.read_text().split()[-1])
        return done / elapsed, done / cpu
    finally:
        service.stop()


def median(values: list[float], fmt: str = ",.0f") -> str:
    """The median and the range of ``values``, for a table cell."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ratelimit")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[float, float]]] = {"core": [], "memory": [], "redis": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        redis = RedisServer(HOST, workdir / "redis")
        redis.start()
        try:
            for rep in range(args.reps):
                rate = core_rate(args.seconds / 2)
                results["core"].append((rate, rate))
                results["memory"].append(grpc_rate(workdir, args.seconds, args.concurrency, None))
                results["redis"].append(
                    grpc_rate(workdir, args.seconds, args.concurrency, redis.url)
                )
                print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
        finally:
            redis.stop()
    print("| path | calls/s (client view) | decisions per core-second |")
    print("| --- | --- | --- |")
    for name, label in (("core", "decision only, in process"), ("memory", "gRPC, memory"),
                        ("redis", "gRPC, Redis")):  # fmt: skip
        rows = results[name]
        print(f"| {label} | {median([r[0] for r in rows])} | {median([r[1] for r in rows])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
