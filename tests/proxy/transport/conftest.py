"""The TLS transport's tests run on both loops: the proxy runs on uvloop, whose transports
are not asyncio's classes, and the tests elsewhere run on asyncio's."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
import uvloop
from pytest_asyncio.plugin import LoopFactory

_BOTH: Mapping[str, LoopFactory] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
_DEFAULT: Mapping[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    module = getattr(item, "module", None)
    return (
        _BOTH if module is not None and module.__name__.endswith("test_tls_transport") else _DEFAULT
    )
