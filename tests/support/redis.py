"""A real ``redis-server`` (Debian's package) on a loopback address, for counter tests."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tests.support.procs import ManagedProcess, free_port, wait_for_port

__all__ = ["RedisServer", "find_redis", "redis_ping"]


def find_redis() -> str | None:
    return shutil.which("redis-server")


def redis_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when the server answers PING with PONG (RESP, no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` without persistence on ``host``; ``start`` / ``stop`` / ``restart``
    keep the same port, so clients see a Redis that went away and came back."""

    def __init__(self, host: str, workdir: Path) -> None:
        binary = find_redis()
        if binary is None:
            pytest.skip("redis-server not installed (Debian package redis-server)")
        self.binary = binary
        self.host = host
        self.port = free_port(host)
        self.workdir = workdir
        self.proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--daemonize", "no",
        ]  # fmt: skip
        self.proc = ManagedProcess(argv, log_path=self.workdir / "redis.log", name="redis").start()
        wait_for_port(self.host, self.port, timeout=10.0, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
