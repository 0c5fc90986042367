"""Child processes of the demo: each in its own process group, with its own log file.

Three layers make sure none outlives the demo: the supervisor stops every group on its way
out (signal handlers and ``atexit``); on Linux each child also asks the kernel to kill it
when the supervisor dies (``PR_SET_PDEATHSIG``), which covers ``kill -9``; and every child
carries ``PYMESH_DEMO_CHILD=<run dir>`` in its environment, so ``pymesh demo down`` can find
stragglers even when the state file is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

__all__ = [
    "CHILD_MARKER",
    "Child",
    "alive",
    "is_supervisor",
    "kill_group",
    "marked_processes",
    "spawn",
    "stop_pids",
]

CHILD_MARKER = "PYMESH_DEMO_CHILD"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. The signal is tied to the thread that forked,
    # so the supervisor spawns from its main thread only.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """One started process; ``name`` is also its log file's stem."""

    __slots__ = ("argv", "log_path", "name", "proc", "started_at")

    def __init__(self, name: str, proc: subprocess.Popen[bytes], argv: Sequence[str], log: Path):
        self.name = name
        self.proc = proc
        self.argv = list(argv)
        self.log_path = log
        self.started_at = time.time()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return self.proc.poll()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 3.0) -> int:
        """SIGTERM to the group, SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            kill_group(self.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        kill_group(self.pid, signal.SIGKILL)
        return self.proc.wait()

    def terminate(self) -> None:
        """Ask the group to stop without waiting (several children stop in parallel)."""
        if self.proc.poll() is None:
            kill_group(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        kill_group(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(1.0)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    marker: str,
    cwd: Path | None = None,
) -> Child:
    """Start ``argv`` in a new session (its own process group), stdout and stderr appended
    to ``log``, stdin closed."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**env, CHILD_MARKER: marker, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    return Child(name, proc, argv, log)


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def is_supervisor(pid: int) -> bool:
    """True when ``pid`` is alive and is a ``pymesh demo`` process (not a reused pid)."""
    if not alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return True  # no /proc: trust the pid
    # Empty while the process is between fork and exec: too early to tell, so trust it.
    return not cmdline or b"demo" in cmdline.split(b"\0")


def marked_processes(marker: str) -> Iterator[int]:
    """Pids whose environment carries ``PYMESH_DEMO_CHILD=<marker>`` (Linux ``/proc``)."""
    wanted = f"{CHILD_MARKER}={marker}".encode()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if wanted in environ.split(b"\0") and alive(int(entry)):
            yield int(entry)


def stop_pids(pids: Sequence[int], timeout: float = 3.0) -> list[int]:
    """SIGTERM each pid's group, then SIGKILL what is left after ``timeout``; returns the
    pids that still exist after that (should be none)."""
    for pid in pids:
        kill_group(pid, signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            kill_group(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]
