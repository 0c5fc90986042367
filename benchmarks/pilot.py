"""Pilot benchmark: N simulated sidecars on ADS, one VirtualService change, time to converge.

``python -m benchmarks.pilot --clients 100 [--clients 1000] [--changes 3]``

One ``pymesh pilot`` subprocess serves Bookinfo (``bookinfo.yaml`` + ``destination-rule-all.yaml``
from ../shared/istio-samples, or a built-in stand-in) to N grpc.aio ADS clients in this
process. Each client behaves like Envoy: CDS, then EDS for the EDS clusters, LDS, then RDS for
the route names of the listeners, ACKing every response. Then ``virtual-service-reviews-
test-v2.yaml`` is applied (and deleted, and applied...) through the admin API; for each change
we time how long until every client ACKed a new RDS version. Pilot's CPU time (utime+stime)
and peak RSS (VmHWM) come from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from benchmarks import procstat
from tests.pilot.xds.ads_client import istio_node
from tests.support.procs import ManagedProcess, free_port, wait_for_http

__all__ = ["main"]

HOST = "127.0.3.230"
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "istio-samples" / "bookinfo"
_T = "type.googleapis.com/envoy.config."
CDS, EDS = _T + "cluster.v3.Cluster", _T + "endpoint.v3.ClusterLoadAssignment"
LDS, RDS = _T + "listener.v3.Listener", _T + "route.v3.RouteConfiguration"
_HCM = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name

FALLBACK_CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {app: reviews}}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: productpage, labels: {app: productpage}}
spec: {selector: {app: productpage}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""
CHANGE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"""


class NameCache:
    """Clients get identical responses: the dependent names are parsed once per content."""

    def __init__(self) -> None:
        self._names: dict[bytes, frozenset[str]] = {}

    def dependent(self, reply: discovery_pb2.DiscoveryResponse) -> frozenset[str]:
        digest = hashlib.blake2b(digest_size=16)
        for r in reply.resources:
            digest.update(r.value)
        key = reply.type_url.encode() + digest.digest()
        found = self._names.get(key)
        if found is None:
            found = self._names[key] = frozenset(self._parse(reply))
        return found

    @staticmethod
    def _parse(reply: discovery_pb2.DiscoveryResponse) -> set[str]:
        names: set[str] = set()
        for packed in reply.resources:
            if reply.type_url == CDS:
                c = cluster_pb2.Cluster.FromString(packed.value)
                if c.type == cluster_pb2.Cluster.EDS:
                    names.add(c.eds_cluster_config.service_name or c.name)
            elif reply.type_url == LDS:
                lst = listener_pb2.Listener.FromString(packed.value)
                chains = [*lst.filter_chains, lst.default_filter_chain]
                for chain in chains:
                    for f in chain.filters:
                        if f.typed_config.type_url == _HCM:
                            hcm = hcm_pb2.HttpConnectionManager.FromString(f.typed_config.value)
                            if hcm.HasField("rds"):
                                names.add(hcm.rds.route_config_name)
        return names


@dataclass
class SimClient:
    """One simulated Envoy."""

    index: int
    node: Any
    cache: NameCache
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    rds_version: str = ""
    rds_acked_at: float = 0.0
    rds_changed: asyncio.Event = field(default_factory=asyncio.Event)
    baseline: str | None = None
    reconnects: int = 0

    async def run(self, channel: grpc.aio.Channel) -> None:
        """The stream, opened again when it fails, as Envoy does (grpcio's client sometimes
        fails a stream's first write when thousands open at once)."""
        while True:
            try:
                await self._stream(channel)
                return
            except grpc.aio.AioRpcError:
                self.reconnects += 1
                await asyncio.sleep(0.1)

    async def _stream(self, channel: grpc.aio.Channel) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        call = stub.StreamAggregatedResources()
        names: dict[str, frozenset[str]] = {CDS: frozenset()}
        first = True

        async def send(type_url: str, nonce: str = "", version: str = "") -> None:
            nonlocal first
            req = discovery_pb2.DiscoveryRequest(
                type_url=type_url, response_nonce=nonce, version_info=version,
                resource_names=sorted(names.get(type_url, ())),
            )  # fmt: skip
            if first:
                req.node.CopyFrom(self.node)
                first = False
            await call.write(req)

        await send(CDS)
        while True:
            reply = await call.read()
            if reply is grpc.aio.EOF:
                return
            t = reply.type_url
            await send(t, reply.nonce, reply.version_info)
            if t == CDS:
                eds = self.cache.dependent(reply)
                if names.get(EDS) != eds:
                    names[EDS] = eds
                    await send(EDS)
                if LDS not in names and not eds:
                    names[LDS] = frozenset()
                    await send(LDS)
            elif t == EDS and LDS not in names:
                names[LDS] = frozenset()
                await send(LDS)
            elif t == LDS:
                rds = self.cache.dependent(reply)
                if names.get(RDS) != rds:
                    names[RDS] = rds
                    await send(RDS)
            elif t == RDS:
                self.rds_version = reply.version_info
                self.rds_acked_at = time.monotonic()
                self.synced.set()
                if self.baseline is not None and reply.version_info != self.baseline:
                    self.rds_changed.set()


