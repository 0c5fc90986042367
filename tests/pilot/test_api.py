"""Pilot's admin API, in process, over real HTTP on 127.0.3.160 (ADS clients on the same
address): auth, apply/delete semantics, resources, proxies, proxy config, analyze, explain."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pilot.server import Pilot, PilotSettings
from pilot.xds import DebounceConfig
from tests.pilot.xds.ads_client import AdsClient, istio_node

HOST = "127.0.3.160"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {app: reviews}}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""
VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
"""


class Api:
    def __init__(self, pilot: Pilot, session: aiohttp.ClientSession, token: str) -> None:
        self.pilot = pilot
        self.session = session
        self.base = f"http://{HOST}:{pilot.api_port}"
        self.auth = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: str | None = None, **kw: Any) -> Any:
        headers = kw.pop("headers", self.auth)
        async with self.session.request(
            method, self.base + path, data=body, headers=headers, **kw
        ) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    monkeypatch.delenv("PYMESH_TOKEN", raising=False)
    (tmp_path / "base.yaml").write_text(SERVICE)
    pilot = Pilot(
        PilotSettings(
            config_dir=tmp_path,
            xds_address=f"{HOST}:0",
            api_address=f"{HOST}:0",
            debounce=DebounceConfig(quiet=0.01, max_delay=0.05),
            poll_interval=3600,
        )
    )
    await pilot.start()
    token = (tmp_path / ".pymesh-token").read_text().strip()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield Api(pilot, session, token)
    await pilot.stop()


