"""Child processes for tests and benchmarks: start with a log file, wait for a port, stop.

A :class:`ManagedProcess` always has its output in a log file (never a pipe: a chatty child
blocks on a full pipe nobody reads) and always dies: ``stop()`` sends SIGTERM to the child's
process group, then SIGKILL after a grace period; the child also gets SIGKILL from the kernel
if the test process itself dies (``PR_SET_PDEATHSIG``). :class:`ProcessGroup` is what
fixtures hold so that every process started by a test is stopped even when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "ManagedProcess",
    "ProcessExitedError",
    "ProcessGroup",
    "async_wait_for_http",
    "async_wait_for_port",
    "free_port",
    "http_status",
    "port_accepts",
    "wait_for_http",
    "wait_for_port",
]

_PR_SET_PDEATHSIG = 1


class ProcessExitedError(RuntimeError):
    """The child exited while we were waiting for it to become ready."""


# Ports handed out by free_port() come from below the kernel's ephemeral range (32768-60999
# here), split into one block per pytest-xdist worker. Asking the kernel for port 0 instead
# lets two workers that share an address both receive a port that one of them has just
# released (a differential test reuses its listener port for each proxy in turn), and lets an
# outgoing connection take it as its source port.
_PORT_BASE = 20000
_PORT_BLOCK = 1500
_MAX_WORKERS = 8


class _PortBlock:
    """Hands out the ports of this worker's block in turn, skipping any in use."""

    def __init__(self, worker: str | None) -> None:
        index = int(worker[2:]) if worker and worker[2:].isdigit() else 0
        if index >= _MAX_WORKERS:
            raise RuntimeError(f"free_port() supports {_MAX_WORKERS} xdist workers, got {worker}")
        self.first = _PORT_BASE + index * _PORT_BLOCK
        # Start at a different place in each process, so that a test run right after another
        # does not meet the previous run's sockets in TIME_WAIT on the very same ports.
        self.next = self.first + (os.getpid() * 7919) % _PORT_BLOCK

    def take(self, host: str) -> int:
        for _ in range(_PORT_BLOCK):
            port = self.next
            self.next = self.first + (port + 1 - self.first) % _PORT_BLOCK
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
        raise RuntimeError(f"no free port left in {self.first}-{self.first + _PORT_BLOCK - 1}")


_ports = _PortBlock(os.environ.get("PYTEST_XDIST_WORKER"))


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on ``host`` now and that no other test worker will be given."""
    return _ports.take(host)


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connect to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_status(url_host: str, port: int, path: str, timeout: float = 1.0) -> int | None:
    """Status of ``GET path`` (``http.client`` ignores ``HTTP_PROXY``), None if unreachable."""
    conn = http.client.HTTPConnection(url_host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _set_pdeathsig() -> None:
    # Runs in the child between fork and exec: if the test process is killed outright
    # (no fixture teardown), the kernel still takes its children down.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ManagedProcess:
    """One child process, its output appended to ``log_path``.

    ``cpus`` pins the child with ``taskset -c`` (benchmarks). The child is the leader of its
    own process group so that stopping it also stops whatever it forked (nginx workers).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path | str,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        cpus: str | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.argv = list(argv)
        if cpus is not None:
            self.argv = ["taskset", "-c", cpus, *self.argv]
        self.log_path = Path(log_path)
        self.name = name or Path(argv[0]).name
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.die_with_parent = die_with_parent and sys.platform == "linux"
        self.popen: subprocess.Popen[bytes] | None = None

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> ManagedProcess:
        if self.popen is not None:
            raise RuntimeError(f"{self.name} already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_set_pdeathsig if self.die_with_parent else None,
            )
        return self

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
        p = self.popen
        if p is None:
            return None
        if p.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                # The leader is still unreaped here, so its group id cannot have been reused.
                self._signal_group(signal.SIGKILL)
                p.wait(timeout=5.0)
        return p.returncode

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self._signal_group(signal.SIGKILL)
            self.popen.wait(timeout=5.0)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    # -- state --------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError(f"{self.name} not started")
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise :class:`ProcessExitedError` (with the log tail) if the child has exited."""
        rc = self.returncode
        if self.popen is not None and rc is not None:
            raise ProcessExitedError(
                f"{self.name} exited with code {rc} (log {self.log_path}):\n{self.log_tail()}"
            )

    def __enter__(self) -> ManagedProcess:
        return self.start() if self.popen is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        pid = self.popen.pid if self.popen else None
        return f"<ManagedProcess {self.name} pid={pid} rc={self.returncode}>"


def _timeout_error(what: str, timeout: float, proc: ManagedProcess | None) -> TimeoutError:
    tail = f"\n--- {proc.name} log tail ({proc.log_path}):\n{proc.log_tail()}" if proc else ""
    return TimeoutError(f"{what} not ready after {timeout:.1f}s{tail}")


def wait_for_port(
    host: str, port: int, timeout: float = 10.0, proc: ManagedProcess | None = None
) -> None:
    """Block until ``host:port`` accepts a connection; fail fast if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            proc.check_alive()
        if port_accepts(host, port, timeout=0.5):
            return
        if time.monotonic() >= deadline:
            raise _timeout_error(f"{host}:{port}", timeout, proc)
        time.sleep(0.02)


