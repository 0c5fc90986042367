"""A private Docker engine for the container tests, and a base image made without a registry.

The engine is Debian's ``dockerd`` with its own data root, exec root and socket, no default
bridge and no iptables of its own (``--bridge=none --iptables=false``), handing out compose
networks from the pods test area's ``10.211.128.0/17``. No image registry is reachable, so
the base image is Debian bookworm made by ``debootstrap`` (with Python, iptables and
iproute2) and ``docker import``-ed; the project's Dockerfile is built on it with
``--build-arg BASE=...``.

On a developer machine the engine's data root (images and build cache) and the debootstrap
tarball live under ``~/.cache/pymesh/docker`` so that a second run builds in seconds; with
``CI`` set nothing is cached and everything is made from scratch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "DockerEngine",
    "base_image",
    "compose",
    "docker_engine",
    "ensure_base_image",
    "has_network",
    "image_build",
    "missing_tools",
    "prometheus_image",
]

BASE_IMAGE = "pymesh-test-base:bookworm"
ADDRESS_POOL = "base=10.211.128.0/17,size=24"
_PACKAGES = "python3,python3-venv,iptables,iproute2,ca-certificates"
_CACHE = Path.home() / ".cache" / "pymesh" / "docker"
_HOST_CAS = Path("/etc/ssl/certs/ca-certificates.crt")


_PROMETHEUS = Path("/usr/bin/prometheus")
_PROMETHEUS_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY prometheus /bin/prometheus
RUN mkdir -p /prometheus && chown 65534:65534 /prometheus
USER 65534
ENTRYPOINT ["/bin/prometheus"]
"""


def missing_tools() -> list[str]:
    tools = ("dockerd", "docker", "docker-compose", "debootstrap", "prometheus")
    return [t for t in tools if shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]


def has_network() -> bool:
    """A default route: the package registries may be reachable (not in an isolated netns)."""
    routes = subprocess.run(["ip", "route", "show", "default"], capture_output=True, text=True)
    return bool(routes.stdout.strip())


@dataclass
class DockerEngine:
    socket: Path
    data_root: Path
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = f"unix://{self.socket}"
        return env

    def run(
        self,
        *argv: str,
        timeout: float = 600,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``docker ...`` (or ``docker-compose ...``) against this engine."""
        tool = argv[0] if argv[0] == "docker-compose" else "/usr/bin/docker"
        args = list(argv[1:]) if argv[0] == "docker-compose" else list(argv)
        done = subprocess.run(
            [tool, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} exited {done.returncode}\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def has_image(self, name: str) -> bool:
        return self.run("image", "inspect", name, check=False).returncode == 0


def _unmount_under(root: Path) -> None:
    """dockerd leaves its bind mount of the host's network namespace (``netns/default``)
    behind when it stops; unmount whatever is still mounted below ``root``."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    prefix = str(root) + "/"
    for line in mounts:
        target = line.split()[1] if len(line.split()) > 1 else ""
        if target.startswith(prefix):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def _cached() -> bool:
    return not os.environ.get("CI")


@contextlib.contextmanager
def docker_engine(scratch: Path) -> Iterator[DockerEngine]:
    """A running engine; stopped (and its containers with it) on the way out, whatever
    happened. Its data root is the developer cache when it is free, else ``scratch``."""
    lock: IO[str] | None = None
    data_root = scratch / "data"
    if _cached():
        _CACHE.mkdir(parents=True, exist_ok=True)
        lock = open(_CACHE / "data.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            data_root = _CACHE / "data"
        except OSError:
            lock.close()
            lock = None
    # Unix socket paths are short: keep the exec root out of pytest's deep tmp dirs.
    exec_root = Path(tempfile.mkdtemp(prefix="pmpod-d-"))
    sock = exec_root / "docker.sock"
    log = scratch / "dockerd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                "dockerd",
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                f"--data-root={data_root}",
                f"--exec-root={exec_root}",
                f"--pidfile={exec_root / 'docker.pid'}",
                f"--default-address-pool={ADDRESS_POOL}",
                "-H",
                f"unix://{sock}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    engine = DockerEngine(sock, data_root, log, proc)
    try:
        deadline = time.monotonic() + 60
        while engine.run("version", check=False, timeout=10).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dockerd did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield engine
    finally:
        running = engine.run("ps", "-aq", check=False, timeout=30).stdout.split()
        if running:
            engine.run("rm", "-f", *running, check=False, timeout=120)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        _unmount_under(exec_root)
        shutil.rmtree(exec_root, ignore_errors=True)
        if lock is not None:
            lock.close()


def _host_cas() -> bytes:
    try:
        return _HOST_CAS.read_bytes()
    except OSError:
        return b""


def base_image() -> str:
    """The base image's name: it carries this machine's CA bundle, so its hash is in the tag
    (a machine whose CAs change gets a new base image)."""
    return f"{BASE_IMAGE}-{hashlib.sha256(_host_cas()).hexdigest()[:10]}"


def ensure_base_image(engine: DockerEngine, scratch: Path) -> str:
    """A Debian base image in the engine, from the cached debootstrap tarball or made now;
    returns its name. It trusts the CAs this machine trusts: where the registries are reached
    through a TLS-inspecting proxy, pip inside the build needs them as the host's pip does."""
    name = base_image()
    if engine.has_image(name):
        return name
    tag = name.rpartition("-")[2]
    tarball = _CACHE / f"base-bookworm-{tag}.tar" if _cached() else scratch / "base.tar"
    if not tarball.exists():
        root = scratch / "rootfs"
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={_PACKAGES}", "bookworm", str(root)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"debootstrap failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        cas = _host_cas()
        if cas:
            (root / "etc/ssl/certs/ca-certificates.crt").write_bytes(cas)
        tmp = tarball.with_suffix(".part")
        tarball.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-C", str(root), "-cf", str(tmp), "."], check=True, timeout=300)
        tmp.replace(tarball)
        shutil.rmtree(root, ignore_errors=True)
    engine.run("import", str(tarball), name, timeout=300)
    return name


def compose(engine: DockerEngine, project: str, file: Path, *args: str, **kw: object) -> str:
    done = engine.run("docker-compose", "-p", project, "-f", str(file), *args, **kw)  # type: ignore[arg-type]
    return done.stdout + done.stderr


def image_build(engine: DockerEngine, root: Path, tag: str, build_args: Sequence[str]) -> None:
    """``docker build`` of the project's Dockerfile; host networking, since the engine has
    no bridge for build containers."""
    args = [a for pair in (("--build-arg", b) for b in build_args) for a in pair]
    engine.run(
        "build",
        "--network",
        "host",
        "-f",
        "docker/Dockerfile",
        "-t",
        tag,
        *args,
        ".",
        cwd=root,
        timeout=900,
    )
    # The images this build replaced: a developer's cached data root would grow by one
    # image per change otherwise (the build cache is kept).
    engine.run("image", "prune", "--force", timeout=300)


def prometheus_image(engine: DockerEngine, base: str, scratch: Path) -> str:
    """An image standing in for ``prom/prometheus`` (same entry point, storage in
    ``/prometheus``, user nobody): Debian's Prometheus binary on the base image."""
    context = scratch / "prometheus-image"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(_PROMETHEUS_DOCKERFILE)
    shutil.copy2(_PROMETHEUS, context / "prometheus")
    tag = "pymesh-test-prometheus:local"
    args = ["build", "--network", "host", "--build-arg", f"BASE={base}", "-t", tag, "."]
    engine.run(*args, cwd=context, timeout=600)
    shutil.rmtree(context, ignore_errors=True)
    return tag
