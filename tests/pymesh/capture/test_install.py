"""``pymesh iptables`` for real, in a network namespace made for the test: the rules land as
``--dry-run`` printed them, an app's connection is redirected to the proxy's port (which
recovers the original destination), the proxy's uid is not, running it twice converges,
and ``clean`` leaves the nat table as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace, iptables)"),
    pytest.mark.skipif(shutil.which("iptables-restore") is None, reason="needs iptables"),
]

PYMESH = [sys.executable, "-m", "pymesh.cli.main", "--log-level", "warning"]
FLAGS = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", ""]

# Listens on 15001 in the namespace and prints the original destination of one connection.
_PROXY = """
import socket, sys
from proxy.transport.original_dst import original_destination
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 15001)); s.listen(8); print("ready", flush=True)
s.settimeout(10)
c, _ = s.accept(); print(original_destination(c), flush=True)
"""
_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])).close()
    print("connected")
except OSError as e:
    print(type(e).__name__)
"""


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"pmpod-cap-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        # The test's "service" addresses route into a veth whose other end drops everything.
        for step in (
            ["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
            ["addr", "add", "10.211.251.1/24", "dev", "v0"],
            ["link", "set", "v0", "up"],
            ["link", "set", "v1", "up"],
            ["route", "add", "10.211.250.0/24", "dev", "v0"],
        ):
            subprocess.run(["ip", "-n", name, *step], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _in(ns: str, *argv: str, uid: int | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["ip", "netns", "exec", ns]
    if uid is not None:
        prefix += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        prefix += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--"]
    return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=30)


def _nat(ns: str) -> list[str]:
    return _in(ns, "iptables", "-t", "nat", "-S").stdout.splitlines()


def test_install_redirect_and_clean(netns: str) -> None:
    before = _nat(netns)
    dry = _in(netns, *PYMESH, "iptables", *FLAGS, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert _nat(netns) == before  # --dry-run changes nothing
    for _ in range(2):  # a second run (a restarted init container) converges
        done = _in(netns, *PYMESH, "iptables", *FLAGS)
        assert done.returncode == 0, done.stderr
    installed = _nat(netns)
    expected = [line for line in dry.stdout.splitlines() if line.startswith(("-N", "-A"))]
    assert [line for line in installed if line not in before] == sorted(
        expected, key=lambda line: (not line.startswith("-N"), installed.index(line))
    )

    proxy = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", _PROXY],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proxy.stdout is not None and proxy.stdout.readline().strip() == "ready"
        # The proxy's own uid goes out untouched, into the device that drops it.
        target = ("10.211.250.7", "9080")
        as_proxy = _in(netns, sys.executable, "-c", _CONNECT, *target, "1", uid=1337)
        assert as_proxy.stdout.strip() == "TimeoutError", as_proxy
        # Any other uid is taken to 15001, which still knows where it was going.
        app = _in(netns, sys.executable, "-c", _CONNECT, *target, "5", uid=1000)
        assert app.stdout.strip() == "connected", app
        assert proxy.stdout.readline().strip() == "('10.211.250.7', 9080)"
    finally:
        proxy.kill()
        proxy.wait()

    cleaned = _in(netns, *PYMESH, "iptables", "clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert _nat(netns) == before


def test_refused_rules_are_reported(netns: str) -> None:
    """Without CAP_NET_ADMIN iptables refuses: the command says so and fails."""
    done = _in(netns, *PYMESH, "iptables", *FLAGS, uid=1000)
    assert done.returncode == 1
    assert "iptables-restore failed" in done.stderr and "CAP_NET_ADMIN" in done.stderr
