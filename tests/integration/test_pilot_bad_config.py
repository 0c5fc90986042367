"""Bad configuration never reaches the mesh: ``pymesh apply`` refuses it with the loader's
message, nothing is written, and traffic keeps flowing as before; a broken file dropped into
the config directory behind pilot's back is logged and ignored (127.0.3.210-225: each test
and proxy kind its own four addresses, since pytest-xdist may run them at the same time)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.pilot_harness import (
    SAMPLES,
    PilotProcess,
    node_id,
    register_pod,
    sidecar_bootstrap,
    start_proxy,
    upstream_of,
    via_sidecar,
)
from tests.support.envoy import ProxyProcess
from tests.support.upstream import Upstream

_TESTS = (
    "test_apply_refuses_bad_config_and_the_mesh_is_unaffected",
    "test_a_broken_file_in_the_config_dir_keeps_the_last_good_config",
)


def _addresses(test: str, kind: str) -> tuple[str, str, str, str]:
    """(pilot, reviews v1, reviews v2, client pod) for one test and proxy kind."""
    base = 210 + 4 * (2 * _TESTS.index(test) + ("envoy", "pymesh").index(kind))
    return tuple(f"127.0.3.{base + i}" for i in range(4))  # type: ignore[return-value]


NETWORKING = SAMPLES / "bookinfo" / "networking"
BOOKINFO = SAMPLES / "bookinfo" / "platform" / "kube" / "bookinfo.yaml"

pytestmark = pytest.mark.skipif(not BOOKINFO.is_file(), reason=f"no Istio samples in {SAMPLES}")

_HEAD = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n"

BAD = {
    "broken-yaml": (
        _HEAD + "spec:\n  hosts: [reviews\n  http:\n  - route: []\n",
        "invalid YAML",
    ),
    "unknown-field": (
        _HEAD + "spec:\n  hosts: [reviews]\n  http:\n  - route:\n"
        "    - destination: {host: reviews, subset: v2}\n      wieght: 100\n",
        "unknown field 'wieght'",
    ),
    "negative-weight": (
        _HEAD + "spec:\n  hosts: [reviews]\n  http:\n  - route:\n"
        "    - destination: {host: reviews, subset: v2}\n      weight: -10\n"
        "    - destination: {host: reviews, subset: v1}\n      weight: 110\n",
        "must not be negative",
    ),
    "weights-sum-to-zero": (
        _HEAD + "spec:\n  hosts: [reviews]\n  http:\n  - route:\n"
        "    - destination: {host: reviews, subset: v2}\n      weight: 0\n"
        "    - destination: {host: reviews, subset: v1}\n      weight: 0\n",
        "total destination weight is 0",
    ),
    "missing-required-field": (
        _HEAD + "spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - weight: 100\n",
        "required field is missing",
    ),
}


class Setup:
    def __init__(self, pilot: PilotProcess, ip: str, proxy: ProxyProcess) -> None:
        self.pilot, self.ip, self.proxy = pilot, ip, proxy

    async def routes_as_before(self) -> None:
        for _ in range(3):
            jason = await via_sidecar(self.ip, "reviews:9080", "/", [("end-user", "jason")])
            other = await via_sidecar(self.ip, "reviews:9080", "/")
            assert upstream_of(jason) == "reviews-v2", jason
            assert upstream_of(other) == "reviews-v1", other


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
async def setup(
    tmp_path: Path, proxy_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[Setup]:
    pilot_ip, reviews_v1, reviews_v2, ip = _addresses(request.function.__name__, proxy_kind)
    config_dir = tmp_path / "mesh"
    config_dir.mkdir()
    for f in (
        BOOKINFO,
        NETWORKING / "destination-rule-all.yaml",
        NETWORKING / "virtual-service-reviews-test-v2.yaml",
    ):
        shutil.copy(f, config_dir / f.name)
    pilot = PilotProcess(pilot_ip, config_dir, tmp_path / "logs")
    pod = f"productpage-v1-6b746f74dc-{proxy_kind[0]}9"
    clients = []
    proxy = None
    async with (
        Upstream(reviews_v1, 9080, name="reviews-v1"),
        Upstream(reviews_v2, 9080, name="reviews-v2"),
    ):
        try:
            await pilot.start()
            for name, address, version in (
                ("reviews-v1-5c6f4d9c7-a9", reviews_v1, "v1"),
                ("reviews-v2-7b5d8f6c4-b9", reviews_v2, "v2"),
            ):
                labels = {"app": "reviews", "version": version}
                clients.append(await register_pod(pilot.xds, name, address, labels))
            bootstrap = sidecar_bootstrap(pod, ip, pilot.xds, labels={"app": "productpage"})
            proxy = await start_proxy(proxy_kind, bootstrap, tmp_path / "proxy", pod)
            await pilot.wait_synced([node_id(pod, ip)])
            yield Setup(pilot, ip, proxy)
        finally:
            if proxy is not None:
                await proxy.astop()
            for c in clients:
                await c.close()
            pilot.stop()


@pytest.mark.timeout(120)
async def test_apply_refuses_bad_config_and_the_mesh_is_unaffected(setup: Setup) -> None:
    pilot = setup.pilot
    await setup.routes_as_before()
    files = _files(pilot.config_dir)
    version = (await pilot.aapi("/resources"))["version"]
    for case, (text, expected) in BAD.items():
        path = pilot.config_dir.parent / f"{case}.yaml"
        path.write_text(text)
        result = await pilot.cli("apply", "-f", str(path))
        assert result.rc == 1, (case, result)
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, result.err)
        assert expected in lines[0], (case, lines[0])
        assert str(path) in lines[0], "the message names the file"
        # The same body sent straight to pilot (no local check) gets the same refusal.
        direct = await pilot.cli("apply", "-f", "-", stdin=text)
        assert direct.rc == 1 and expected in direct.err, (case, direct)
    assert _files(pilot.config_dir) == files
    assert (await pilot.aapi("/resources"))["version"] == version
    await asyncio.sleep(0.3)  # a push, if one had been triggered, would be out by now
    await setup.routes_as_before()
    # Accepted but not enforced yet: applied, and the user is told what does not happen.
    path = pilot.config_dir.parent / "sni.yaml"
    path.write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: sni, namespace: default}\n"
        "spec:\n  hosts: [a.example.com]\n  tls:\n"
        "  - match: [{sniHosts: [a.example.com]}]\n"
        "    route: [{destination: {host: a.example.com}}]\n"
    )
    result = await pilot.cli("apply", "-f", str(path))
    assert result.rc == 0, result
    assert result.out.strip() == "virtualservice.networking.istio.io/sni created"
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, lines
    warning = lines[0]
    assert warning.startswith("Warning: virtualservice.networking.istio.io/sni: spec.tls:")
    assert "not enforced" in warning and "SNI" in warning
    await setup.routes_as_before()


@pytest.mark.timeout(120)
async def test_a_broken_file_in_the_config_dir_keeps_the_last_good_config(setup: Setup) -> None:
    pilot = setup.pilot
    version = (await pilot.aapi("/resources"))["version"]
    broken = pilot.config_dir / "zz-broken.yaml"
    broken.write_text(BAD["negative-weight"][0])
    deadline = time.monotonic() + 5
    log = ""
    while time.monotonic() < deadline and "must not be negative" not in log:
        await asyncio.sleep(0.1)
        log = pilot.proc.log_path.read_text()
    assert "keeping the last good configuration" in log and "must not be negative" in log
    assert (await pilot.aapi("/resources"))["version"] == version
    await setup.routes_as_before()
    # Fixing the file is picked up: here the fix routes everyone to v2.
    broken.write_text(
        _HEAD + "spec:\n  hosts: [reviews]\n  http:\n  - route:\n"
        "    - destination: {host: reviews, subset: v2}\n"
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        resp = await via_sidecar(setup.ip, "reviews:9080", "/")
        if upstream_of(resp) == "reviews-v2":
            break
        await asyncio.sleep(0.05)
    assert upstream_of(await via_sidecar(setup.ip, "reviews:9080", "/")) == "reviews-v2"
