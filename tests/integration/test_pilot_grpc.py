"""grpcio's own proxyless xDS client against ``pymesh pilot``: a channel to
``xds:///greeter:50051`` resolves through pilot (LDS api_listener, RDS, CDS, EDS) and reaches
the gRPC test servers, following the VirtualService's header match (127.0.3.200-209)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.integration.pilot_harness import PilotProcess
from tests.support.waiting import wait_until

PILOT = "127.0.3.200"
GREETER = {"v1": "127.0.3.201", "v2": "127.0.3.202"}
CLIENT_IP = "127.0.3.203"
PORT = 50051

CONFIG = f"""\
apiVersion: v1
kind: Service
metadata:
  name: greeter
  labels: {{app: greeter}}
spec:
  selector: {{app: greeter}}
  ports:
  - name: grpc
    port: {PORT}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: greeter-v1}}
spec:
  address: {GREETER["v1"]}
  labels: {{app: greeter, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: greeter-v2}}
spec:
  address: {GREETER["v2"]}
  labels: {{app: greeter, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: greeter}}
spec:
  host: greeter
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""

ROUTING = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - match:
    - headers:
        x-user: {exact: jason}
    route:
    - destination: {host: greeter, subset: v2}
  - route:
    - destination: {host: greeter, subset: v1}
"""

# Runs in its own process: grpc's xDS client is a process-wide singleton configured from
# GRPC_XDS_BOOTSTRAP, which must not leak into (or from) the test process.
CLIENT = """
import json, sys, grpc
target = sys.argv[1]
with grpc.insecure_channel(target) as channel:
    call = channel.unary_unary("/pymesh.test.Greeter/Hello")
    out = {"plain": [], "jason": []}
    for _ in range(8):
        out["plain"].append(call(b"hi", timeout=15).decode())
        out["jason"].append(call(b"hi", timeout=15, metadata=[("x-user", "jason")]).decode())
    print(json.dumps(out), flush=True)
    sys.stdin.readline()
"""


def _bootstrap(pilot: PilotProcess) -> dict[str, object]:
    node_id = f"sidecar~{CLIENT_IP}~grpc-client-1.default~default.svc.cluster.local"
    return {
        "xds_servers": [
            {
                "server_uri": f"{pilot.host}:{pilot.xds_port}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {
            "id": node_id,
            "cluster": "grpc-client.default",
            "metadata": {
                "GENERATOR": "grpc",
                "NAMESPACE": "default",
                "INSTANCE_IPS": CLIENT_IP,
                "LABELS": {"app": "grpc-client"},
            },
        },
    }


@pytest.fixture
async def greeters() -> AsyncIterator[None]:
    servers = []
    for version, host in GREETER.items():

        def hello(request: bytes, context: object, version: str = version) -> bytes:
            return f"greeter-{version}".encode()

        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "pymesh.test.Greeter", {"Hello": grpc.unary_unary_rpc_method_handler(hello)}
        )
        server.add_generic_rpc_handlers([handler])
        assert server.add_insecure_port(f"{host}:{PORT}") == PORT
        await server.start()
        servers.append(server)
    yield
    for server in servers:
        await server.stop(0)


async def _synced_status(pilot: PilotProcess) -> dict:
    """``/proxies`` once the client has ACKed all four types, or as it is after 30 s (for
    the assertion to show). Its calls can succeed before pilot has read its last ACK."""

    async def synced() -> dict | None:
        status: dict = await pilot.aapi("/proxies")
        mine = [p for p in status["proxies"] if CLIENT_IP in p["id"]]
        types = mine[0]["types"] if mine else {}
        done = all(types.get(t, {}).get("status") == "SYNCED" for t in ("LDS", "RDS", "CDS", "EDS"))
        return status if done else None

    with contextlib.suppress(TimeoutError):
        found: dict = await wait_until(synced, "the gRPC client ACKed every type", timeout=30)
        return found
    last: dict = await pilot.aapi("/proxies")
    return last


async def _run_client(
    pilot: PilotProcess, workdir: Path, target: str, *, synced: bool = False
) -> tuple[dict, dict]:
    """The client's results and pilot's ``/proxies`` while it is connected (once it has
    ACKed everything, with ``synced``)."""
    bootstrap = workdir / "grpc-bootstrap.json"
    bootstrap.write_text(json.dumps(_bootstrap(pilot)))
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap), "GRPC_VERBOSITY": "ERROR"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, target,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            err = await asyncio.wait_for(proc.stderr.read(), 5)
            raise AssertionError(f"gRPC client failed:\n{err.decode()[-3000:]}")
        status = await (_synced_status(pilot) if synced else pilot.aapi("/proxies"))
        proc.stdin.write(b"\n")
        await proc.stdin.drain()
        await asyncio.wait_for(proc.wait(), 10)
        return json.loads(line), status
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.timeout(90)
async def test_grpc_proxyless_client_resolves_through_pilot(tmp_path: Path, greeters: None) -> None:
    config_dir = tmp_path / "mesh"
    config_dir.mkdir()
    (config_dir / "greeter.yaml").write_text(CONFIG)
    pilot = PilotProcess(PILOT, config_dir, tmp_path / "logs")
    try:
        await pilot.start()
        results, status = await _run_client(pilot, tmp_path, f"xds:///greeter:{PORT}", synced=True)
        # No VirtualService yet: round robin over both (gRPC's picker may start on one
        # endpoint while the other subchannel connects, hence 16 calls).
        assert set(results["plain"] + results["jason"]) == {"greeter-v1", "greeter-v2"}
        [proxy] = [p for p in status["proxies"] if CLIENT_IP in p["id"]]
        types = proxy["types"]
        assert types["LDS"]["subscribed"] == [f"greeter:{PORT}"]
        for name in ("LDS", "RDS", "CDS", "EDS"):
            assert types[name]["status"] == "SYNCED", (name, types[name])

        applied = await pilot.cli("apply", "-f", "-", stdin=ROUTING)
        assert applied.rc == 0, applied.err
        results, _ = await _run_client(
            pilot, tmp_path, f"xds:///greeter.default.svc.cluster.local:{PORT}"
        )
        assert results == {"plain": ["greeter-v1"] * 8, "jason": ["greeter-v2"] * 8}, results
    finally:
        pilot.stop()
