"""Machinery every proxy test and the benchmark run on.

* :mod:`tests.support.procs` — child processes with a log file, port/HTTP readiness waits,
  SIGTERM-then-SIGKILL stop, :func:`~tests.support.procs.free_port`.
* :mod:`tests.support.envoy` — :class:`~tests.support.envoy.EnvoyProcess` (the real Envoy) and
  :class:`~tests.support.envoy.PymeshProxyProcess` (``pymesh proxy -c``), bootstrap builders.
* :mod:`tests.support.differential` — the same requests through both proxies, compared.
* :mod:`tests.support.upstream` — a scriptable HTTP/1.1 origin (behaviours in
  :mod:`tests.support.behaviours`), in-process or as a subprocess
  (:mod:`tests.support.upstream_process`).
* :mod:`tests.support.httpclient` — a raw-socket HTTP/1.1 client parsed with h11.
* ``tests/conftest.py`` — the fixtures over all of this.

Loopback address plan
=====================

Linux routes all of 127.0.0.0/8 to ``lo``, so every test area binds its own addresses and
parallel pytest-xdist workers never fight over a port that another area hard-coded.

=====================  ==========================================================
range                  owner
=====================  ==========================================================
127.0.0.1              reserved: tools, benchmarks, anything outside the suite
127.0.0.100-119        sample-app tests (Bookinfo stand-ins)
127.0.1.0/24           proxy core tests (``tests/proxy``)
127.0.2.0/24           Envoy differential tests (same bootstrap through both)
127.0.3.0/24           pilot / xDS tests (``tests/pilot``)
127.0.4.0/24           demo tests (``pymesh demo``)
127.0.5.0/24           support self-tests (``tests/support``)
127.0.6.0/24           identity and mTLS (``tests/auth``, mTLS integration)
127.0.7.0/24           telemetry (``tests/mixer``, telemetry integration)
127.0.8.0/24           authorization and JWT (RBAC, jwt_authn, Istio security tasks)
127.0.9.0/24           rate limits and EnvoyFilter
127.0.10.0/24          HTTP/2, gRPC, WebSocket and TCP
127.0.11.0/24          pods: transparent capture, containers, injection
127.0.12.0/24          the first-ten-minutes demo test, CLI habits, sample pages
127.0.13.0/24          scale: workers, pilot at scale, restart safety
127.0.53.0/24          Istio's metrics per proxy (``/stats/prometheus``, the agent's 15020)
=====================  ==========================================================

Inside a /24, by convention: ``.1-.9`` proxies under test, ``.10-.99`` upstreams,
``.100-.254`` anything else (clients bound to a source address, control planes).

Ports: pick them at run time with ``free_port(host)``, which gives each xdist worker its own
block below the kernel's ephemeral range; never hard-code one, except a well-known service
port (9080, 15000, 15001, …) on an address that no other test uses.
"""

from __future__ import annotations

__all__ = [
    "AUTH_NET",
    "DEMO_NET",
    "ENVOY_DIFF_NET",
    "H2_NET",
    "PILOT_NET",
    "POLICY_NET",
    "PROXY_NET",
    "PROXY_STATS_NET",
    "RATELIMIT_NET",
    "SUPPORT_NET",
    "TELEMETRY_NET",
    "UPGRADE_NET",
    "address",
]

PROXY_NET = "127.0.1"
ENVOY_DIFF_NET = "127.0.2"
PILOT_NET = "127.0.3"
DEMO_NET = "127.0.4"
SUPPORT_NET = "127.0.5"
TELEMETRY_NET = "127.0.7"
AUTH_NET = "127.0.6"
POLICY_NET = "127.0.8"
RATELIMIT_NET = "127.0.9"
H2_NET = "127.0.10"
UPGRADE_NET = "127.0.52"
PROXY_STATS_NET = "127.0.53"


def address(net: str, host: int) -> str:
    """``address(PROXY_NET, 10)`` → ``"127.0.1.10"``."""
    if not 1 <= host <= 254:
        raise ValueError(f"host part {host} outside 1..254")
    return f"{net}.{host}"