async def test_token_file_and_authentication(api: Api, tmp_path: Path) -> None:
    token_file = tmp_path / ".pymesh-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(token_file.read_text().strip()) >= 32
    assert (await api.call("GET", "/resources", headers={}))[0] == 401
    bad = {"Authorization": "Bearer nope"}
    status, body = await api.call("GET", "/resources", headers=bad)
    assert status == 401 and body == {"error": "missing or wrong bearer token"}
    async with api.session.get(api.base + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert 'pilot_xds_pushes{type="cds"} 0' in text and "pilot_xds 0" in text


async def test_token_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYMESH_TOKEN", "from-env")
    pilot = Pilot(
        PilotSettings(config_dir=tmp_path, xds_address=f"{HOST}:0", api_address=f"{HOST}:0")
    )
    await pilot.start()
    try:
        url = f"http://{HOST}:{pilot.api_port}/resources"
        async with (
            aiohttp.ClientSession() as s,
            s.get(url, headers={"Authorization": "Bearer from-env"}) as resp,
        ):
            assert resp.status == 200
        assert not (tmp_path / ".pymesh-token").exists()
    finally:
        await pilot.stop()


async def test_apply_stores_builds_and_is_idempotent(api: Api, tmp_path: Path) -> None:
    before = api.pilot.ctx.version
    status, body = await api.call("POST", "/apply", VS.format(subset="v1"))
    assert status == 200, body
    [change] = body["changes"]
    assert change["action"] == "created"
    stored = tmp_path / "VirtualService" / "default" / "reviews.yaml"
    assert change["path"] == str(stored) and stored.is_file()
    # Answered only once the new PushContext is built.
    assert api.pilot.ctx.version != before and body["version"] == api.pilot.ctx.version
    assert api.pilot.snapshot.get("VirtualService", "default", "reviews") is not None
    status, body = await api.call("POST", "/apply", VS.format(subset="v1"))
    assert body["changes"][0]["action"] == "unchanged"
    status, body = await api.call("POST", "/apply", VS.format(subset="v2"))
    assert body["changes"][0]["action"] == "configured"


async def test_invalid_apply_is_400_and_changes_nothing(api: Api, tmp_path: Path) -> None:
    files = sorted(p.name for p in tmp_path.rglob("*"))
    version = api.pilot.ctx.version
    status, body = await api.call(
        "POST", "/apply?source=x.yaml", VS.format(subset="v1") + "      weight: -3\n"
    )
    assert status == 400
    assert body["error"].startswith("x.yaml: document 0: spec.http[0].route[0].weight")
    status, body = await api.call("POST", "/apply", b"\xff\xfe".decode("latin-1"))
    assert status == 400
    assert sorted(p.name for p in tmp_path.rglob("*")) == files
    assert api.pilot.ctx.version == version


async def test_resources_and_delete(api: Api) -> None:
    await api.call("POST", "/apply", VS.format(subset="v1"))
    status, body = await api.call("GET", "/resources?kind=vs")
    [item] = body["items"]
    assert item["kind"] == "VirtualService" and item["metadata"]["namespace"] == "default"
    assert item["spec"]["hosts"] == ["reviews"]
    status, body = await api.call("GET", "/resources?kind=destinationrules&name=reviews")
    assert status == 200 and body["items"][0]["spec"]["host"] == "reviews"
    assert (await api.call("GET", "/resources?kind=vs&name=nope"))[0] == 404
    assert (await api.call("GET", "/resources?kind=widgets"))[0] == 400
    # Deleting: applied → gone; the user's own file → refused; unknown → 404.
    status, body = await api.call("DELETE", "/resources/vs/default/reviews")
    assert status == 200 and body["changes"][0]["action"] == "deleted"
    assert api.pilot.snapshot.get("VirtualService", "default", "reviews") is None
    status, body = await api.call("DELETE", "/resources/dr/default/reviews")
    assert status == 409 and "base.yaml" in body["error"]
    status, body = await api.call("DELETE", "/resources/vs/default/reviews")
    assert (
        status == 404 and body["error"] == 'VirtualService "reviews" not found in namespace default'
    )
    status, body = await api.call("DELETE", "/resources", VS.format(subset="v1"))
    assert status == 404


async def test_proxies_status_config_and_explain(api: Api) -> None:
    node = istio_node(
        "productpage-v1-abc-1", ip="127.0.3.161", labels={"app": "productpage"},
        extra={"PYMESH_MODE": "process"},
    )  # fmt: skip
    await api.call("POST", "/apply", VS.format(subset="v2"))
    async with AdsClient(f"{HOST}:{api.pilot.xds_port}", node) as client:
        await client.send(CLUSTER_TYPE)
        clusters = await client.recv()
        await client.ack(clusters)
        await client.send(LISTENER_TYPE)
        await client.nack(await client.recv(), "virtualOutbound: not today")
        # Pilot handles a stream's requests in order: once the endpoints request that follows
        # the NACK is answered, the NACK has been recorded.
        await client.send(ENDPOINT_TYPE, ["outbound|9080|v2|reviews.default.svc.cluster.local"])
        await client.recv()
        status, body = await api.call("GET", "/proxies")
        [proxy] = body["proxies"]
        assert proxy["id"] == node.id
        assert proxy["types"]["CDS"]["status"] == "SYNCED"
        assert proxy["types"]["LDS"]["status"] == "STALE"
        assert proxy["errors"] == {"LDS": "virtualOutbound: not today"}
        assert proxy["types"]["RDS"] == {"status": "NOT SENT"}

        for wanted in (node.id, "productpage-v1-abc-1.default", "127.0.3.161"):
            status, body = await api.call("GET", f"/proxies/{wanted}/config/clusters")
            assert status == 200, body
            names = {c["name"] for c in body["resources"]}
            assert "outbound|9080|v2|reviews.default.svc.cluster.local" in names
        status, body = await api.call("GET", "/proxies/ghost/config/clusters")
        assert status == 404 and "not connected" in body["error"]
        status, body = await api.call("GET", f"/proxies/{node.id}/config/bogus")
        assert status == 400

        status, body = await api.call(
            "GET", "/explain",
            params={"source": "productpage-v1-abc-1", "url": "http://reviews:9080/",
                    "header": "end-user: jason"},
        )  # fmt: skip
        assert status == 200, body
        explanation = body["explanation"]
        assert explanation["virtual_service"] == "default/reviews"
        assert explanation["clusters"][0]["name"].startswith("outbound|9080|v2|reviews")


async def test_analyze_reports_findings(api: Api) -> None:
    await api.call("POST", "/apply", VS.format(subset="v9"))
    status, body = await api.call("GET", "/analyze")
    assert status == 200
    codes = {f["code"] for f in body["findings"]}
    assert "IST0101" in codes
