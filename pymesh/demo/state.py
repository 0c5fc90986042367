"""The state file a running demo keeps in its run directory (``state.json``).

The supervisor rewrites it (atomically) whenever something changes; ``pymesh demo status``,
``pymesh demo up`` and ``pymesh exec`` only read it, so they work without talking to the
supervisor, and ``pymesh demo down`` still knows every pid when the supervisor is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoState", "PodState", "ProcessState", "read_state", "write_state"]

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class ProcessState:
    pid: int
    log: str
    running: bool = True
    exit_code: int | None = None
    #: wall-clock start (for kubectl's AGE)
    started_at: float = 0.0

    @classmethod
    def from_json(cls, data: Any) -> ProcessState | None:
        if not isinstance(data, dict):
            return None
        return cls(
            pid=int(data.get("pid", 0)),
            log=str(data.get("log", "")),
            running=bool(data.get("running", False)),
            exit_code=data.get("exit_code"),
            started_at=float(data.get("started_at", 0.0)),
        )

    @property
    def summary(self) -> str:
        if self.running:
            return str(self.pid)
        return f"exited({self.exit_code})" if self.exit_code is not None else "stopped"


@dataclass(frozen=True, slots=True)
class PodState:
    """One pod. ``sync`` is the proxy's state in pilot (``SYNCED``, ``STALE``, ``NACK``,
    ``NOT CONNECTED``); ``ready`` is the whole pod: app listening and proxy synced."""

    name: str
    namespace: str
    ip: str
    role: str
    node_id: str
    version: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str = "default"
    image: str = ""
    port: int | None = None
    app: ProcessState | None = None
    proxy: ProcessState | None = None
    app_ready: bool = False
    sync: str = "NOT CONNECTED"
    sync_detail: str = ""
    warning: str = ""
    #: ``Deployment/NAME`` for a Deployment's pod, "" for a bare Pod
    owner: str = ""
    #: the name of the app's container (``kubectl exec -c``)
    container: str = ""
    #: netns mode: the pod's network namespace (``ip netns exec`` it)
    netns: str = ""
    #: False in a namespace labelled ``istio-injection=disabled`` (no proxy, no identity)
    sidecar: bool = True

    @property
    def key(self) -> str:
        return f"{self.name}.{self.namespace}"

    @property
    def ready(self) -> bool:
        app_ok = self.app_ready if self.role == "app" and self.port is not None else True
        return app_ok and (self.sync == "SYNCED" or not self.sidecar)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PodState:
        return cls(
            name=str(data["name"]),
            namespace=str(data["namespace"]),
            ip=str(data["ip"]),
            role=str(data.get("role", "app")),
            node_id=str(data.get("node_id", "")),
            version=str(data.get("version", "")),
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            service_account=str(data.get("service_account", "default")),
            image=str(data.get("image", "")),
            port=data.get("port"),
            app=ProcessState.from_json(data.get("app")),
            proxy=ProcessState.from_json(data.get("proxy")),
            app_ready=bool(data.get("app_ready", False)),
            sync=str(data.get("sync", "NOT CONNECTED")),
            sync_detail=str(data.get("sync_detail", "")),
            warning=str(data.get("warning", "")),
            owner=str(data.get("owner", "")),
            container=str(data.get("container", "")),
            netns=str(data.get("netns", "")),
            sidecar=bool(data.get("sidecar", True)),
        )


@dataclass(frozen=True, slots=True)
class DemoState:
    """``phase``: ``starting`` → ``running`` → ``stopping`` → ``stopped`` (or ``failed``,
    with ``message``)."""

    run_dir: str
    supervisor_pid: int
    phase: str
    control_address: str
    pilot_xds: str
    pilot_api: str
    pod_addresses: str = ""
    pilot: ProcessState | None = None
    pilot_ready: bool = False
    pods: tuple[PodState, ...] = ()
    urls: tuple[str, ...] = ()
    message: str = ""
    updated_at: float = 0.0
    #: netns mode: what its namespaces, veths and bridge are named with, and their subnet
    netns_prefix: str = ""
    netns_subnet: str = ""
    #: ``host:port`` of the service proxy, where pods without a sidecar reach Services
    service_proxy: str = ""

    def pod(self, name: str) -> PodState | None:
        """A pod by ``name`` or ``name.namespace``; a bare name must be unambiguous."""
        exact = [p for p in self.pods if p.key == name]
        if exact:
            return exact[0]
        matches = [p for p in self.pods if p.name == name]
        return matches[0] if len(matches) == 1 else None

    @property
    def ready(self) -> bool:
        return self.pilot_ready and bool(self.pods) and all(p.ready for p in self.pods)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = STATE_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DemoState:
        return cls(
            run_dir=str(data["run_dir"]),
            supervisor_pid=int(data["supervisor_pid"]),
            phase=str(data["phase"]),
            control_address=str(data.get("control_address", "")),
            pilot_xds=str(data.get("pilot_xds", "")),
            pilot_api=str(data.get("pilot_api", "")),
            pod_addresses=str(data.get("pod_addresses", "")),
            pilot=ProcessState.from_json(data.get("pilot")),
            pilot_ready=bool(data.get("pilot_ready", False)),
            pods=tuple(PodState.from_json(p) for p in data.get("pods") or ()),
            urls=tuple(str(u) for u in data.get("urls") or ()),
            message=str(data.get("message", "")),
            updated_at=float(data.get("updated_at", 0.0)),
            netns_prefix=str(data.get("netns_prefix", "")),
            netns_subnet=str(data.get("netns_subnet", "")),
            service_proxy=str(data.get("service_proxy", "")),
        )


def write_state(path: Path, state: DemoState) -> None:
    """Replace ``path`` atomically: readers see the old or the new state, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".state.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state.to_json(), f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_state(path: Path) -> DemoState | None:
    """The state in ``path``; None when there is none (or it cannot be read)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return DemoState.from_json(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None
