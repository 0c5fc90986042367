"""What a route adds to a request, worked out once per route instead of once per request.

A :class:`RoutePlan` says which of the route's, virtual host's and route configuration's
request header mutations are non-empty (in Envoy's order), whether the path or the Host can
be rewritten, and which retry policy applies. The router asks :class:`RoutePlans` for the
plan of the route a stream matched; a route with nothing to add costs one dict lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.config.model_common import HeaderValueOption
    from proxy.config.model_route import (
        RetryPolicy,
        Route,
        RouteAction,
        RouteConfiguration,
        VirtualHost,
    )

__all__ = ["RoutePlan", "RoutePlans"]

Mutation = tuple[tuple[bytes, ...], tuple["HeaderValueOption", ...]]

# Plans are kept per route object; a connection manager fed by RDS sees new route objects at
# every push, so the cache is emptied when it grows past this.
_MAX_PLANS = 4096


@dataclass(frozen=True, slots=True)
class RoutePlan:
    request_mutations: tuple[Mutation, ...]
    rewrites_path: bool
    rewrites_host: bool
    retry_policy: RetryPolicy | None
    attempt_count_header: bool


def plan_route(
    route: Route,
    action: RouteAction,
    vhost: VirtualHost | None,
    config: RouteConfiguration | None,
) -> RoutePlan:
    mutations: list[Mutation] = []
    for owner in (route, vhost, config):
        if owner is not None and (owner.request_headers_to_remove or owner.request_headers_to_add):
            mutations.append((owner.request_headers_to_remove, owner.request_headers_to_add))
    policy = action.retry_policy
    if policy is None and vhost is not None:
        policy = vhost.retry_policy
    return RoutePlan(
        request_mutations=tuple(mutations),
        rewrites_path=bool(action.prefix_rewrite) or action.regex_rewrite is not None,
        rewrites_host=bool(
            action.host_rewrite_literal
            or action.host_rewrite_header is not None
            or (
                action.weighted_clusters is not None
                and any(c.host_rewrite_literal for c in action.weighted_clusters.clusters)
            )
        ),
        retry_policy=policy,
        attempt_count_header=vhost is not None and vhost.include_request_attempt_count,
    )


class RoutePlans:
    """Plans by route identity, for one connection manager."""

    __slots__ = ("_plans",)

    def __init__(self) -> None:
        self._plans: dict[int, tuple[Route, RoutePlan]] = {}

    def get(
        self,
        route: Route,
        action: RouteAction,
        vhost: VirtualHost | None,
        config: RouteConfiguration | None,
    ) -> RoutePlan:
        entry = self._plans.get(id(route))
        # The route is kept with its plan, so its id cannot be reused while the entry lives.
        if entry is not None and entry[0] is route:
            return entry[1]
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        plan = plan_route(route, action, vhost, config)
        self._plans[id(route)] = (route, plan)
        return plan
