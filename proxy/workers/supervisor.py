"""The main process of ``pymesh proxy --concurrency N``: starts the workers, serves the admin
port for all of them, forwards SIGTERM (each worker drains), and exits when one dies.

A worker that dies is not restarted: in Envoy a crashing worker thread takes the whole
process down, and whoever runs the proxy (Istio's pilot-agent, Kubernetes) restarts it. A
silently restarted worker would hide a crash and lose its stats from the sums; exiting with
an error leaves no doubt, and the remaining workers are stopped rather than left serving
with a fraction of the capacity.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import structlog

from proxy.config.model import SocketAddress

__all__ = ["Supervisor", "WorkerOptions", "run"]

log = structlog.get_logger(__name__)

_START_TIMEOUT = 120.0  # a worker on a loaded machine imports and builds its runtime first


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """What every worker is started with (the proxy's own command-line options)."""

    config_path: str
    drain_time: float = 5.0
    drain_inbound_only: bool = False
    wait_full_drain: bool = False
    log_level: str = "info"
    log_format: str = "console"

    def argv(self, index: int, report_fd: int) -> list[str]:
        return [
            sys.executable, "-m", "proxy.workers.worker",
            "--config-path", self.config_path, "--index", str(index),
            "--report-fd", str(report_fd), "--drain-time-s", str(self.drain_time),
            "--log-level", self.log_level, "--log-format", self.log_format,
            *(["--drain-inbound-only"] if self.drain_inbound_only else []),
            *(["--wait-full-drain"] if self.wait_full_drain else []),
        ]  # fmt: skip


class Worker:
    def __init__(self, index: int, proc: asyncio.subprocess.Process) -> None:
        self.index = index
        self.proc = proc
        self.admin_port: int | None = None


class Supervisor:
    def __init__(
        self, options: WorkerOptions, concurrency: int, admin: SocketAddress | None
    ) -> None:
        self.options = options
        self.concurrency = concurrency
        self.admin_address = admin
        self.workers: list[Worker] = []
        self._stop = asyncio.Event()

    @property
    def admin_host(self) -> str:
        return self.admin_address.host if self.admin_address is not None else "127.0.0.1"

    def worker_ports(self) -> list[int | None]:
        return [w.admin_port for w in self.workers] or [None]

    def quit(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        from proxy.workers.admin import WorkersAdmin

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        admin = None
        if self.admin_address is not None:
            # First, as Envoy opens its admin port: /ready answers 503 until every worker is up.
            admin = WorkersAdmin(self, self.admin_address)
            await admin.start()
        try:
            return await self._supervise()
        finally:
            if admin is not None:
                await admin.stop()

    async def _supervise(self) -> int:
        log.info("starting workers", concurrency=self.concurrency)
        # Envoy's worker threads share these; pymesh's worker processes cannot, so a limit a
        # DestinationRule sets holds per worker: said once, where the operator looks.
        log.warning(
            "circuit breakers, outlier detection and local rate limits apply per worker",
            concurrency=self.concurrency,
        )
        stop: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        reports = [await self._spawn(i) for i in range(self.concurrency)]
        started: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(self._wait_started(w, r) for w, r in reports))
        )
        # SIGTERM or /quitquitquit while workers still start stops them now, not once started.
        pending: set[asyncio.Future[Any]] = {started, stop}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            started.cancel()
            await self._stop_workers(grace=self.options.drain_time + 5.0)
            log.info("proxy stopped while starting")
            return 0
        if (failed := started.exception()) is not None:
            stop.cancel()
            log.error("proxy failed to start", error=str(failed))
            await self._stop_workers(grace=2.0)
            return 1
        exits = {asyncio.ensure_future(w.proc.wait()): w for w in self.workers}
        done, _ = await asyncio.wait({stop, *exits}, return_when=asyncio.FIRST_COMPLETED)
        if stop in done:
            await self._stop_workers(grace=self.options.drain_time + 5.0)
            log.info("proxy stopped")
            return 0
        stop.cancel()
        dead = next(exits[t] for t in exits if t in done)
        log.error(
            "worker exited: stopping the proxy",
            worker=dead.index,
            pid=dead.proc.pid,
            exit=_describe(dead.proc.returncode),
        )
        await self._stop_workers(grace=2.0)
        return 1

    async def _spawn(self, index: int) -> tuple[Worker, asyncio.StreamReader]:
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.options.argv(index, write_fd), pass_fds=(write_fd,)
            )
        finally:
            os.close(write_fd)
        worker = Worker(index, proc)
        self.workers.append(worker)
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb")
        )
        log.info("worker started", worker=index, pid=proc.pid)
        return worker, reader

    async def _wait_started(self, worker: Worker, report: asyncio.StreamReader) -> None:
        try:
            line = await asyncio.wait_for(report.readline(), _START_TIMEOUT)
        except TimeoutError:
            why = f"worker {worker.index} not started in {_START_TIMEOUT:g}s"
            raise RuntimeError(why) from None
        if not line.strip().isdigit():
            rc = await worker.proc.wait()
            raise RuntimeError(f"worker {worker.index} exited while starting ({_describe(rc)})")
        worker.admin_port = int(line)

    async def _stop_workers(self, grace: float) -> None:
        alive = [w for w in self.workers if w.proc.returncode is None]
        for w in alive:
            w.proc.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(w.proc.wait()) for w in alive]
        if not waits:
            return
        _, late = await asyncio.wait(waits, timeout=grace)
        if late:
            for w in alive:
                if w.proc.returncode is None:
                    log.warning("worker did not stop: killing it", worker=w.index)
                    w.proc.kill()
            await asyncio.wait(late, timeout=5.0)


def _describe(returncode: int | None) -> str:
    if returncode is None:
        return "running"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def run(options: WorkerOptions, concurrency: int, admin: SocketAddress | None) -> int:
    import uvloop

    rc: int = uvloop.run(Supervisor(options, concurrency, admin).run())
    return rc
