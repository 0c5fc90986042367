"""``envoy.filters.http.fault``: inject delays and aborts (Istio's VirtualService ``fault``).

The decision is :func:`proxy.routing.fault.decide_fault` (pure); this filter only waits
and answers. A delay holds the chain with a timer, then lets the request go on (or abort).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from proxy.config.model_http import FaultConfig
from proxy.config.model_route import FilterDisabled
from proxy.http.filter import FilterContext, FilterStatus, FilterStream, HttpFilter
from proxy.http.local_reply import ResponseFlag
from proxy.routing.fault import ActiveFaults, FaultDecision, decide_fault

__all__ = ["FaultFilter", "factory"]

_NAME = "envoy.filters.http.fault"


class _Shared:
    """Per filter config: the active-fault counter and the ``fault.*`` stats."""

    def __init__(self, config: FaultConfig, context: FilterContext) -> None:
        self.config = config
        self.context = context
        self.faults = ActiveFaults()
        prefix = f"http.{context.stat_prefix}.fault."
        self.delays = context.stats.counter(prefix + "delays_injected")
        self.aborts = context.stats.counter(prefix + "aborts_injected")
        self.active = context.stats.gauge(prefix + "active_faults")


class FaultFilter(HttpFilter):
    __slots__ = ("_decision", "_shared", "_timer")

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._decision: FaultDecision | None = None
        self._timer: asyncio.TimerHandle | None = None

    def on_request_headers(self, stream: FilterStream) -> FilterStatus:
        shared = self._shared
        config = shared.config
        override = stream.per_route_config(_NAME)
        if isinstance(override, FilterDisabled):
            return FilterStatus.CONTINUE
        if isinstance(override, FaultConfig):
            config = override
        decision = decide_fault(
            config,
            stream.request_headers,
            shared.context.rng,
            shared.faults,
            cluster=_routed_cluster(stream),
        )
        if decision is None:
            return FilterStatus.CONTINUE
        self._decision = decision
        shared.active.value = shared.faults.active
        stream.on_complete(self._on_complete)
        if decision.delay is not None:
            shared.delays.value += 1
            stream.add_response_flag(ResponseFlag.DELAY_INJECTED)
            self._timer = stream.loop.call_later(decision.delay, self._after_delay, stream)
            return FilterStatus.STOP
        return self._abort(stream)

    def _after_delay(self, stream: FilterStream) -> None:
        self._timer = None
        if self._abort(stream) is FilterStatus.CONTINUE:
            stream.resume()

    def _abort(self, stream: FilterStream) -> FilterStatus:
        decision = self._decision
        if decision is None or decision.abort_status is None:
            return FilterStatus.CONTINUE
        self._shared.aborts.value += 1
        stream.send_local_reply(
            decision.abort_status,
            b"fault filter abort",
            flag=ResponseFlag.FAULT_INJECTED,
            details="fault_filter_abort",
        )
        return FilterStatus.STOP

    def _on_complete(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._shared.faults.release()
        self._shared.active.value = self._shared.faults.active


def _routed_cluster(stream: FilterStream) -> str | None:
    route = stream.route
    action = getattr(route, "action", None) if route is not None else None
    return getattr(action, "cluster", None)


def factory(config: object, context: FilterContext) -> Callable[[], HttpFilter]:
    assert isinstance(config, FaultConfig)
    shared = _Shared(config, context)
    return lambda: FaultFilter(shared)
