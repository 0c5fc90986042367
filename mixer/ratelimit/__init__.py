"""The Rate Limit Service (Envoy's ``envoy.service.ratelimit.v3``) in mixer.

* :mod:`~mixer.ratelimit.config` — the reference ``ratelimit`` service's YAML format, checked.
* :mod:`~mixer.ratelimit.decide` — the decision as pure functions over an injected time.
* :mod:`~mixer.ratelimit.counters` — fixed-window counters in memory or in Redis.
* :mod:`~mixer.ratelimit.service` — config + counters + clock → ``ShouldRateLimit``.
* :mod:`~mixer.ratelimit.servicer` — the gRPC adapter; :mod:`~mixer.ratelimit.app` the wiring.
* :mod:`~mixer.ratelimit.source` — config files and ConfigMaps, reloaded when they change.
"""

from __future__ import annotations

from mixer.ratelimit.app import RateLimitApp, RateLimitOptions, add_arguments
from mixer.ratelimit.config import RateLimitConfig, load_config
from mixer.ratelimit.service import RateLimitService

__all__ = [
    "RateLimitApp",
    "RateLimitConfig",
    "RateLimitOptions",
    "RateLimitService",
    "add_arguments",
    "load_config",
]
