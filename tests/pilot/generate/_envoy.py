"""Generated resources as one static Envoy bootstrap, for ``envoy --mode validate``.

Route configurations are inlined where the HCMs name them (with ``validate_clusters`` on, so
Envoy also checks every cluster a route names exists), each ClusterLoadAssignment becomes a
STATIC cluster of its own (EDS has no static form), and an ``xds-grpc`` cluster backs ADS.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import zlib
from pathlib import Path
from typing import Any

from pilot.generate import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE
from tests.pilot.generate._mesh import Mesh
from tests.support.envoy import sds_cluster

_XDS_CLUSTER = {
    "name": "xds-grpc",
    "type": "STATIC",
    "typed_extension_protocol_options": {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    },
    "load_assignment": {
        "cluster_name": "xds-grpc",
        "endpoints": [
            {
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {
                                "socket_address": {"address": "127.0.0.1", "port_value": 15010}
                            }
                        }
                    }
                ]
            }
        ],
    },
}


def _inline_routes(value: Any, routes: dict[str, dict[str, Any]], missing: list[str]) -> None:
    if isinstance(value, dict):
        rds = value.get("rds")
        if isinstance(rds, dict) and "route_config_name" in rds:
            name = rds["route_config_name"]
            if name not in routes:
                missing.append(name)
                return
            config = copy.deepcopy(routes[name])
            config["validate_clusters"] = True
            del value["rds"]
            value["route_config"] = config
        for item in value.values():
            _inline_routes(item, routes, missing)
    elif isinstance(value, list):
        for item in value:
            _inline_routes(item, routes, missing)


def static_bootstrap(mesh: Mesh, node: str) -> dict[str, Any]:
    proxy = mesh.nodes[node]
    routes = {r["name"]: r for r in mesh.dicts(node, ROUTE_TYPE)}
    listeners = mesh.dicts(node, LISTENER_TYPE)
    missing: list[str] = []
    _inline_routes(listeners, routes, missing)
    assert not missing, f"listeners name route configurations RDS does not have: {missing}"
    clusters = mesh.dicts(node, CLUSTER_TYPE)
    for cla in mesh.dicts(node, ENDPOINT_TYPE):
        clusters.append(
            {"name": "eds-check|" + cla["cluster_name"], "type": "STATIC", "load_assignment": cla}
        )
    clusters.append(copy.deepcopy(_XDS_CLUSTER))
    clusters.append(sds_cluster("./var/run/secrets/workload-spiffe-uds/socket"))
    return {
        "node": {"id": proxy.id, "cluster": proxy.workload_name or "pymesh"},
        "static_resources": {
            "listeners": listeners,
            "clusters": clusters,
            "secrets": mesh.dicts(node, SECRET_TYPE),
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            }
        },
    }


def envoy_validate(envoy: str, bootstrap: dict[str, Any], workdir: Path) -> tuple[bool, str]:
    """Run ``envoy --mode validate``; (ok, output)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "bootstrap.json"
    path.write_text(json.dumps(bootstrap, indent=1))
    # A base id of its own: validate mode still claims the shared-memory region of its id.
    base_id = 1000 + zlib.crc32(f"{os.getpid()}/{workdir}".encode()) % 60000
    proc = subprocess.run(
        [
            envoy,
            "--mode",
            "validate",
            "-c",
            str(path),
            "--base-id",
            str(base_id),
            "-l",
            "error",
            "--disable-hot-restart",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode == 0, proc.stdout + proc.stderr
