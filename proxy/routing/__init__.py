"""Pure routing decisions for the data plane, with Envoy 1.40's semantics.

* ``matcher`` -- virtual host and route selection, weighted cluster picks.
* ``rewrite`` -- path / host rewrites and redirect locations.
* ``retry`` -- ``x-envoy-*`` request controls, timeouts, ``RetryState`` and back-off.
* ``lb`` / ``lb_hash`` -- load balancers over a host list; request hash policies.
* ``circuit_breaker`` -- per-cluster, per-priority resource limits.
* ``outlier`` -- passive health checking (outlier ejection).
* ``ratelimit`` -- the local rate limit token bucket.
* ``fault`` -- fault injection decisions.
* ``header_match`` -- Envoy's ``HeaderMatcher`` / query parameter semantics, shared by the above.

Nothing here does I/O or touches asyncio: clocks and random generators are passed in.
"""

__all__: list[str] = []
