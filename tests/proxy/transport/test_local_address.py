"""The node address spans carry: Envoy's choice, checked in network namespaces made here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)

_PAIRS = "ip link add p1 type veth peer name p2 && ip link add q1 type veth peer name q2 && "
_PRINT = "from proxy.transport.local_address import local_ipv4; print(local_ipv4())"


def _in_new_netns(setup: str) -> str:
    script = f"ip link set lo up && {setup} exec {sys.executable} -c '{_PRINT}'"
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


def test_loopback_only_gives_127_0_0_1() -> None:
    assert _in_new_netns("ip addr add 127.0.0.9/8 dev lo;") == "127.0.0.1"


def test_first_interface_outside_loopback_wins() -> None:
    # Both ends of the first pair come before both ends of the second in kernel order.
    setup = _PAIRS + "ip addr add 198.51.100.3/24 dev q1 && ip addr add 192.0.2.7/24 dev p2 &&"
    assert _in_new_netns(setup) == "192.0.2.7"


def test_an_interface_without_ipv4_is_skipped() -> None:
    setup = _PAIRS + "ip addr add 203.0.113.5/24 dev q2 &&"
    assert _in_new_netns(setup) == "203.0.113.5"
