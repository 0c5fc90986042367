"""A running ``pymesh demo`` for integration tests, and the ways tests talk to it.

Each test module starts one demo (``pymesh demo up``, or ``pymesh demo run`` in the
foreground as ``make demo`` does) with its run directory under pytest's tmp dir, on its own
addresses of the demo area ``127.0.4.0/24``:

* slot = 4 * module + xdist worker, or the next one that is free: claimed with a lock file,
  so two workers that got tests of one module, or another pytest session on the machine,
  never collide (with ``--dist loadgroup`` each module stays on one worker anyway);
* control address (pilot and the ingress gateway) ``127.0.4.<1 + slot>``;
* pods ``127.0.4.<10 + 16 * slot>`` and the 15 addresses after it;
* an "external" server for the egress task on ``127.0.4.<200 + slot>``.

Istio's files are read unchanged from ``../shared/istio-samples`` (tests skip without it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from pymesh.cli.pilot_client import PilotClient
from pymesh.demo.layout import SERVICE_PROXY_PORT
from pymesh.demo.pods import pod_env
from pymesh.demo.state import DemoState, PodState, read_state
from pymesh.samples.sleep import CurlResult, curl

__all__ = [
    "ISTIO",
    "Demo",
    "Page",
    "demo_slot",
    "istio_file",
    "listeners_on",
    "no_demo_processes",
    "pod_pids",
    "reviews_version",
    "start_demo",
]

ROOT = Path(__file__).resolve().parents[2]
ISTIO = ROOT.parent / "shared" / "istio-samples"
PYMESH = Path(sys.executable).parent / "pymesh"
# Control addresses 127.0.4.1-.9, pod ranges of 16 from .10: nine demos at most.
_SLOTS = 9


def istio_file(relative: str) -> Path:
    """A file of ``../shared/istio-samples``; skips the test when the tree is absent."""
    path = ISTIO / relative
    if not ISTIO.is_dir():
        pytest.skip("../shared/istio-samples is not present")
    assert path.is_file(), f"{path} is missing from istio-samples"
    return path


def demo_slot(module_index: int) -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    number = int(worker[2:]) if worker[2:].isdigit() else 0
    return module_index * 4 + number % 4


@dataclass(frozen=True, slots=True)
class Page:
    status: int
    body: str
    elapsed: float
    headers: Mapping[str, str] = field(default_factory=dict)


_SERVED_BY = re.compile(r"Reviews served by: ([\w.-]+)")


def reviews_version(page: str) -> str:
    """Which reviews version rendered a product page: ``v1``/``v2``/``v3`` (checked against
    the stars: none, black, red), ``error`` when productpage could not get reviews."""
    if "Error fetching product reviews" in page:
        return "error"
    served = _SERVED_BY.search(page)
    if served is None:
        return "unknown"
    version = served.group(1).rpartition("-")[2]
    colors = set(re.findall(r'<font color="(\w+)">', page))
    expected = {"v1": set(), "v2": {"black"}, "v3": {"red"}}.get(version)
    if expected is not None and colors and colors != expected:
        return f"{version}?{sorted(colors)}"
    return version


# Inside a pod's network namespace: reads curl command lines (JSON, with an id) on stdin,
# runs them concurrently with pymesh.samples.sleep, answers each with a JSON line.
_CURL_SERVER = """
import asyncio, dataclasses, json, sys
from pymesh.samples.sleep import curl

async def one(ident, argv):
    r = await curl(argv)
    d = dataclasses.asdict(r)
    d["body"] = r.body.decode("latin-1"); d["stdout"] = r.stdout.decode("latin-1")
    d["id"] = ident
    sys.stdout.write(json.dumps(d) + "\\n"); sys.stdout.flush()

async def main():
    loop = asyncio.get_running_loop()
    tasks = set()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        req = json.loads(line)
        t = asyncio.ensure_future(one(req["id"], req["argv"]))
        tasks.add(t); t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)

