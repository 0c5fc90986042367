"""The container image's entry point: ``python -m pymesh.container ROLE [ARGS...]``.

One image serves every role, as Istio's ``proxyv2`` and ``pilot`` images do, configured the
Istio way, by environment:

* ``proxy sidecar|router`` (``pilot-agent proxy``): writes the Envoy bootstrap for this pod
  from ``POD_NAME``, ``POD_NAMESPACE``, ``INSTANCE_IP`` (else the container's own address),
  ``SERVICE_ACCOUNT``, ``ISTIO_METAJSON_LABELS`` and ``PILOT_ADDRESS`` (``pilot:15010``),
  then runs ``pymesh proxy`` with ``TERMINATION_DRAIN_DURATION_SECONDS`` of drain on SIGTERM
  and ``CONCURRENCY`` workers (1 when unset; 0: one per CPU).
* ``pilot``: ``pymesh pilot`` on ``0.0.0.0``, serving a writable copy of ``CONFIG_DIR``
  (``/etc/pymesh/config``, usually a read-only mount of manifests).
* ``iptables``: ``pymesh iptables`` (the init container), Istio's flags by default.
* ``wait [SECONDS [URL]]``: exits 0 once this pod's proxy is ready (``pilot-agent wait``;
  health checks and ``holdApplicationUntilProxyStarts``), or once ``URL`` answers 200.
* ``mixer``: ``pymesh mixer`` on ``0.0.0.0`` (Istio's ports), ``MESH_CONFIG`` for its mesh.
* ``ca``: ``pymesh ca`` on ``CA_ADDRESS`` (``0.0.0.0:15012``) with its key material in
  ``CA_DIR`` (``/var/lib/pymesh/ca``, a new root when empty); Istio's plugged-in ``cacerts``
  files in ``CACERTS_DIR`` (``/etc/cacerts``) are copied in first when present.
* ``tokens NS/SA...``: what an API server gives pods where there is none (docker-compose):
  the mesh root and a service-account token per ``NS/SA``, under ``SECRETS_DIR``
  (``<ns>/<sa>/istio-token``, readable by the proxy's uid only).
* ``agent``: ``pymesh agent`` (``CA_ADDR``, ``POD_NAMESPACE``, ``SERVICE_ACCOUNT`` from the
  environment; ``TOKEN_FILE``, ``CA_ROOT``, ``STATUS_ADDRESS``).
* ``injector``: ``pymesh injector`` with the arguments given.

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
    if os.environ.get("CONCURRENCY"):
        argv += ["--concurrency", os.environ["CONCURRENCY"]]
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
    url = args[1] if len(args) > 1 else "http://127.0.0.1:15000/ready"
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
            print(f"{url} is not ready after {timeout:g} s", file=sys.stderr)
            return 1
        time.sleep(0.2)


def _mixer(args: Sequence[str]) -> int:
    env = os.environ.get
    argv = ["mixer", "--grpc-address", env("GRPC_ADDRESS", "0.0.0.0:9091")]
    argv += ["--metrics-address", env("METRICS_ADDRESS", "0.0.0.0:15014")]
    argv += ["--zipkin-address", env("ZIPKIN_ADDRESS", "0.0.0.0:9411")]
    argv += ["--dashboard-address", env("DASHBOARD_ADDRESS", "0.0.0.0:20001")]
    if env("MESH_CONFIG"):
        argv += ["--mesh-config", os.environ["MESH_CONFIG"]]
    if env("PROMETHEUS_URL"):
        argv += ["--prometheus-url", os.environ["PROMETHEUS_URL"]]
    return _exec_pymesh([*argv, *args])


def _ca_dir() -> Path:
    return Path(os.environ.get("CA_DIR", "/var/lib/pymesh/ca"))


def _ca(args: Sequence[str]) -> int:
    directory = _ca_dir()
    plugged = Path(os.environ.get("CACERTS_DIR", "/etc/cacerts"))
    if plugged.is_dir() and any(plugged.glob("*.pem")):
        # A Secret mount is read-only, and the CA keeps its token key beside the root.
        directory.mkdir(parents=True, exist_ok=True)
        for pem in plugged.glob("*.pem"):
            shutil.copyfile(pem, directory / pem.name)
    argv = ["ca", "--ca-dir", str(directory)]
    if os.environ.get("TRUST_DOMAIN"):
        argv += ["--trust-domain", os.environ["TRUST_DOMAIN"]]
    if not args or args[0].startswith("-"):
        argv += ["--address", os.environ.get("CA_ADDRESS", "0.0.0.0:15012")]
    return _exec_pymesh([*argv, *args])


def _tokens(args: Sequence[str]) -> int:
    from auth.server import CaOptions, open_ca
    from auth.tokens import CA_AUDIENCE
    from pymesh.errors import ConfigError

    accounts = [a.partition("/") for a in args]
    bad = [f"{ns}{sep}{sa}" for ns, sep, sa in accounts if not (ns and sep and sa)]
    if not accounts or bad:
        print(f"usage: tokens NAMESPACE/SERVICE_ACCOUNT... (got {bad or 'none'})", file=sys.stderr)
        return 2
    out = Path(os.environ.get("SECRETS_DIR", "/var/run/secrets/pymesh"))
    options = CaOptions(_ca_dir(), trust_domain=os.environ.get("TRUST_DOMAIN", "cluster.local"))
    try:
        uid = int(os.environ.get("PROXY_UID", "1337"))
        ttl = float(os.environ.get("TOKEN_TTL_SECONDS", str(30 * 24 * 3600)))
        service, issuer = open_ca(options, time.time)
        out.mkdir(parents=True, exist_ok=True)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    (out / "root-cert.pem").write_text(service.ca.root_pem, encoding="ascii")
    for namespace, _, account in accounts:
        path = out / namespace / account / "istio-token"
        path.parent.mkdir(parents=True, exist_ok=True)
        token = issuer.issue(namespace, account, audiences=[CA_AUDIENCE], ttl=ttl)
        path.write_text(token, encoding="ascii")
        path.chmod(0o600)
        os.chown(path, uid, uid)
        print(f"token for {namespace}/{account}: {path}")
    return 0


def _agent(args: Sequence[str]) -> int:
    env = os.environ.get
    argv = ["agent", "--ca-address", env("CA_ADDR", "istiod.istio-system.svc:15012")]
    argv += ["--token-file", env("TOKEN_FILE", "/var/run/secrets/tokens/istio-token")]
    argv += ["--ca-root", env("CA_ROOT", "/var/run/secrets/istio/root-cert.pem")]
    argv += ["--sds-socket", env("SDS_SOCKET", "/var/run/secrets/workload-spiffe-uds/socket")]
    if env("STATUS_ADDRESS"):
        argv += ["--status-address", os.environ["STATUS_ADDRESS"]]
    return _exec_pymesh([*argv, *args])


ROLES: dict[str, Callable[[Sequence[str]], int]] = {
    "proxy": _proxy,
    "pilot": _pilot,
    "mixer": _mixer,
    "ca": _ca,
    "tokens": _tokens,
    "agent": _agent,
    "iptables": _iptables,
    "wait": _wait,
    "injector": lambda args: _exec_pymesh(["injector", *args]),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ROLES:
        print(f"usage: ROLE [ARGS...], ROLE one of: {', '.join(ROLES)}", file=sys.stderr)
        return 2
    return ROLES[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
