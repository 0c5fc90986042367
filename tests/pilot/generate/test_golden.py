"""Golden files: the complete xDS output for a few proxies, as ``istioctl proxy-config -o
json`` would show it. A change to the generators shows up here as a reviewable diff.

Regenerate after an intended change with ``PYMESH_UPDATE_GOLDEN=1 pytest <this file>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pilot.generate import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE
from pilot.model import MeshConfig
from tests.pilot.generate._mesh import BOOKINFO, Mesh, build_mesh, credentials

GOLDEN = Path(__file__).resolve().parent / "golden"
NET = "bookinfo/networking/"
TYPES = {
    "listeners": LISTENER_TYPE,
    "routes": ROUTE_TYPE,
    "clusters": CLUSTER_TYPE,
    "endpoints": ENDPOINT_TYPE,
    "secrets": SECRET_TYPE,
}
BOOKINFO_JASON = (
    BOOKINFO,
    NET + "destination-rule-all.yaml",
    NET + "virtual-service-reviews-jason-v2-v3.yaml",
)

CASES: dict[str, tuple[Callable[[], Mesh], str]] = {
    "bookinfo-productpage": (lambda: build_mesh(*BOOKINFO_JASON), "productpage-v1"),
    "bookinfo-productpage-process": (
        lambda: build_mesh(*BOOKINFO_JASON, mode="process"),
        "productpage-v1",
    ),
    "bookinfo-gateway": (
        lambda: build_mesh(
            BOOKINFO, NET + "destination-rule-all.yaml", NET + "bookinfo-gateway.yaml"
        ),
        "gateway",
    ),
    "features-web": (lambda: build_mesh("features.yaml"), "web-v1"),
    "features-api-process": (lambda: build_mesh("features.yaml", mode="process"), "api-v1"),
    "egress-registry-only": (
        lambda: build_mesh(
            "egress.yaml", "features.yaml", mesh=MeshConfig(outbound_traffic_policy="REGISTRY_ONLY")
        ),
        "web-v1",
    ),
    "gateway-tls": (
        lambda: build_mesh("gateway-tls.yaml", creds=credentials("gateway-tls.yaml")),
        "gateway",
    ),
}


@pytest.mark.parametrize("kind", sorted(TYPES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, kind: str) -> None:
    factory, node = CASES[case]
    mesh = factory()
    actual = json.dumps(mesh.dicts(node, TYPES[kind]), indent=1) + "\n"
    path = GOLDEN / case / f"{kind}.json"
    if os.environ.get("PYMESH_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
    assert path.exists(), f"{path} missing: run with PYMESH_UPDATE_GOLDEN=1"
    assert json.loads(actual) == json.loads(path.read_text()), (
        f"{case} {kind} differs from {path}; if intended, regenerate with PYMESH_UPDATE_GOLDEN=1"
    )