def wait_for_http(
    host: str,
    port: int,
    path: str = "/ready",
    timeout: float = 15.0,
    proc: ManagedProcess | None = None,
    status: int = 200,
) -> None:
    """Block until ``GET path`` answers ``status``; fail fast if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            proc.check_alive()
        if http_status(host, port, path, timeout=1.0) == status:
            return
        if time.monotonic() >= deadline:
            raise _timeout_error(f"http://{host}:{port}{path}", timeout, proc)
        time.sleep(0.05)


async def async_wait_for_port(
    host: str, port: int, timeout: float = 10.0, proc: ManagedProcess | None = None
) -> None:
    """:func:`wait_for_port` without blocking the running event loop."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            proc.check_alive()
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        except (OSError, TimeoutError):
            pass
        if time.monotonic() >= deadline:
            raise _timeout_error(f"{host}:{port}", timeout, proc)
        await asyncio.sleep(0.02)


async def async_wait_for_http(
    host: str,
    port: int,
    path: str = "/ready",
    timeout: float = 15.0,
    proc: ManagedProcess | None = None,
    status: int = 200,
) -> None:
    """:func:`wait_for_http` without blocking the running event loop."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            proc.check_alive()
        got = await asyncio.to_thread(http_status, host, port, path, 1.0)
        if got == status:
            return
        if time.monotonic() >= deadline:
            raise _timeout_error(f"http://{host}:{port}{path}", timeout, proc)
        await asyncio.sleep(0.05)


class ProcessGroup:
    """Processes started for one test (or one benchmark run), stopped together, newest first."""

    def __init__(self, log_dir: Path | str) -> None:
        self.log_dir = Path(log_dir)
        self.procs: list[ManagedProcess] = []

    def spawn(
        self, argv: Sequence[str], *, name: str | None = None, **kwargs: Any
    ) -> ManagedProcess:
        """Start ``argv`` with its log in ``log_dir/<name>.log`` and track it."""
        label = name or Path(argv[0]).name
        log_path = self.log_dir / f"{label}-{len(self.procs)}.log"
        proc = ManagedProcess(argv, log_path=log_path, name=label, **kwargs)
        self.procs.append(proc)
        return proc.start()

    def adopt(self, proc: ManagedProcess) -> ManagedProcess:
        """Track a process started elsewhere so that :meth:`stop_all` stops it."""
        self.procs.append(proc)
        return proc

    def stop_all(self, grace: float = 5.0) -> None:
        errors: list[BaseException] = []
        while self.procs:
            proc = self.procs.pop()
            try:
                proc.stop(grace)
            except BaseException as exc:  # keep stopping the others
                errors.append(exc)
        if errors:
            raise errors[0]
