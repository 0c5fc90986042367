"""The container image's entry point: ``python -m pymesh.container ROLE [ARGS...]``.

One image serves every role, as Istio's ``proxyv2`` and ``pilot`` images do, configured the
Istio way, by environment:

* ``proxy sidecar|router`` (``pilot-agent proxy``): writes the Envoy bootstrap for this pod
  from ``POD_NAME``, ``POD_NAMESPACE``, ``INSTANCE_IP`` (else the container's own address),
  ``SERVICE_ACCOUNT``, ``ISTIO_METAJSON_LABELS`` and ``PILOT_ADDRESS`` (``pilot:15010``),
  then runs ``pymesh proxy`` with ``TERMINATION_DRAIN_DURATION_SECONDS`` of drain on SIGTERM.
* ``pilot``: ``pymesh pilot`` on ``0.0.0.0``, serving a writable copy of ``CONFIG_DIR``
  (``/etc/pymesh/config``, usually a read-only mount of manifests).
* ``iptables``: ``pymesh iptables`` (the init container), Istio's flags by default.
* ``wait``: exits 0 once this pod's proxy is ready (``pilot-agent wait``; health checks and
  ``holdApplicationUntilProxyStarts``).
* ``injector``, ``ca``, ``agent``: ``pymesh injector|ca|agent`` with the arguments given.

Adding a role is one entry in :data:`ROLES`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["ROLES", "instance_ip", "main", "sidecar_bootstrap"]

_ISTIO_CAPTURE = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*"]
_ISTIO_CAPTURE += ["-x", "", "-b", "*", "-d", "15090,15021,15020"]


def _exec_pymesh(args: Sequence[str]) -> int:
    argv = [sys.executable, "-m", "pymesh.cli.main", *args]
    sys.stdout.flush()
    os.execv(sys.executable, argv)


def instance_ip(env: Mapping[str, str]) -> str:
    """``INSTANCE_IP`` (the downward API's ``status.podIP``), else the address this host
    name resolves to inside the container."""
    given = env.get("INSTANCE_IP")
    if given:
        return given
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def sidecar_bootstrap(kind: str, env: Mapping[str, str]) -> str:
    """The bootstrap YAML for a ``sidecar`` or ``router`` from the environment."""
    import yaml

    from pymesh.demo.bootstrap import HEALTH_PORT, bootstrap
    from pymesh.demo.images import Role, StandIn
    from pymesh.demo.pods import PodSpec

    labels = json.loads(env.get("ISTIO_METAJSON_LABELS") or "{}")
    port = env.get("APP_PORT")
    name = env.get("POD_NAME") or socket.gethostname()
    spec = PodSpec(
        name=name,
        namespace=env.get("POD_NAMESPACE") or "default",
        labels={str(k): str(v) for k, v in labels.items()},
        service_account=env.get("SERVICE_ACCOUNT") or "default",
        container_port=int(port) if port else None,
        stand_in=StandIn(Role.GATEWAY if kind == "router" else Role.CLIENT),
        owner=f"Deployment/{env['WORKLOAD_NAME']}" if env.get("WORKLOAD_NAME") else "",
    )
    pilot = env.get("PILOT_ADDRESS") or "pilot:15010"
    # The admin interface stays inside the pod, as Istio's does: on the pod's address the
    # capture rules would take the connections to it.
    body = bootstrap(
        spec,
        instance_ip(env),
        pilot,
        process=False,
        admin_address="127.0.0.1",
        health_port=HEALTH_PORT if kind == "sidecar" else None,
    )
    return yaml.safe_dump(body, sort_keys=False)


def _proxy(args: Sequence[str]) -> int:
    kind = args[0] if args else "sidecar"
    if kind not in ("sidecar", "router"):
        print(f"error: proxy {kind}: use 'proxy sidecar' or 'proxy router'", file=sys.stderr)
        return 2
    drain = os.environ.get("TERMINATION_DRAIN_DURATION_SECONDS", "5")
    argv = ["--log-level", os.environ.get("LOG_LEVEL", "info"), "proxy"]
    argv += ["--config-yaml", sidecar_bootstrap(kind, os.environ), "--drain-time-s", drain]
    if kind == "sidecar":
        # pilot-agent's SIGTERM: inbound drains, outbound serves the app to the end.
        argv.append("--drain-inbound-only")
        if os.environ.get("EXIT_ON_ZERO_ACTIVE_CONNECTIONS", "").lower() != "true":
            argv.append("--wait-full-drain")
    return _exec_pymesh([*argv, *args[1:]])


def _pilot(args: Sequence[str]) -> int:
    source = Path(os.environ.get("CONFIG_DIR", "/etc/pymesh/config"))
    # Pilot writes into its config dir (apply, its API token): serve a copy of the mount.
    work = Path(tempfile.mkdtemp(prefix="pymesh-config-"))
    if source.is_dir():
        shutil.copytree(source, work, dirs_exist_ok=True)
    argv = ["pilot", "--config-dir", str(work)]
    argv += ["--xds-address", os.environ.get("XDS_ADDRESS", "0.0.0.0:15010")]
    argv += ["--api-address", os.environ.get("API_ADDRESS", "0.0.0.0:15080")]
    if os.environ.get("MESH_CONFIG"):
        argv += ["--mesh-config", os.environ["MESH_CONFIG"]]
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        argv.append("--kubernetes")  # in a cluster: mirror it
    return _exec_pymesh([*argv, *args])


def _iptables(args: Sequence[str]) -> int:
    return _exec_pymesh(["iptables", *(args or _ISTIO_CAPTURE)])


def _wait(args: Sequence[str]) -> int:
    timeout = float(args[0]) if args else 60.0
    url = "http://127.0.0.1:15000/ready"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(url, timeout=1) as resp:
                if resp.status == 200:
                    return 0
        except OSError:
            pass
        if time.monotonic() > deadline:
            print(f"the proxy at {url} is not ready after {timeout:.0f} s", file=sys.stderr)
            return 1
        time.sleep(0.2)


ROLES: dict[str, Callable[[Sequence[str]], int]] = {
    "proxy": _proxy,
    "pilot": _pilot,
    "iptables": _iptables,
    "wait": _wait,
    "injector": lambda args: _exec_pymesh(["injector", *args]),
    "ca": lambda args: _exec_pymesh(["ca", *args]),
    "agent": lambda args: _exec_pymesh(["agent", *args]),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ROLES:
        print(f"usage: ROLE [ARGS...], ROLE one of: {', '.join(ROLES)}", file=sys.stderr)
        return 2
    return ROLES[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
