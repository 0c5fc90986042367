"""Children in their own process groups; nothing survives the supervisor, even kill -9."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from pymesh.demo.process import alive, is_supervisor, marked_processes, spawn, stop_pids

# The log's first line repeats the command line: the ready word must not appear in it as is.
PRELUDE = "UP = 'START' + 'ED'; "


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_spawn_logs_and_stops_the_whole_group(tmp_path):
    marker = str(tmp_path)
    # The child starts a grandchild in the same group; stopping the child stops both.
    code = "import subprocess,time; subprocess.Popen(['sleep','60']); print(UP); time.sleep(60)"
    child = spawn(
        "c",
        [sys.executable, "-c", PRELUDE + code],
        env=dict(os.environ),
        log=tmp_path / "c.log",
        marker=marker,
    )
    assert wait_for(lambda: "STARTED" in child.log_path.read_text())
    assert os.getpgid(child.pid) == child.pid
    assert wait_for(lambda: len(list(marked_processes(marker))) == 2)
    assert child.running
    child.stop(timeout=2.0)
    assert not child.running
    assert wait_for(lambda: not list(marked_processes(marker)))
    assert child.log_path.read_text().startswith("--- ")


def test_children_die_with_a_killed_supervisor(tmp_path):
    """The supervisor is SIGKILLed: PR_SET_PDEATHSIG takes its children down with it."""
    marker = str(tmp_path / "run")
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from pymesh.demo.process import spawn
        c = spawn("s", ["sleep", "60"], env=dict(os.environ), log=Path({str(tmp_path)!r}) / "s.log",
                  marker={marker!r})
        print(c.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    assert alive(pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert wait_for(lambda: not alive(pid)), "the child outlived its supervisor"
    assert not list(marked_processes(marker))


def test_stop_pids_escalates_to_sigkill(tmp_path):
    code = "import signal,time; signal.signal(15, signal.SIG_IGN); print(UP); time.sleep(60)"
    child = spawn(
        "stubborn",
        [sys.executable, "-c", PRELUDE + code],
        env=dict(os.environ),
        log=tmp_path / "s.log",
        marker=str(tmp_path),
    )
    assert wait_for(lambda: "STARTED" in child.log_path.read_text())
    assert stop_pids([child.pid], timeout=0.3) == []
    child.proc.wait(2)
    assert child.proc.returncode == -signal.SIGKILL


def test_is_supervisor_checks_the_command_line():
    assert not is_supervisor(os.getpid())  # pytest, not `pymesh demo`
    assert not is_supervisor(0)


def test_is_supervisor_trusts_a_process_that_is_still_starting():
    # Right after exec the kernel may show an empty command line for a moment.
    for _ in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(0.05)", "demo"],
            start_new_session=True,
        )
        assert is_supervisor(proc.pid)
        proc.wait()