class PilotUnderTest:
    def __init__(self, workdir: Path) -> None:
        self.config_dir = workdir / "mesh"
        self.config_dir.mkdir()
        kube, rules = SAMPLES / "platform/kube/bookinfo.yaml", SAMPLES / "networking"
        if kube.is_file():
            shutil.copy(kube, self.config_dir)
            shutil.copy(rules / "destination-rule-all.yaml", self.config_dir)
        else:
            (self.config_dir / "bookinfo.yaml").write_text(FALLBACK_CONFIG)
        self.xds_port, self.api_port = free_port(HOST), free_port(HOST)
        pymesh = shutil.which("pymesh", path=str(Path(sys.executable).parent)) or "pymesh"
        self.proc = ManagedProcess(
            [pymesh, "--log-level=warning", "pilot", "--config-dir", str(self.config_dir),
             "--xds-address", f"{HOST}:{self.xds_port}",
             "--api-address", f"{HOST}:{self.api_port}"],
            log_path=workdir / "pilot.log", name="pilot",
        )  # fmt: skip

    def start(self) -> None:
        self.proc.start()
        wait_for_http(HOST, self.api_port, "/ready", 20, proc=self.proc)
        self.token = (self.config_dir / ".pymesh-token").read_text().strip()

    def call(self, method: str, path: str, body: str | None = None) -> Any:
        req = urllib.request.Request(
            f"http://{HOST}:{self.api_port}{path}",
            data=body.encode() if body is not None else None,
            method=method,
        )
        req.add_header("Authorization", f"Bearer {self.token}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=120) as resp:
            return json.loads(resp.read())

    @property
    def cpu(self) -> float:
        return procstat.cpu_seconds(self.proc.pid)


@dataclass
class Result:
    clients: int
    connect_s: float
    connect_cpu_s: float
    convergence: list[float] = field(default_factory=list)
    apply_s: list[float] = field(default_factory=list)
    change_cpu_s: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0


async def _quiet(pilot: PilotUnderTest, settle: float = 0.5, timeout: float = 120.0) -> None:
    """Until pilot's CPU stops moving (pushes done)."""
    deadline = time.monotonic() + timeout
    last = pilot.cpu
    while time.monotonic() < deadline:
        await asyncio.sleep(settle)
        now = pilot.cpu
        if now - last < 0.02:
            return
        last = now


async def run_one(n: int, changes: int, per_channel: int, workdir: Path) -> Result:
    pilot = PilotUnderTest(workdir)
    pilot.start()
    channels: list[grpc.aio.Channel] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        cache = NameCache()
        clients = [
            SimClient(i, istio_node(f"bench-{i}-abc-1", ip=f"10.{i // 62500}.{i // 250 % 250}."
                                    f"{i % 250 + 1}", labels={"app": "bench"}), cache)
            for i in range(n)
        ]  # fmt: skip
        cpu0, t0 = pilot.cpu, time.monotonic()
        for i, client in enumerate(clients):
            if i % per_channel == 0:
                channels.append(grpc.aio.insecure_channel(f"{HOST}:{pilot.xds_port}"))
            tasks.append(asyncio.ensure_future(client.run(channels[-1])))
        await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in clients)), 600)
        result = Result(n, time.monotonic() - t0, 0.0)
        reopened = sum(c.reconnects for c in clients)
        print(f"  synced; {reopened} client streams reopened", file=sys.stderr, flush=True)
        await _quiet(pilot)
        result.connect_cpu_s = pilot.cpu - cpu0
        for k in range(changes):
            for c in clients:
                c.baseline, c.rds_changed = c.rds_version, asyncio.Event()
            cpu1, start = pilot.cpu, time.monotonic()
            if k % 2 == 0:
                await asyncio.to_thread(pilot.call, "POST", "/apply", CHANGE)
            else:
                await asyncio.to_thread(pilot.call, "DELETE", "/resources/vs/default/reviews")
            result.apply_s.append(time.monotonic() - start)
            await asyncio.wait_for(asyncio.gather(*(c.rds_changed.wait() for c in clients)), 600)
            result.convergence.append(max(c.rds_acked_at for c in clients) - start)
            await _quiet(pilot)
            result.change_cpu_s.append(pilot.cpu - cpu1)
        result.peak_rss_mb = procstat.peak_rss_bytes(pilot.proc.pid) / 1e6
        return result
    finally:
        for t in tasks:
            t.cancel()
        for ch in channels:
            await ch.close()
        pilot.proc.stop()


def _med(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def table(results: list[Result]) -> str:
    head = (
        "| clients | connect + initial sync (s) | pilot CPU, connect (s) | apply answered (s) "
        "| apply -> all ACKed new RDS (s) | pilot CPU per change (s) | pilot peak RSS (MB) |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    rows = [
        f"| {r.clients} | {r.connect_s:.2f} | {r.connect_cpu_s:.2f} | {_med(r.apply_s)} "
        f"| {_med(r.convergence)} | {_med(r.change_cpu_s)} | {r.peak_rss_mb:.0f} |"
        for r in results
    ]
    return "\n".join([head, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pilot", description=__doc__)
    parser.add_argument("--clients", type=int, action="append", help="repeatable; 100 1000")
    parser.add_argument("--changes", type=int, default=3, help="config changes per run")
    parser.add_argument("--per-channel", type=int, default=25, help="ADS streams per channel")
    args = parser.parse_args(argv)
    results = []
    for n in args.clients or [100]:
        with tempfile.TemporaryDirectory(prefix="pymesh-bench-pilot-") as tmp:
            print(f"running {n} clients...", file=sys.stderr, flush=True)
            results.append(asyncio.run(run_one(n, args.changes, args.per_channel, Path(tmp))))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
