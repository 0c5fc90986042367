"""``docker/docker-compose.yml`` on a real Docker engine: the image is built from
``docker/Dockerfile``, ``docker-compose up`` starts pilot, the ingress gateway and every
Bookinfo pod (pause, init with ``pymesh iptables``, sidecar as uid 1337, the app after its
sidecar is ready), and the product page answers through the gateway with every reviews
version, each hop through a sidecar that captured the traffic transparently.

One engine, one image and one compose project serve the module.
"""

from __future__ import annotations

import os
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docker import (
    DockerEngine,
    base_image,
    compose,
    docker_engine,
    ensure_base_image,
    has_network,
    image_build,
    missing_tools,
)

pytestmark = [
    pytest.mark.timeout(1500),
    pytest.mark.root,
    pytest.mark.docker,
    pytest.mark.xdist_group("pymesh-docker"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a Docker engine needs root"),
    pytest.mark.skipif(
        bool(missing_tools()),
        reason=f"needs {', '.join(missing_tools())} (apt-get install docker.io docker-compose "
        "debootstrap)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "docker" / "docker-compose.yml"
IMAGE = "pymesh:test"
PROJECT = "pmpod"
GATEWAY = "127.0.11.200"


class Mesh:
    def __init__(self, engine: DockerEngine, port: int) -> None:
        self.engine = engine
        self.url = f"http://{GATEWAY}:{port}"
        self.env = {"PYMESH_IMAGE": IMAGE, "PYMESH_INGRESS_BIND": GATEWAY}
        self.env |= {"PYMESH_INGRESS_PORT": str(port), "PYMESH_NETWORK": "pmpod-mesh"}

    def compose(self, *args: str, timeout: float = 600) -> str:
        return compose(self.engine, PROJECT, FILE, *args, env=self.env, timeout=timeout)

    def get(self, path: str) -> tuple[int, str]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.url + path, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "30")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    from tests.support.procs import free_port

    scratch = tmp_path_factory.mktemp("docker")
    with docker_engine(scratch) as engine:
        if not engine.has_image(base_image()) and not has_network():
            pytest.skip(
                "the first image build downloads Debian's and PyPI's packages and this "
                "namespace has no route out; run the test once with network to fill the cache"
            )
        started = time.monotonic()
        base = ensure_base_image(engine, scratch)
        try:
            image_build(engine, ROOT, IMAGE, [f"BASE={base}"])
        except AssertionError:
            if has_network():
                raise
            pytest.skip(
                "pyproject.toml changed since the cached image was built and this namespace "
                "has no route to the package registries; run the test once with network"
            )
        built = time.monotonic() - started
        mesh = Mesh(engine, free_port(GATEWAY))
        try:
            mesh.compose("up", "-d", "--no-build")
            yield mesh
        except BaseException:
            print(mesh.logs())
            raise
        finally:
            mesh.compose("down", "--volumes", "--timeout", "5", timeout=300)
        print(f"image ready in {built:.0f} s")


def test_productpage_answers_through_the_mesh(mesh: Mesh) -> None:
    """The Istio getting-started check: the product page through the ingress gateway, with
    reviews from all three versions (round robin over the reviews pods' sidecars)."""
    deadline = time.monotonic() + 240
    status, body = 0, ""
    while time.monotonic() < deadline:
        status, body = mesh.get("/productpage")
        if status == 200 and "Reviews served by" in body:
            break
        time.sleep(1)
    assert status == 200, f"{status} {body[:500]}\n{mesh.logs()}"
    served = set()
    for _ in range(30):
        status, body = mesh.get("/productpage")
        assert status == 200, body[:500]
        served |= set(re.findall(r"Reviews served by: ([\w.-]+)", body))
        if len(served) == 3:
            break
    assert served == {"reviews-v1", "reviews-v2", "reviews-v3"}, served
    assert "Error fetching product details" not in body


def test_pods_are_captured(mesh: Mesh) -> None:
    """Each pod's namespace holds Istio's rules and its sidecar runs as uid 1337."""
    out = mesh.compose("exec", "-T", "productpage-v1-proxy", "id", "-u")
    assert out.strip().splitlines()[-1] == "1337"
    rules = mesh.compose("run", "--rm", "--no-deps", "productpage-v1-init", "iptables", "--dry-run")
    assert "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in rules
    nat = mesh.engine.run(
        "run",
        "--rm",
        "--network",
        f"container:{PROJECT}_productpage-v1_1",
        "--cap-add",
        "NET_ADMIN",
        "--entrypoint",
        "iptables",
        IMAGE,
        "-t",
        "nat",
        "-S",
    ).stdout
    assert "-A OUTPUT -p tcp -j ISTIO_OUTPUT" in nat and "--uid-owner 1337" in nat