asyncio.run(main())
"""


class _PodShell:
    """One long-lived curl runner inside a pod's namespace, so that concurrent calls from a
    test are concurrent in the pod too (a process per call would serialise them)."""

    def __init__(self, namespace: str, env: Mapping[str, str] | None = None) -> None:
        if env is None:
            env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", _CURL_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self._lock = threading.Lock()
        self._waiting: dict[int, concurrent.futures.Future[CurlResult]] = {}
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            data = json.loads(line)
            with self._lock:
                future = self._waiting.pop(data.pop("id"))
            future.set_result(
                CurlResult(
                    exit_code=data["exit_code"],
                    http_code=data["http_code"],
                    headers=tuple((k, v) for k, v in data["headers"]),
                    body=data["body"].encode("latin-1"),
                    stdout=data["stdout"].encode("latin-1"),
                    stderr=data["stderr"],
                    time_total=data["time_total"],
                )
            )
        with self._lock:
            for future in self._waiting.values():
                future.set_exception(AssertionError("the pod's curl runner exited"))

    def submit(self, argv: Sequence[str]) -> concurrent.futures.Future[CurlResult]:
        future: concurrent.futures.Future[CurlResult] = concurrent.futures.Future()
        assert self.proc.stdin is not None
        with self._lock:
            self._next += 1
            self._waiting[self._next] = future
            self.proc.stdin.write(json.dumps({"id": self._next, "argv": list(argv)}) + "\n")
            self.proc.stdin.flush()
        return future

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True, slots=True)
class Netns:
    """netns mode: the name prefix and subnet of the demo's namespaces and bridge."""

    prefix: str
    subnet: str

    @property
    def bridge_host(self) -> str:
        """The host's address on the bridge (pilot, mixer and the service proxy)."""
        return str(ipaddress.IPv4Network(self.subnet).network_address + 1)


