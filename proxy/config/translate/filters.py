"""HTTP filter configs: the translator registry and pymesh's built-in filters.

A translator turns one filter's ``typed_config`` message (already unpacked and checked
against ``support``) into the frozen config object the filter reads. The registry is an
explicit object handed to the translators (no module-level state): a user-written filter
registers its own proto message and translator on the registry it passes in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from google.protobuf.message import Message

from proxy.config.model import (
    CorsFilterConfig,
    CorsPolicy,
    FaultAbort,
    FaultConfig,
    FaultDelay,
    FilterDisabled,
    LocalRateLimitConfig,
    LocalRateLimitDescriptor,
    RouterConfig,
    TokenBucket,
)
from proxy.config.translate.common import (
    at,
    duration,
    fractional_percent,
    frozen_mapping,
    header_matcher,
    header_name,
    header_value_options,
    join,
    string_matcher,
    wrapped,
)
from proxy.config.translate.ratelimit import rate_limit_filter, rate_limit_per_route
from proxy.config.translate.support import config_type_url, unpack
from pymesh.errors import UnsupportedError, ValidationError

__all__ = [
    "FilterEntry",
    "FilterRegistry",
    "FilterTranslator",
    "cors_policy",
    "default_registry",
    "typed_per_filter_config",
]

FilterTranslator = Callable[[Any, str], object]
"""``translator(message, path) -> config``: raise ``ValidationError`` with ``path`` on error."""

RuntimeFactory = Callable[[Any, Any], Callable[[], Any]]
"""``factory(config, context) -> make_filter``: the proxy's
:data:`proxy.http.filter.FilterFactory`, typed loosely here so that translation does not
depend on the runtime."""

_TYPE_PREFIX = "type.googleapis.com/"
_FILTER_CONFIG_URL = _TYPE_PREFIX + "envoy.config.route.v3.FilterConfig"


@dataclass(frozen=True, slots=True)
class FilterEntry:
    """One filter's registration: its config message (the type URL), how to translate it and
    its per-route config, and the ``factory`` the proxy builds per snapshot to make one filter
    per request. ``per_route_message`` / ``per_route`` translate the
    ``typed_per_filter_config`` entries (when None the filter takes no per-route config).
    ``terminal`` filters end the chain (the router). ``supported`` lists, per message type,
    the fields a user filter implements (pymesh's own are in ``support.SUPPORTED``); any
    other set field is refused, as for built-in filters. A filter without a ``factory`` can be
    validated but not run."""

    name: str
    message: type[Message]
    translate: FilterTranslator
    per_route_message: type[Message] | None = None
    per_route: FilterTranslator | None = None
    terminal: bool = False
    supported: Mapping[str, frozenset[str]] = field(default_factory=dict)
    factory: RuntimeFactory | None = None
    # A network read filter (on a filter chain, before the TCP proxy), not an HTTP filter.
    network: bool = False

    @property
    def type_url(self) -> str:
        return f"{_TYPE_PREFIX}{self.message.DESCRIPTOR.full_name}"


@dataclass(slots=True)
class FilterRegistry:
    """HTTP filter translators by canonical filter name and by ``typed_config`` type URL."""

    by_name: dict[str, FilterEntry] = field(default_factory=dict)
    by_type_url: dict[str, FilterEntry] = field(default_factory=dict)
    per_route_by_type_url: dict[str, FilterEntry] = field(default_factory=dict)

    def register(self, entry: FilterEntry, aliases: Iterable[str] = ()) -> None:
        for name in (entry.name, *aliases):
            self.by_name[name] = entry
        self.by_type_url[entry.type_url] = entry
        if entry.per_route_message is not None:
            url = _TYPE_PREFIX + entry.per_route_message.DESCRIPTOR.full_name
            self.per_route_by_type_url[url] = entry

    def entry_for(self, name: str, type_url: str) -> FilterEntry | None:
        """The registration of a translated filter (by type URL, else by name)."""
        return self.by_type_url.get(type_url) or self.by_name.get(name)

    def lookup(self, name: str, type_url: str | None, path: str) -> FilterEntry:
        """The entry for a filter: by type URL when it has a typed_config, else by name."""
        entry = self.by_type_url.get(type_url) if type_url else self.by_name.get(name)
        if entry is not None and entry.network:
            entry = None
        if entry is None:
            shown = f" ({type_url})" if type_url else ""
            raise UnsupportedError(f"filter '{name}'{shown} is not supported by pymesh", path=path)
        return entry

    def translate(self, name: str, any_config: Any | None, path: str) -> tuple[FilterEntry, object]:
        """Translate an HTTP filter's ``typed_config`` (``None`` = no config: defaults)."""
        type_url = config_type_url(any_config) if any_config is not None else None
        entry = self.lookup(name, type_url, path)
        config_path = join(path, "typed_config")
        message = (
            unpack(any_config, entry.message, config_path, entry.supported)
            if any_config is not None
            else entry.message()
        )
        return entry, entry.translate(message, config_path)

    def translate_per_route(self, filter_name: str, any_config: Any, path: str) -> object:
        entry = self.per_route_by_type_url.get(config_type_url(any_config))
        if entry is None or entry.per_route_message is None or entry.per_route is None:
            raise UnsupportedError(
                f"per-route config for filter '{filter_name}' ({any_config.type_url}) is not "
                "supported by pymesh",
                path=path,
            )
        message = unpack(any_config, entry.per_route_message, path, entry.supported)
        return entry.per_route(message, path)


def default_registry() -> FilterRegistry:
    """A registry with pymesh's built-in filters (router, fault, local_ratelimit, ratelimit,
    cors)."""
    # The factories live with the filters' runtime code, which imports this package.
    from proxy.filters import builtin_factories

    factories = builtin_factories()
    registry = FilterRegistry()
    registry.register(
        FilterEntry(
            "envoy.filters.http.router",
            router_pb2.Router,
            _router,
            terminal=True,
            factory=factories["envoy.filters.http.router"],
        ),
        aliases=("envoy.router",),
    )
    registry.register(
        FilterEntry(
            "envoy.filters.http.fault",
            fault_pb2.HTTPFault,
            _fault,
            per_route_message=fault_pb2.HTTPFault,
            per_route=_fault,
            factory=factories["envoy.filters.http.fault"],
        ),
        aliases=("envoy.fault",),
    )
    registry.register(
        FilterEntry(
            "envoy.filters.http.local_ratelimit",
            local_rate_limit_pb2.LocalRateLimit,
            _local_ratelimit,
            per_route_message=local_rate_limit_pb2.LocalRateLimit,
            per_route=_local_ratelimit,
            factory=factories["envoy.filters.http.local_ratelimit"],
        )
    )
    registry.register(
        FilterEntry(
            "envoy.filters.http.ratelimit",
            rate_limit_pb2.RateLimit,
            rate_limit_filter,
            per_route_message=rate_limit_pb2.RateLimitPerRoute,
            per_route=rate_limit_per_route,
            factory=factories["envoy.filters.http.ratelimit"],
        ),
        aliases=("envoy.rate_limit",),
    )
    registry.register(
        FilterEntry(
            "envoy.filters.http.cors",
            cors_pb2.Cors,
            lambda message, path: CorsFilterConfig(),
            per_route_message=cors_pb2.CorsPolicy,
            per_route=cors_policy,
            factory=factories["envoy.filters.http.cors"],
        ),
        aliases=("envoy.cors",),
    )
    from proxy.config.translate.security_filters import security_entries

    for entry, aliases in security_entries(factories):
        registry.register(entry, aliases)
    from proxy.config.translate.istio import istio_entries

    for entry, aliases in istio_entries(factories):
        registry.register(entry, aliases)
    return registry


def typed_per_filter_config(
    entries: Mapping[str, Any], registry: FilterRegistry, path: str
) -> Mapping[str, object]:
    """Per-filter configs by filter name, translated by the filter's own translator."""
    result: dict[str, object] = {}
    for name in sorted(entries):
        entry_path = at(path, name)
        config = entries[name]
        is_optional = False
        if config.type_url == _FILTER_CONFIG_URL:
            wrapper = unpack(config, route_components_pb2.FilterConfig, entry_path)
            is_optional = wrapper.is_optional
            if wrapper.disabled:
                result[name] = FilterDisabled(is_optional=is_optional)
                continue
            if not wrapper.HasField("config"):
                raise ValidationError("config is required unless disabled", path=entry_path)
            config = wrapper.config
            entry_path = join(entry_path, "config")
        try:
            result[name] = registry.translate_per_route(name, config, entry_path)
        except UnsupportedError:
            # Envoy skips an optional filter's config when it lacks the filter; so do we.
            if not is_optional:
                raise
    return frozen_mapping(result)


# --- built-in translators ------------------------------------------------------------------


def _router(message: Any, path: str) -> RouterConfig:
    return RouterConfig(
        dynamic_stats=wrapped(message, "dynamic_stats", True),
        start_child_span=message.start_child_span,
        suppress_envoy_headers=message.suppress_envoy_headers,
        strict_check_headers=tuple(
            header_name(name, join(path, "strict_check_headers"))
            for name in message.strict_check_headers
        ),
        respect_expected_rq_timeout=message.respect_expected_rq_timeout,
        suppress_grpc_request_failure_code_stats=message.suppress_grpc_request_failure_code_stats,
    )


def _fault(message: Any, path: str) -> FaultConfig:
    delay = None
    if message.HasField("delay"):
        spec = message.delay
        kind = spec.WhichOneof("fault_delay_secifier")
        if kind is None:
            raise ValidationError(
                "one of [fixed_delay, header_delay] is required", path=join(path, "delay")
            )
        delay = FaultDelay(
            fixed_delay=duration(spec.fixed_delay) if kind == "fixed_delay" else None,
            header_delay=kind == "header_delay",
            percentage=fractional_percent(spec.percentage),
        )
    abort = None
    if message.HasField("abort"):
        spec = message.abort
        kind = spec.WhichOneof("error_type")
        if kind == "grpc_status":
            raise UnsupportedError(
                "gRPC fault aborts are not supported by pymesh (HTTP/1.1 only)",
                path=join(path, "abort.grpc_status"),
            )
        abort = FaultAbort(
            http_status=spec.http_status if kind == "http_status" else None,
            header_abort=kind == "header_abort",
            percentage=fractional_percent(spec.percentage),
        )
    return FaultConfig(
        delay=delay,
        abort=abort,
        upstream_cluster=message.upstream_cluster or None,
        headers=tuple(
            header_matcher(item, f"{join(path, 'headers')}[{index}]")
            for index, item in enumerate(message.headers)
        ),
        downstream_nodes=frozenset(message.downstream_nodes),
        max_active_faults=wrapped(message, "max_active_faults", None),
        disable_downstream_cluster_stats=message.disable_downstream_cluster_stats,
    )


def _token_bucket(spec: Any, path: str) -> TokenBucket:
    fill = duration(spec.fill_interval)
    if fill < 0.05:
        # Envoy: "local rate limit token bucket fill timer must be >= 50ms"
        raise ValidationError(
            "local rate limit token bucket fill timer must be >= 50ms",
            path=join(path, "fill_interval"),
        )
    return TokenBucket(
        max_tokens=spec.max_tokens,
        tokens_per_fill=wrapped(spec, "tokens_per_fill", 1),
        fill_interval=fill,
    )


def _local_descriptors(message: Any, path: str) -> tuple[LocalRateLimitDescriptor, ...]:
    found: list[LocalRateLimitDescriptor] = []
    for index, item in enumerate(message.descriptors):
        item_path = at(join(path, "descriptors"), index)
        entries = tuple((entry.key, entry.value) for entry in item.entries)
        if any(d.entries == entries for d in found):
            raise ValidationError(
                f"duplicate descriptor in the local rate descriptor: {entries}", path=item_path
            )
        found.append(
            LocalRateLimitDescriptor(
                entries, _token_bucket(item.token_bucket, join(item_path, "token_bucket"))
            )
        )
    return tuple(found)


def _local_ratelimit(message: Any, path: str) -> LocalRateLimitConfig:
    bucket = None
    if message.HasField("token_bucket"):
        bucket = _token_bucket(message.token_bucket, join(path, "token_bucket"))
    status = message.status.code if message.HasField("status") else 429
    return LocalRateLimitConfig(
        stat_prefix=message.stat_prefix,
        token_bucket=bucket,
        filter_enabled=_runtime_fraction(message, "filter_enabled", 0.0),
        filter_enforced=_runtime_fraction(message, "filter_enforced", 0.0),
        status=status,
        response_headers_to_add=header_value_options(
            message.response_headers_to_add, join(path, "response_headers_to_add")
        ),
        request_headers_to_add_when_not_enforced=header_value_options(
            message.request_headers_to_add_when_not_enforced,
            join(path, "request_headers_to_add_when_not_enforced"),
        ),
        local_rate_limit_per_downstream_connection=(
            message.local_rate_limit_per_downstream_connection
        ),
        enable_x_ratelimit_headers=message.enable_x_ratelimit_headers != 0,
        descriptors=_local_descriptors(message, path),
        stage=message.stage,
        vh_rate_limits=("OVERRIDE", "INCLUDE", "IGNORE")[message.vh_rate_limits],
        always_consume_default_token_bucket=wrapped(
            message, "always_consume_default_token_bucket", True
        ),
    )


def _runtime_fraction(message: Any, field_name: str, default: float) -> float:
    if not message.HasField(field_name):
        return default
    return fractional_percent(getattr(message, field_name).default_value)


def cors_policy(message: Any, path: str) -> CorsPolicy:
    """``route.v3.CorsPolicy`` or the cors filter's per-route ``CorsPolicy`` (same fields)."""

    def text(name: str) -> bytes | None:
        value: str = getattr(message, name)
        return value.encode() if value else None

    return CorsPolicy(
        allow_origin_string_match=tuple(
            string_matcher(item, f"{join(path, 'allow_origin_string_match')}[{index}]")
            for index, item in enumerate(message.allow_origin_string_match)
        ),
        allow_methods=text("allow_methods"),
        allow_headers=text("allow_headers"),
        expose_headers=text("expose_headers"),
        max_age=text("max_age"),
        allow_credentials=wrapped(message, "allow_credentials", None),
        allow_private_network_access=wrapped(message, "allow_private_network_access", None),
        filter_enabled=_runtime_fraction(message, "filter_enabled", 1.0),
        shadow_enabled=(
            _runtime_fraction(message, "shadow_enabled", 0.0)
            if message.HasField("shadow_enabled")
            else None
        ),
        forward_not_matching_preflights=wrapped(message, "forward_not_matching_preflights", True),
    )
