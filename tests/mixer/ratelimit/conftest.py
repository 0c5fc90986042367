"""Fixtures of the rate limit tests: a Redis per test module, on 127.0.9.100."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import RATELIMIT_NET, address
from tests.support.redis import RedisServer

REDIS_HOST = address(RATELIMIT_NET, 100)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(REDIS_HOST, Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()
