"""What a new demo starts from: the project's Bookinfo manifests and a mesh config."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from pymesh.demo.telemetry import MIXER_PORTS

__all__ = ["SEED_FILES", "manifests_dir", "rules_dir", "seed_files", "write_mesh_config"]

#: Applied in this order when a demo starts with an empty config directory.
SEED_FILES: tuple[str, ...] = (
    "istio-ingressgateway.yaml",
    "bookinfo.yaml",
    "destination-rule-all.yaml",
    "bookinfo-gateway.yaml",
    "httpbin.yaml",
    "sleep.yaml",
)


def manifests_dir() -> Path:
    """``pymesh/samples/bookinfo/manifests`` of the installed package."""
    return Path(str(resources.files("pymesh.samples.bookinfo.manifests")))


def rules_dir() -> Path:
    """``pymesh/samples/bookinfo/rules``: the quick start's routing rules."""
    return manifests_dir().parent / "rules"


def seed_files() -> list[Path]:
    base = manifests_dir()
    return [base / name for name in SEED_FILES]


def write_mesh_config(
    path: Path, outbound_traffic_policy: str = "ALLOW_ANY", *, telemetry: str | None = None
) -> None:
    """A MeshConfig for pilot, as Istio's ``istio`` ConfigMap would hold it. With
    ``telemetry`` (mixer's host), every sidecar streams its access logs to mixer's ALS port
    and traces every request (the demo's 100%, Istio's default being 1%) to its Zipkin API."""
    mesh: dict[str, object] = {"outboundTrafficPolicy": {"mode": outbound_traffic_policy}}
    if telemetry is not None:
        mesh["defaultConfig"] = {
            "envoyAccessLogService": {"address": f"{telemetry}:{MIXER_PORTS['grpc']}"},
            "tracing": {
                "sampling": 100,
                "zipkin": {"address": f"{telemetry}:{MIXER_PORTS['zipkin']}"},
            },
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(mesh, sort_keys=False), encoding="utf-8")
