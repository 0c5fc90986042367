"""Wiring: command-line options → config watcher, counters and the gRPC servicer.

``pymesh mixer`` adds :func:`add_arguments` to its parser and serves a :class:`RateLimitApp`
(``name``, ``add_to_server``, ``start``, ``stop``) on its gRPC port; ``python -m
mixer.ratelimit`` runs the Rate Limit Service alone (the demo's ``ratelimit`` Service, or a
second replica in tests).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from mixer.ratelimit.counters import Counters, MemoryCounters, RedisCounters
from mixer.ratelimit.decide import HeaderNames
from mixer.ratelimit.service import ConfigProvider, RateLimitService, StaticConfig
from mixer.ratelimit.servicer import add_to_server
from mixer.ratelimit.source import ConfigSource, ConfigWatcher
from mixer.ratelimit.stats import RateLimitStats

__all__ = ["RateLimitApp", "RateLimitOptions", "add_arguments"]


@dataclass(frozen=True, slots=True)
class RateLimitOptions:
    config: Path | None = None
    config_map: str | None = None
    redis_url: str | None = None
    redis_timeout: float = 1.0
    response_headers: bool = False
    key_prefix: str = ""
    reload_interval: float = 0.5

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RateLimitOptions:
        return cls(
            config=args.ratelimit_config,
            config_map=args.ratelimit_config_map or None,
            redis_url=args.redis_url,
            redis_timeout=args.redis_timeout,
            response_headers=args.ratelimit_response_headers,
            key_prefix=args.ratelimit_key_prefix,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rate limit service (envoy.service.ratelimit.v3)")
    group.add_argument(
        "--ratelimit-config",
        type=Path,
        help="rate limit config: a YAML file or a directory of them (ConfigMaps accepted); "
        "reloaded when it changes. Without it the service answers OK to everything.",
    )
    group.add_argument(
        "--ratelimit-config-map",
        metavar="NAME",
        help="read only the ConfigMap of this name (e.g. ratelimit-config) and skip every "
        "other document",
    )
    group.add_argument(
        "--redis-url",
        help="keep counters in Redis (redis://host:port/db) so replicas share them; "
        "default: in memory",
    )
    group.add_argument(
        "--redis-timeout",
        type=float,
        default=1.0,
        help="seconds a Redis round trip may take before the call fails (default 1)",
    )
    group.add_argument(
        "--ratelimit-response-headers",
        action="store_true",
        help="add RateLimit-Limit/-Remaining/-Reset to responses (the reference service's "
        "LIMIT_RESPONSE_HEADERS_ENABLED)",
    )
    group.add_argument(
        "--ratelimit-key-prefix", default="", help="prefix of every counter key in Redis"
    )


class RateLimitApp:
    """The service's parts and their lifecycle."""

    def __init__(
        self, options: RateLimitOptions, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.options = options
        self.stats = RateLimitStats()
        self.counters: Counters = (
            RedisCounters(options.redis_url, timeout=options.redis_timeout)
            if options.redis_url
            else MemoryCounters(clock)
        )
        self.watcher: ConfigWatcher | None = None
        provider: ConfigProvider = StaticConfig()
        if options.config is not None:
            self.watcher = ConfigWatcher(
                ConfigSource(options.config, options.config_map),
                self.stats,
                interval=options.reload_interval,
            )
            provider = self.watcher
        self.service = RateLimitService(
            provider,
            self.counters,
            clock=clock,
            stats=self.stats,
            headers=HeaderNames() if options.response_headers else None,
            key_prefix=options.key_prefix,
        )

    @property
    def name(self) -> str:
        return "ratelimit"

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register ``envoy.service.ratelimit.v3`` on ``server`` (mixer's, or its own)."""
        add_to_server(server, self.service)

    async def start(self) -> None:
        if self.watcher is not None:
            await self.watcher.start()

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
        await self.counters.close()
