"""Istio's sidecar drain on SIGTERM (``--drain-inbound-only``, ``--wait-full-drain``): the
inbound listeners stop at once while the outbound ones keep serving the app that is still
shutting down; the proxy exits after the drain time, or as soon as no connection is left
when EXIT_ON_ZERO_ACTIVE_CONNECTIONS asks for it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from tests.support.procs import free_port, wait_for_port

HOST = "127.0.11.120"


def _listener(name: str, port: int, direction: str) -> dict:
    return {
        "name": name,
        "traffic_direction": direction,
        "address": {"socket_address": {"address": HOST, "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                            "http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": name,
                            "route_config": {
                                "virtual_hosts": [
                                    {
                                        "name": "all",
                                        "domains": ["*"],
                                        "routes": [
                                            {
                                                "match": {"prefix": "/"},
                                                "direct_response": {
                                                    "status": 200,
                                                    "body": {"inline_string": name},
                                                },
                                            }
                                        ],
                                    }
                                ]
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/"
                                        "envoy.extensions.filters.http.router.v3.Router"
                                    },
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }


def _start(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[bytes], int, int]:
    inbound, outbound = free_port(HOST), free_port(HOST)
    boot = {
        "static_resources": {
            "listeners": [
                _listener("virtualInbound", inbound, "INBOUND"),
                _listener("virtualOutbound", outbound, "OUTBOUND"),
            ]
        }
    }
    path = tmp_path / "bootstrap.yaml"
    path.write_text(yaml.safe_dump(boot))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pymesh.cli.main", "proxy", "-c", str(path), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(HOST, inbound, timeout=30)
    wait_for_port(HOST, outbound, timeout=30)
    return proc, inbound, outbound


def _get(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{HOST}:{port}/", timeout=5) as resp:
        return resp.read().decode()


def _refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_inbound_drains_outbound_serves_until_the_drain_time(tmp_path: Path) -> None:
    proc, inbound, outbound = _start(
        tmp_path, "--drain-time-s", "3", "--drain-inbound-only", "--wait-full-drain"
    )
    try:
        assert _get(inbound) == "virtualInbound"
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        deadline = started + 2
        while not _refused(inbound):
            assert time.monotonic() < deadline, "the inbound listener still accepts"
            time.sleep(0.05)
        assert _get(outbound) == "virtualOutbound"  # the app can still call out
        assert proc.wait(20) == 0
        # No connection was open, yet it waited the whole drain (EXIT_ON_ZERO... false).
        assert time.monotonic() - started >= 2.5
    finally:
        proc.kill()
        proc.wait()


def test_exit_on_zero_active_connections(tmp_path: Path) -> None:
    proc, _, _ = _start(tmp_path, "--drain-time-s", "30", "--drain-inbound-only")
    try:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert time.monotonic() - started < 15  # well before the 30 s drain time
    finally:
        proc.kill()
        proc.wait()