class Demo:
    """A demo started by a test module."""

    def __init__(
        self, run_dir: Path, control: str, pods: str, external: str, netns: Netns | None = None
    ) -> None:
        self.run_dir = run_dir
        self.control = control
        self.pods = pods
        self.external = external
        self.netns = netns
        self._shells: dict[str, _PodShell] = {}
        self.gateway = f"http://{control}:8080"
        self.pilot_url = f"http://{control}:15080"
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock: IO[str] | None = None
        #: more ``pymesh demo`` options (``--mtls``)
        self.extra_args: list[str] = []

    def release(self) -> None:
        """Give the address slot back (see :func:`start_demo`)."""
        for shell in self._shells.values():
            shell.close()
        self._shells.clear()
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    # -- the command line --------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(
            PYMESH_PILOT=self.pilot_url,
            PYMESH_CONFIG_DIR=str(self.run_dir / "config"),
            PYMESH_DEMO_DIR=str(self.run_dir),
        )
        return env

    def pymesh(
        self, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(PYMESH), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"pymesh {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def start_args(self) -> list[str]:
        if self.netns is not None:
            netns = ["--netns", "--netns-prefix", self.netns.prefix]
            netns += ["--netns-subnet", self.netns.subnet]
        else:
            netns = ["--pod-addresses", self.pods]
        return [
            *netns,
            "--run-dir",
            str(self.run_dir),
            "--control-address",
            self.control,
            "--timeout",
            "90",
            *self.extra_args,
        ]

    # -- state -------------------------------------------------------------------------------
    def state(self) -> DemoState:
        state = read_state(self.run_dir / "state.json")
        assert state is not None, "the demo wrote no state"
        return state

    def pod(self, name: str) -> PodState:
        pod = self.state().pod(name)
        assert pod is not None, f"no pod {name} in the demo"
        return pod

    def wait(self, predicate: Any, timeout: float, what: Any, interval: float = 0.2) -> Any:
        """Poll ``predicate`` until truthy; ``what`` (text, or a callable giving it at the
        time of failure) says what was awaited."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                said = what() if callable(what) else what
                raise AssertionError(f"timed out after {timeout} s waiting for {said}")
            time.sleep(interval)

    def wait_ready(self, timeout: float = 60.0) -> DemoState:
        def ready() -> DemoState | None:
            state = read_state(self.run_dir / "state.json")
            return state if state is not None and state.ready else None

        state: DemoState = self.wait(ready, timeout, "every pod ready and every proxy SYNCED")
        return state

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until pilot has pushed the last change and every proxy ACKed it.

        Pushes are debounced (100 ms quiet): first give pilot the time to start one, then
        wait for a moment where no proxy has anything unacknowledged, twice in a row.
        """
        time.sleep(0.4)
        token = (self.run_dir / "config/.pymesh-token").read_text().strip()
        client = PilotClient(self.pilot_url, token)
        calm = 0

        def synced() -> bool:
            nonlocal calm
            _, body = client.call("GET", "/proxies")
            ok = all(
                not proxy.get("errors")
                and all(t.get("status") != "STALE" for t in proxy.get("types", {}).values())
                for proxy in body.get("proxies", ())
            )
            calm = calm + 1 if ok else 0
            return calm >= 2

        self.wait(synced, timeout, "every proxy to ACK the pushed config", interval=0.15)

    def apply(self, *paths: Path | str) -> None:
        for path in paths:
            self.pymesh("apply", "-f", str(path))
        self.settle()

    def delete(self, *paths: Path | str) -> None:
        for path in paths:
            self.pymesh("delete", "-f", str(path), check=False)
        self.settle()

    # -- traffic -----------------------------------------------------------------------------
    def get(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        data: bytes | None = None,
    ) -> Page:
        """A direct request (no proxy of the caller's environment)."""
        request = urllib.request.Request(url, headers=dict(headers or {}), data=data)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        start = time.monotonic()
        try:
            with opener.open(request, timeout=timeout) as resp:
                body, status, hdrs = resp.read(), resp.status, _lower(resp.headers.items())
        except urllib.error.HTTPError as exc:
            body, status, hdrs = exc.read(), exc.code, _lower(exc.headers.items())
        except (urllib.error.URLError, OSError) as exc:
            # No answer at all (refused, reset, timed out): status 0, like curl's 000.
            return Page(0, str(exc), time.monotonic() - start)
        return Page(status, body.decode("utf-8", "replace"), time.monotonic() - start, hdrs)

    def login(self, user: str) -> str:
        """Sign in through the gateway as productpage's form does; the ``Cookie`` value."""
        form = urllib.parse.urlencode({"username": user, "passwd": "password"}).encode()
        page = self.get(f"{self.gateway}/login", data=form)
        assert page.status == 302, page
        cookie = page.headers.get("set-cookie", "")
        assert cookie.startswith("session="), page.headers
        return cookie.split(";", 1)[0]

    def product_page(self, cookie: str | None = None, timeout: float = 30.0) -> Page:
        headers = {"Cookie": cookie} if cookie else {}
        return self.get(f"{self.gateway}/productpage", headers, timeout)

    def versions(self, count: int, cookie: str | None = None) -> list[str]:
        return [reviews_version(self.product_page(cookie).body) for _ in range(count)]

    def curl_from(self, pod_name: str, *argv: str) -> CurlResult:
        """The sleep client's curl, run as inside ``pod_name`` (through its sidecar)."""
        return asyncio.run(self.acurl_from(pod_name, *argv))

    async def acurl_from(self, pod_name: str, *argv: str) -> CurlResult:
        pod = self.pod(pod_name)
        if pod.netns:
            shell = self._shells.get(pod.netns)
            if shell is None or shell.proc.poll() is not None:
                # A pod without a sidecar is not captured: the node's service proxy, on the
                # bridge, is its HTTP_PROXY.
                env = None
                if not pod.sidecar and self.netns is not None:
                    proxy = f"{self.netns.bridge_host}:{SERVICE_PROXY_PORT}"
                    env = pod_env(
                        pod.name, pod.namespace, pod.service_account, pod.ip, os.environ,
                        service_proxy=proxy,
                    )  # fmt: skip
                shell = self._shells[pod.netns] = _PodShell(pod.netns, env)
            return await asyncio.wait_for(asyncio.wrap_future(shell.submit(argv)), 60)
        proxy = None if pod.sidecar else f"{self.control}:{SERVICE_PROXY_PORT}"
        env = pod_env(pod.name, pod.namespace, pod.service_account, pod.ip, {}, service_proxy=proxy)
        return await curl(list(argv), env=env)

    def admin_stats(self, pod_name: str) -> dict[str, str]:
        pod = self.pod(pod_name)
        text = self.get(f"http://{pod.ip}:15000/stats").body
        return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)

    def log_text(self, name: str) -> str:
        path = self.run_dir / "logs" / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self) -> None:
        result = self.pymesh("demo", "up", *self.start_args(), check=False, timeout=150)
        if result.returncode != 0:
            self.down()
            raise AssertionError(
                f"pymesh demo up failed:\n{result.stdout}\n{result.stderr}\n"
                + self.log_text("demo")[-3000:]
            )

    def run_foreground(self) -> None:
        """``pymesh demo run`` as ``make demo`` runs it, output to ``foreground.out``."""
        out = open(self.run_dir.parent / "foreground.out", "wb")  # noqa: SIM115
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [str(PYMESH), "demo", "run", *self.start_args()],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        out.close()
        try:
            self.wait_ready(timeout=120)
        except AssertionError:
            self.interrupt()
            raise

    def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C to a foreground demo; its exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def foreground_output(self) -> str:
        path = self.run_dir.parent / "foreground.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.pymesh("demo", "down", "--run-dir", str(self.run_dir), check=False)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def start_demo(
    tmp_path_factory: pytest.TempPathFactory,
    module_index: int,
    name: str,
    *,
    netns: bool = False,
) -> Demo:
    """A demo (not started yet) on the first free slot from this module's preferred one.

    Other pytest sessions on the machine may run the same modules at the same time: a slot
    is claimed with an exclusive lock on ``$TMPDIR/pymesh-demo-slot-<n>.lock``, held until
    :meth:`Demo.release` (or the end of the process), and its ports must be free.

    ``netns=True``: a netns-mode demo in the pods area, control address
    ``127.0.11.<1 + slot>``, namespaces ``pmpod<slot>-*`` on ``10.211.<slot>.0/24``.
    """
    from pymesh.demo.ports import busy

    net = "127.0.11" if netns else "127.0.4"
    kind = "netns" if netns else "slot"
    preferred = demo_slot(module_index)
    for slot in [*range(preferred, _SLOTS), *range(preferred)]:
        lock = open(Path(tempfile.gettempdir()) / f"pymesh-demo-{kind}-{slot}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        if busy([(f"{net}.{1 + slot}", p) for p in (80, 8080, 15000, 15010, 15080)]):
            lock.close()
            continue
        base = tmp_path_factory.mktemp(name)
        first = 10 + 16 * slot
        demo = Demo(
            base / "run",
            control=f"{net}.{1 + slot}",
            pods=f"{net}.{first}-{first + 15}",
            external=f"{net}.{200 + slot}",
            netns=Netns(f"pmpod{slot}-", f"10.211.{slot}.0/24") if netns else None,
        )
        demo.lock = lock
        return demo
    pytest.fail(f"no free demo slot in {net}.0/24 (all {_SLOTS} taken)")


def pod_pids(state: DemoState) -> dict[str, tuple[int | None, int | None]]:
    return {
        p.key: (p.app.pid if p.app else None, p.proxy.pid if p.proxy else None) for p in state.pods
    }


def no_demo_processes(run_dir: Path) -> list[int]:
    from pymesh.demo.process import marked_processes

    return list(marked_processes(str(run_dir.resolve())))


def listeners_on(addresses: Sequence[str]) -> list[tuple[str, int]]:
    from pymesh.demo.ports import listening

    return listening(addresses)


def _lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


# what Prometheus's kubernetes-pods relabelling adds to a pod's series
_TARGET_LABELS = {"job", "instance", "namespace", "pod", "app", "version"}


def check_per_pod_scrape(demo: Demo, prometheus: str) -> None:
    """Every pod's sidecar is scraped on its ``:15020/stats/prometheus`` through the
    ``prometheus.io/*`` annotations and a standard ``kubernetes-pods`` job, and its
    ``istio_requests_total`` for productpage → reviews has the labels mixer reports."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def query(expr: str) -> list[dict[str, str]]:
        url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with opener.open(url, timeout=10) as resp:
            return [r["metric"] for r in json.loads(resp.read())["data"]["result"]]

    def pods_up() -> set[str]:
        with opener.open(f"{prometheus}/api/v1/targets", timeout=10) as resp:
            active = json.loads(resp.read())["data"]["activeTargets"]
        return {
            t["labels"]["instance"]
            for t in active
            if t["labels"]["job"] == "kubernetes-pods" and t["health"] == "up"
        }

    def missing() -> set[str]:
        # Read each time: a pod an earlier test deleted may still be on its way out.
        expected = {
            f"{p.ip}:15020"
            for p in demo.state().pods
            if p.ip != demo.control and p.sidecar and p.ready
        }
        return expected - pods_up()

    demo.wait(
        lambda: not missing(),
        30,
        lambda: f"Prometheus scraping every pod's :15020 (not up: {sorted(missing())})",
    )
    call = (
        'istio_requests_total{{job="{job}",reporter="source",'
        'source_workload="productpage-v1",destination_service_name="reviews"}}'
    )
    assert demo.get(f"{demo.gateway}/productpage").status == 200
    per_pod = demo.wait(
        lambda: query(call.format(job="kubernetes-pods")), 30, "the sidecar's own series"
    )
    for metric in per_pod:
        assert metric["pod"].startswith("productpage-v1"), metric

    def own(metric: dict[str, str]) -> frozenset[tuple[str, str]]:
        return frozenset((k, v) for k, v in metric.items() if k not in _TARGET_LABELS)

    def unreported() -> list[list[tuple[str, str]]]:
        # Prometheus scrapes mixer and the pods on their own schedules: mixer's series may
        # come a scrape later.
        reported = {own(m) for m in query(call.format(job="mixer"))}
        return [sorted(own(m)) for m in per_pod if own(m) not in reported]

    demo.wait(
        lambda: not unreported(),
        30,
        lambda: f"mixer's series with the sidecar's labels (missing: {unreported()})",
    )
