"""The demo's telemetry: mixer beside pilot, on Istio's ports at the control address, and a
Prometheus scraping the mesh when the ``prometheus`` binary is installed.

Prometheus scrapes mixer, pilot and every pod's own ``:15020/stats/prometheus`` (the sidecar's
Envoy and Istio metrics, merged with the app's by the pod's agent when it has one). The pods
are found the way a standard ``kubernetes-pods`` job finds them: their ``prometheus.io/*``
annotations (set as Istio's injector sets them) drive the job's usual relabelling, fed here
from a file the demo rewrites as pods come and go (``file_sd`` in place of the Kubernetes
API).

Telemetry never holds the demo up: a port already taken or a process that does not come up is
one line of output, and the mesh runs without it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pymesh.demo.images import Role
from pymesh.demo.layout import DemoLayout
from pymesh.demo.ports import busy
from pymesh.demo.process import Child, spawn
from pymesh.demo.runtime import pymesh_argv

if TYPE_CHECKING:
    from pymesh.demo.runtime import PodRuntime

__all__ = [
    "MIXER_PORTS",
    "PODS_JOB",
    "PROMETHEUS_PORT",
    "Telemetry",
    "pod_targets",
    "prometheus_config",
]

#: mixer's ports, Istio's: ALS/RLS gRPC, metrics, Zipkin API, dashboard
MIXER_PORTS = {"grpc": 9091, "metrics": 15014, "zipkin": 9411, "dashboard": 20001}
PROMETHEUS_PORT = 9090
SCRAPE_INTERVAL = 5  # seconds
_READY_TIMEOUT = 30.0
PODS_JOB = "kubernetes-pods"
_META = "__meta_kubernetes_"
_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")

#: Prometheus's own example ``kubernetes-pods`` relabelling, unchanged
_PODS_RELABEL: list[dict[str, Any]] = [
    {
        "source_labels": [f"{_META}pod_annotation_prometheus_io_scrape"],
        "action": "keep",
        "regex": "true",
    },
    {
        "source_labels": [f"{_META}pod_annotation_prometheus_io_path"],
        "action": "replace",
        "target_label": "__metrics_path__",
        "regex": "(.+)",
    },
    {
        "source_labels": ["__address__", f"{_META}pod_annotation_prometheus_io_port"],
        "action": "replace",
        "regex": r"([^:]+)(?::\d+)?;(\d+)",
        "replacement": "$1:$2",
        "target_label": "__address__",
    },
    {"action": "labelmap", "regex": f"{_META}pod_label_(.+)"},
    {"source_labels": [f"{_META}namespace"], "action": "replace", "target_label": "namespace"},
    {"source_labels": [f"{_META}pod_name"], "action": "replace", "target_label": "pod"},
]


def _pods_file(layout: DemoLayout) -> Path:
    return layout.run_dir / "prometheus" / "pods.json"


def prometheus_config(layout: DemoLayout) -> dict[str, object]:
    """Istio's scrape targets for a mesh without Kubernetes: mixer and pilot statically, the
    pods as a ``kubernetes-pods`` job finds them (see :func:`pod_targets`)."""
    host = layout.control_address
    return {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL}s",
        },
        "scrape_configs": [
            {
                "job_name": "mixer",
                "static_configs": [{"targets": [f"{host}:{MIXER_PORTS['metrics']}"]}],
            },
            {"job_name": "pilot", "static_configs": [{"targets": [layout.pilot_api]}]},
            {
                "job_name": PODS_JOB,
                "file_sd_configs": [{"files": [str(_pods_file(layout))], "refresh_interval": "5s"}],
                "relabel_configs": _PODS_RELABEL,
            },
        ],
    }


def _label(name: str) -> str:
    return _LABEL_CHARS.sub("_", name)


def pod_targets(pods: Iterable[PodRuntime], mtls: bool) -> list[dict[str, Any]]:
    """What Kubernetes' pod discovery would give Prometheus for the pods whose metrics port
    is reachable from the host: process-mode pods (a gateway only with its agent, in mTLS),
    and netns-mode pods whose agent (mTLS only) serves the uncaptured port in the pod."""
    groups = []
    for pod in pods:
        spec = pod.spec
        if pod.network is not None:
            if not (mtls and spec.sidecar):
                continue
        elif spec.role is Role.GATEWAY and not mtls:
            continue
        annotations, _ = spec.scrape
        labels = {
            f"{_META}namespace": spec.namespace,
            f"{_META}pod_name": spec.name,
            f"{_META}pod_ip": pod.ip,
        }
        for key, value in spec.labels.items():
            labels[f"{_META}pod_label_{_label(key)}"] = value
        for key, value in annotations.items():
            labels[f"{_META}pod_annotation_{_label(key)}"] = value
            labels[f"{_META}pod_annotationpresent_{_label(key)}"] = "true"
        port = spec.container_port or 80
        groups.append({"targets": [f"{pod.ip}:{port}"], "labels": labels})
    return groups


async def _ready(url: str, child: Child, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get() -> bool:
        try:
            with opener.open(url, timeout=1.0) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    while loop.time() < deadline:
        if child.poll() is not None:
            return False
        if await asyncio.to_thread(get):
            return True
        await asyncio.sleep(0.2)
    return False


class Telemetry:
    def __init__(
        self,
        layout: DemoLayout,
        *,
        python: str,
        log_level: str,
        env: Mapping[str, str],
        marker: str,
        say: Callable[[str], None],
    ) -> None:
        self.layout = layout
        self.python = python
        self.log_level = log_level
        self.env = env
        self.marker = marker
        self.say = say
        self.mixer: Child | None = None
        self.prometheus: Child | None = None
        self._pods_text: str | None = None

    @property
    def host(self) -> str:
        return self.layout.control_address

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{MIXER_PORTS['dashboard']}/"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{PROMETHEUS_PORT}"

    def urls(self) -> tuple[str, ...]:
        found = []
        if self.mixer is not None:
            found.append(f"{self.dashboard_url}  (service graph and traces)")
        if self.prometheus is not None:
            found.append(f"{self.prometheus_url}/graph  (Prometheus)")
        return tuple(found)

    def children(self) -> list[Child]:
        return [c for c in (self.mixer, self.prometheus) if c is not None]

    async def start(self) -> None:
        await self._start_mixer()
        if self.mixer is not None:
            await self._start_prometheus()

    async def _start_mixer(self) -> None:
        # What the sidecars send to (ALS, spans) listens where they reach the host; what a
        # user opens (metrics, dashboard) on the control address.
        report = self.layout.report_host
        addresses = {
            name: (report if name in ("grpc", "zipkin") else self.host, port)
            for name, port in MIXER_PORTS.items()
        }
        taken = busy(list(addresses.values()))
        if taken:
            self.say(f"  mixer not started: {taken[0][0]}:{taken[0][1]} is in use")
            return
        args = ["mixer", "--config-dir", str(self.layout.config_dir)]
        args += ["--mesh-config", str(self.layout.mesh_file)]
        for name, (host, port) in addresses.items():
            args += [f"--{name}-address", f"{host}:{port}"]
        if shutil.which("prometheus"):
            args += ["--prometheus-url", self.prometheus_url]
        argv = pymesh_argv(self.python, self.log_level, *args)
        log = self.layout.log_file("mixer")
        child = spawn("mixer", argv, env=self.env, log=log, marker=self.marker)
        url = f"http://{self.host}:{MIXER_PORTS['metrics']}/ready"
        if not await _ready(url, child, _READY_TIMEOUT):
            self.say(f"  mixer did not start; the mesh runs without telemetry (see {log})")
            await asyncio.to_thread(child.stop, 5.0)
            return
        self.mixer = child
        self.say(f"  mixer ready: {self.dashboard_url}")

    async def _start_prometheus(self) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            self.say("  no Prometheus (install Debian's prometheus package to get one)")
            return
        if busy([(self.host, PROMETHEUS_PORT)]):
            self.say(f"  Prometheus not started: {self.host}:{PROMETHEUS_PORT} is in use")
            return
        workdir = self.layout.run_dir / "prometheus"
        workdir.mkdir(parents=True, exist_ok=True)
        self.write_pod_targets(())
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(self.layout), sort_keys=False))
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={self.host}:{PROMETHEUS_PORT}",
            "--log.level=warn",
        ]
        log = self.layout.log_file("prometheus")
        child = spawn("prometheus", argv, env=self.env, log=log, marker=self.marker)
        if not await _ready(f"{self.prometheus_url}/-/ready", child, _READY_TIMEOUT):
            self.say(f"  Prometheus did not start (see {log})")
            await asyncio.to_thread(child.stop, 5.0)
            return
        self.prometheus = child
        self.say(f"  Prometheus ready: {self.prometheus_url}")

    def write_pod_targets(self, pods: Iterable[PodRuntime]) -> None:
        """Rewrite the pods Prometheus scrapes, when they changed (it rereads the file)."""
        path = _pods_file(self.layout)
        text = json.dumps(pod_targets(pods, self.layout.mtls), indent=1, sort_keys=True)
        if self._pods_text == text:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        self._pods_text = text

    async def stop(self) -> None:
        for child in (self.prometheus, self.mixer):
            if child is not None:
                await asyncio.to_thread(child.stop, 5.0)
        self.mixer = self.prometheus = None

    def check(self) -> None:
        """Notice a telemetry process that died (said once; the mesh goes on)."""
        for attr in ("mixer", "prometheus"):
            child = getattr(self, attr)
            if child is not None and (code := child.poll()) is not None:
                setattr(self, attr, None)
                log: Path = self.layout.log_file(attr)
                self.say(f"{attr} exited with status {code}; see {log}")
