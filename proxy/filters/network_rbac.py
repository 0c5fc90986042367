"""``envoy.filters.network.rbac``: the RBAC engine on a connection, before the TCP proxy.

As in Envoy, the check runs on the first bytes the client sends (``ONE_TIME_ON_FIRST_BYTE``)
or on every read (``CONTINUOUS``); only connection attributes exist here (addresses, SNI, the
peer certificate), so HTTP matchers never match. A denied connection is closed without a
reply, its termination details ``rbac_access_denied_matched_policy[<policy>|none]``; the
shadow engine's verdict goes to the connection's ``envoy.filters.network.rbac`` metadata
(where ``ext_authz``'s ``filter_enabled_metadata`` looks for Istio's CUSTOM policies). Stats:
``<stat_prefix>rbac.allowed`` and friends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.config.translate.rbac import RbacFilterConfig
from proxy.filters.rbac import ConnectionAttributes, EngineStats, denied_details
from proxy.http.filter import FilterContext
from proxy.network_filter import NetworkCallbacks, ReadFilter, ReadFilterStatus

if TYPE_CHECKING:
    from proxy.stats import StatsStore

__all__ = ["NETWORK_RBAC_METADATA", "NetworkRbacFilter", "network_factory"]

NETWORK_RBAC_METADATA = "envoy.filters.network.rbac"


class _Shared:
    __slots__ = ("config", "shadow_id", "shadow_result", "stats")

    def __init__(self, config: RbacFilterConfig, stats: StatsStore) -> None:
        self.config = config
        self.stats = EngineStats(stats, config.stat_prefix, config)
        prefix = config.shadow_rules_stat_prefix
        self.shadow_id = prefix + "shadow_effective_policy_id"
        self.shadow_result = prefix + "shadow_engine_result"


class NetworkRbacFilter(ReadFilter):
    __slots__ = ("_checked", "_shared")

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._checked = False

    def on_data(self, cb: NetworkCallbacks, data: bytes) -> ReadFilterStatus:
        shared = self._shared
        config = shared.config
        if self._checked and not config.continuous:
            return ReadFilterStatus.CONTINUE
        self._checked = True
        attrs = ConnectionAttributes(cb.connection_info)
        stats = shared.stats
        if config.shadow_rules is not None:
            verdict = config.shadow_rules.evaluate(attrs)
            (stats.shadow_allowed if verdict.allowed else stats.shadow_denied).value += 1
            meta = cb.dynamic_metadata(NETWORK_RBAC_METADATA)
            if verdict.policy is not None:
                meta[shared.shadow_id] = verdict.policy
            meta[shared.shadow_result] = "allowed" if verdict.allowed else "denied"
        if config.rules is None:
            return ReadFilterStatus.CONTINUE
        verdict = config.rules.evaluate(attrs)
        if verdict.allowed:
            stats.allowed.value += 1
            return ReadFilterStatus.CONTINUE
        stats.denied.value += 1
        cb.close(denied_details(verdict.policy))
        return ReadFilterStatus.STOP_ITERATION


def network_factory(config: object, context: FilterContext) -> Callable[[], ReadFilter]:
    assert isinstance(config, RbacFilterConfig)
    shared = _Shared(config, context.stats)
    return lambda: NetworkRbacFilter(shared)
