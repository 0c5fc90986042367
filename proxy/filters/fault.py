"""``envoy.filters.http.fault``: inject delays and aborts (Istio's VirtualService ``fault``).

The decision is :func:`proxy.routing.fault.decide_fault` (pure); this filter only waits
and answers. A delay holds the chain with a timer, then lets the request go on (or abort).
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.config.model_http import FaultConfig
from proxy.config.model_route import FilterDisabled
from proxy.http.filter import (
    DownstreamCallbacks,
    FilterContext,
    FilterHeadersStatus,
    Headers,
    HttpFilter,
)
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
    __slots__ = ("_active", "_decision", "_shared", "_timer")

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._decision: FaultDecision | None = None
        self._timer: object | None = None
        self._active = False

    def decode_headers(
        self, cb: DownstreamCallbacks, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        shared = self._shared
        config = shared.config
        override = cb.per_route_config(_NAME)
        if isinstance(override, FilterDisabled):
            return FilterHeadersStatus.CONTINUE
        if isinstance(override, FaultConfig):
            config = override
        decision = decide_fault(
            config,
            headers,
            shared.context.rng,
            shared.faults,
            cluster=_routed_cluster(cb),
        )
        if decision is None:
            return FilterHeadersStatus.CONTINUE
        self._decision = decision
        self._active = True
        shared.active.value = shared.faults.active
        if decision.delay is not None:
            shared.delays.value += 1
            cb.add_response_flag(ResponseFlag.DELAY_INJECTED)
            self._timer = cb.timers.call_later(decision.delay, self._after_delay, cb)
            # The body waits in the stream (reads pause at the buffer limit) until the delay.
            return FilterHeadersStatus.STOP_ALL_ITERATION_AND_BUFFER
        return self._abort(cb)

    def _after_delay(self, cb: DownstreamCallbacks) -> None:
        self._timer = None
        if self._abort(cb) is FilterHeadersStatus.CONTINUE:
            cb.continue_decoding()

    def _abort(self, cb: DownstreamCallbacks) -> FilterHeadersStatus:
        decision = self._decision
        if decision is None or decision.abort_status is None:
            return FilterHeadersStatus.CONTINUE
        self._shared.aborts.value += 1
        cb.send_local_reply(
            decision.abort_status,
            b"fault filter abort",
            flag=ResponseFlag.FAULT_INJECTED,
            details="fault_filter_abort",
        )
        cb.flush()
        return FilterHeadersStatus.STOP_ITERATION

    def on_destroy(self) -> None:
        if self._timer is not None:
            self._timer.cancel()  # type: ignore[attr-defined]
            self._timer = None
        if self._active:
            self._active = False
            self._shared.faults.release()
            self._shared.active.value = self._shared.faults.active


def _routed_cluster(cb: DownstreamCallbacks) -> str | None:
    route = cb.route
    action = getattr(route, "action", None) if route is not None else None
    return getattr(action, "cluster", None)


def factory(config: object, context: FilterContext) -> Callable[[], HttpFilter]:
    assert isinstance(config, FaultConfig)
    shared = _Shared(config, context)
    return lambda: FaultFilter(shared)
