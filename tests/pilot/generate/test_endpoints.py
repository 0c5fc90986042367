from __future__ import annotations

import dataclasses
from typing import Any

from pilot.generate import CLUSTER_TYPE, ENDPOINT_TYPE
from tests.pilot.generate._mesh import BOOKINFO, build_mesh

SVC = ".default.svc.cluster.local"


def addresses(cla: dict[str, Any]) -> list[str]:
    return [
        f"{sa['address']}:{sa['port_value']}"
        for group in cla.get("endpoints", ())
        for lb in group["lb_endpoints"]
        for sa in [lb["endpoint"]["address"]["socket_address"]]
    ]


def test_one_assignment_per_eds_cluster_filtered_by_subset() -> None:
    mesh = build_mesh(BOOKINFO, "bookinfo/networking/destination-rule-all.yaml")
    eds = {
        n for n, c in mesh.by_name("productpage-v1", CLUSTER_TYPE).items() if c.get("type") == "EDS"
    }
    assignments = mesh.by_name("productpage-v1", ENDPOINT_TYPE)
    assert set(assignments) == eds
    ips = {name: mesh.nodes[name].ip for name in ("reviews-v1", "reviews-v2", "reviews-v3")}
    assert addresses(assignments[f"outbound|9080||reviews{SVC}"]) == [
        f"{ip}:9080" for ip in ips.values()
    ]
    assert addresses(assignments[f"outbound|9080|v2|reviews{SVC}"]) == [f"{ips['reviews-v2']}:9080"]
    # A subset no workload carries is an empty assignment, not a missing one.
    assert assignments[f"outbound|9080|v2-mysql|ratings{SVC}"] == {
        "cluster_name": f"outbound|9080|v2-mysql|ratings{SVC}"
    }
    lb = assignments[f"outbound|9080|v2|reviews{SVC}"]["endpoints"][0]["lb_endpoints"][0]
    assert lb["health_status"] == "HEALTHY"


def test_process_mode_endpoints_are_the_sidecars_inbound_listeners() -> None:
    mesh = build_mesh("features.yaml", mode="process")
    cla = mesh.by_name("web-v1", ENDPOINT_TYPE)["outbound|8080||api.shop.svc.cluster.local"]
    assert addresses(cla) == [
        f"{mesh.nodes['api-v1'].ip}:15006",
        f"{mesh.nodes['api-v2'].ip}:15006",
    ]


def test_service_entry_endpoints_locality_and_weight() -> None:
    mesh = build_mesh("egress.yaml", "features.yaml")
    cla = mesh.by_name("web-v1", ENDPOINT_TYPE)["outbound|8080||legacy.internal"]
    assert cla["endpoints"] == [
        {
            "lb_endpoints": [
                {
                    "endpoint": {
                        "address": {"socket_address": {"address": "10.10.1.2", "port_value": 28080}}
                    },
                    "health_status": "HEALTHY",
                    "load_balancing_weight": 3,
                }
            ]
        },
        {
            "locality": {"region": "us-east", "zone": "zone-a"},
            "lb_endpoints": [
                {
                    "endpoint": {
                        "address": {"socket_address": {"address": "10.10.1.1", "port_value": 18080}}
                    },
                    "health_status": "HEALTHY",
                }
            ],
        },
    ]
    # DNS clusters carry their endpoints inline, not over EDS.
    assert "outbound|80||httpbin.org" not in mesh.by_name("web-v1", ENDPOINT_TYPE)


def test_process_mode_grpc_and_tcp_endpoints_and_their_mtls() -> None:
    """Process mode, grpc-echo's ports: HTTP goes to the sidecar's inbound listener (15006),
    gRPC and TCP to the pod's own port. Auto mTLS marks an endpoint only where a sidecar
    answers: 15006, and the gRPC port the demo moved behind the sidecar (``app_ports``), never
    the TCP port the app itself holds."""
    plain = build_mesh("grpc-echo/grpc-echo.yaml", mode="process", mtls=True)
    moved = {
        name: dataclasses.replace(plain.nodes[name], app_ports={17070: 37070})
        for name in ("echo-v1", "echo-v2")
    }
    mesh = build_mesh("grpc-echo/grpc-echo.yaml", mode="process", mtls=True, extra=moved)
    assignments = mesh.by_name("echo-v1", ENDPOINT_TYPE)
    ip = mesh.nodes["echo-v2"].ip

    def endpoint(port: int) -> tuple[str, bool]:
        cla = assignments[f"outbound|{port}||echo.echo-grpc.svc.cluster.local"]
        [(socket, lb)] = [
            (sa, lb)
            for group in cla["endpoints"]
            for lb in group["lb_endpoints"]
            for sa in [lb["endpoint"]["address"]["socket_address"]]
            if sa["address"] == ip
        ]
        return f"{socket['address']}:{socket['port_value']}", "metadata" in lb

    assert endpoint(80) == (f"{ip}:15006", True)
    assert endpoint(7070) == (f"{ip}:17070", True)
    assert endpoint(9090) == (f"{ip}:19090", False)
