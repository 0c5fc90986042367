from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from tests.support import SUPPORT_NET, address
from tests.support.procs import (
    ManagedProcess,
    ProcessExitedError,
    ProcessGroup,
    async_wait_for_port,
    free_port,
    port_accepts,
    wait_for_port,
)

HOST = address(SUPPORT_NET, 1)


def _listener_argv(host: str, port: int, ignore_term: bool = False) -> list[str]:
    code = (
        "import signal, socket, time\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
        + f"s = socket.socket(); s.bind(({host!r}, {port})); s.listen()\n"
        + "print('listening', flush=True)\n"
        + "time.sleep(60)\n"
    )
    return [sys.executable, "-c", code]


def test_free_port_is_bindable() -> None:
    port = free_port(HOST)
    with socket.socket() as s:
        s.bind((HOST, port))
    assert 1024 < port < 65536


def test_free_port_blocks_are_per_worker_and_skip_ports_in_use() -> None:
    from tests.support.procs import _PortBlock

    first, second = _PortBlock("gw0"), _PortBlock("gw1")
    a = {first.take(HOST) for _ in range(50)}
    b = {second.take(HOST) for _ in range(50)}
    assert not a & b, "two workers were given the same port"
    # Below the kernel's ephemeral range: no outgoing connection is given one as source port.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert max(a | b) < low
    busy = first.next
    with socket.socket() as s:
        s.bind((HOST, busy))
        s.listen()
        assert first.take(HOST) != busy


def test_start_wait_stop(tmp_path: Path) -> None:
    port = free_port(HOST)
    with ManagedProcess(_listener_argv(HOST, port), log_path=tmp_path / "l.log") as proc:
        wait_for_port(HOST, port, timeout=5, proc=proc)
        assert proc.alive and port_accepts(HOST, port)
    assert proc.returncode == -15
    assert "listening" in proc.log_tail()
    assert not port_accepts(HOST, port)


def test_sigkill_after_grace(tmp_path: Path) -> None:
    port = free_port(HOST)
    proc = ManagedProcess(_listener_argv(HOST, port, ignore_term=True), log_path=tmp_path / "x.log")
    proc.start()
    wait_for_port(HOST, port, timeout=5, proc=proc)
    t0 = time.monotonic()
    assert proc.stop(grace=0.3) == -9
    assert time.monotonic() - t0 < 3


def test_early_exit_fails_fast_with_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"]
    proc = ManagedProcess(argv, log_path=tmp_path / "e.log").start()
    t0 = time.monotonic()
    with pytest.raises(ProcessExitedError, match=r"(?s)code 3.*boom: bad config"):
        wait_for_port(HOST, free_port(HOST), timeout=10, proc=proc)
    assert time.monotonic() - t0 < 5


def test_wait_timeout_names_the_address(tmp_path: Path) -> None:
    port = free_port(HOST)
    with pytest.raises(TimeoutError, match=f"{HOST}:{port}"):
        wait_for_port(HOST, port, timeout=0.2)


async def test_async_wait(tmp_path: Path) -> None:
    port = free_port(HOST)
    with ManagedProcess(_listener_argv(HOST, port), log_path=tmp_path / "a.log") as proc:
        await async_wait_for_port(HOST, port, timeout=5, proc=proc)


def test_group_stops_everything(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    ports = [free_port(HOST) for _ in range(2)]
    ps = [group.spawn(_listener_argv(HOST, p), name=f"l{p}") for p in ports]
    for p, proc in zip(ports, ps, strict=True):
        wait_for_port(HOST, p, timeout=5, proc=proc)
    group.stop_all()
    assert all(not p.alive for p in ps)
    assert group.procs == []


def test_procs_fixture_tracks(procs: ProcessGroup) -> None:
    port = free_port(HOST)
    proc = procs.spawn(_listener_argv(HOST, port), name="fixture")
    wait_for_port(HOST, port, timeout=5, proc=proc)
    assert proc in procs.procs
