"""Istio's authz-tcp task on ``pymesh demo --netns``: TCP reaches a pod's sidecar only through
transparent capture, so this task runs where every pod has its own network namespace and
Istio's iptables rules. tcp-echo and sleep run in ``foo``; sleep's connections are made from
inside its namespace, as ``kubectl exec sleep -- nc`` makes them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.demo_harness import ISTIO, Demo, istio_file, no_demo_processes, start_demo

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.xdist_group("pymesh-demo-security-netns"),
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="netns mode needs root (namespaces, iptables)"),
    pytest.mark.skipif(
        shutil.which("iptables-restore") is None or shutil.which("setpriv") is None,
        reason="netns mode needs iptables and setpriv (apt-get install iptables util-linux)",
    ),
]

TASK = "docs-extracted/security/authz-tcp"
# `echo "port N" | nc HOST N`: what comes back, or nothing when the connection is rejected.
_NC = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"port {port}\\n".encode())
        s.shutdown(socket.SHUT_WR)
        print(s.recv(200).decode(), end="")
except OSError:
    pass
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if not ISTIO.is_dir():
        pytest.skip("../shared/istio-samples is not present")
    demo = start_demo(tmp_path_factory, 2, "demo-security-netns", netns=True)
    assert demo.netns is not None
    try:
        demo.up()
        demo.pymesh("create", "namespace", "foo")
        for app in ("tcp-echo/tcp-echo.yaml", "sleep/sleep.yaml"):
            demo.pymesh("apply", "-n", "foo", "-f", str(istio_file(app)))
        demo.wait(
            lambda: {"tcp-echo.foo", "sleep.foo"} <= {p.key for p in demo.state().pods if p.ready},
            90,
            "tcp-echo and sleep running in foo",
        )
        demo.settle()
        yield demo
        result = demo.down()
        assert result.returncode == 0, result.stdout + result.stderr
        assert not no_demo_processes(demo.run_dir)
    finally:
        demo.down()
        from pymesh.demo.netns import remove_all

        remove_all(demo.netns.prefix)
        demo.release()


def _nc(demo: Demo, host: str, port: int) -> str:
    sleep = demo.pod("sleep.foo")
    done = subprocess.run(
        ["ip", "netns", "exec", sleep.netns, sys.executable, "-c", _NC, host, str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout


def _succeeds(demo: Demo, port: int, *, by_ip: bool = False) -> bool:
    host = demo.pod("tcp-echo.foo").ip if by_ip else "tcp-echo"
    return _nc(demo, host, port).startswith(f"hello port {port}")


def _apply(demo: Demo, name: str) -> None:
    demo.pymesh("apply", "-f", str(istio_file(f"{TASK}/{name}")))
    demo.settle()


def test_authz_tcp(demo: Demo) -> None:
    """TCP traffic: without a policy ports 9000, 9001 and 9002 (not in the Service, so by pod
    IP) all answer; allowing ports 9000 and 9001 rejects 9002; allowing GET on 9000 (an HTTP
    field, which no TCP connection can match) rejects 9000; denying GET (the HTTP field
    dropped, the rule matches every connection) rejects 9000; denying GET on port 9000
    rejects 9000 only."""
    assert _succeeds(demo, 9000) and _succeeds(demo, 9001)
    assert _succeeds(demo, 9002, by_ip=True)
    try:
        _apply(demo, "1-authorizationpolicy-tcp-allow-ports-9000-9001.yaml")
        assert _succeeds(demo, 9000) and _succeeds(demo, 9001)
        assert not _succeeds(demo, 9002, by_ip=True)
        _apply(demo, "2-authorizationpolicy-tcp-allow-get-port-9000.yaml")
        assert not _succeeds(demo, 9000)
        _apply(demo, "3-authorizationpolicy-tcp-deny-get.yaml")
        assert not _succeeds(demo, 9000)
        _apply(demo, "4-authorizationpolicy-tcp-deny-get-port-9000.yaml")
        assert not _succeeds(demo, 9000)
        assert _succeeds(demo, 9001)
    finally:
        last = istio_file(f"{TASK}/4-authorizationpolicy-tcp-deny-get-port-9000.yaml")
        demo.pymesh("delete", "-f", str(last), check=False)
        demo.settle()
    assert _succeeds(demo, 9000)
