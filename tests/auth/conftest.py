"""A running CA (in the test's event loop) on the identity tests' addresses."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from auth.server import CaOptions, CaServer, CaService, open_ca, serving_names
from auth.tokens import TokenIssuer
from auth.workload import CaClient
from tests.support import AUTH_NET, address
from tests.support.procs import free_port

CA_HOST = address(AUTH_NET, 100)


@dataclass
class RunningCa:
    service: CaService
    issuer: TokenIssuer
    server: CaServer
    address: str
    directory: Path

    @property
    def root(self) -> str:
        return self.service.ca.root_pem

    def client(self) -> CaClient:
        return CaClient(self.address, self.root)

    async def restart(self) -> None:
        await self.server.stop()
        await self.server.start(self.address)


async def start_ca(directory: Path, **options: float) -> RunningCa:
    service, issuer = open_ca(CaOptions(directory, **options), time.time)  # type: ignore[arg-type]
    server = CaServer(service, names=serving_names("istio-system", "cluster.local"))
    port = free_port(CA_HOST)
    await server.start(f"{CA_HOST}:{port}")
    return RunningCa(service, issuer, server, f"{CA_HOST}:{port}", directory)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path, for Unix sockets (108 bytes at most, which pytest's
    temporary directories exceed under xdist)."""
    path = Path(tempfile.mkdtemp(prefix="pm-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def ca(tmp_path: Path) -> AsyncIterator[RunningCa]:
    running = await start_ca(tmp_path / "ca")
    yield running
    await running.server.stop()
