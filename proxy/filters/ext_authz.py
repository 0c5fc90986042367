"""``envoy.filters.http.ext_authz``: ask an external authorizer (gRPC ``Authorization/Check``
or a plain HTTP service) about each request and act on its answer, as Envoy does.

The filter stops the chain while the check runs (after buffering the body when
``with_request_body`` asks for it; a larger body without ``allow_partial_message`` is 413).
Allowed: the authorizer's header edits reach the upstream request and its
``response_headers`` the client; denied: its status, body and headers go to the client
(``UAEX``, details ``ext_authz_denied``); an error (no answer, a timeout, a 5xx from the HTTP
service) is ``status_on_error`` (403) unless ``failure_mode_allow``. ``filter_enabled_metadata``
skips requests whose dynamic metadata does not match: Istio's CUSTOM action runs only where its
RBAC shadow rules named a policy. Stats: ``http.<hcm>.ext_authz.*`` and
``cluster.<routed cluster>.ext_authz.*``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from envoy.service.auth.v3 import external_auth_pb2

from proxy.config.model_route import FilterDisabled
from proxy.config.translate.ext_authz import (
    ExtAuthzConfig,
    ExtAuthzPerRoute,
    GrpcAuthzService,
    HttpAuthzService,
)
from proxy.http.async_client import HttpCall
from proxy.http.filter import (
    DownstreamCallbacks,
    FilterContext,
    FilterDataStatus,
    FilterHeadersStatus,
    Headers,
    HttpFilter,
)
from proxy.http.headers import get_header, remove_headers, set_header
from proxy.http.local_reply import ResponseFlag
from proxy.http.query import edit_query
from proxy.security.ext_authz import (
    CheckAnswer,
    CheckRequestFacts,
    Verdict,
    answer_from_grpc,
    answer_from_http,
    check_request,
    http_check_headers,
)
from proxy.upstream.h2_unary import H2Unary

if TYPE_CHECKING:
    from proxy.stats import Counter

__all__ = ["EXT_AUTHZ_METADATA", "ExtAuthzFilter", "factory", "grpc_client"]

EXT_AUTHZ_METADATA = "envoy.filters.http.ext_authz"
_NAME = EXT_AUTHZ_METADATA
_CHECK = "/envoy.service.auth.v3.Authorization/Check"
_STATS = ("ok", "denied", "error", "failure_mode_allowed", "disabled")
# A request's way through the filter.
_IDLE, _BUFFERING, _STARTING, _CHECKING, _DONE = range(5)


def grpc_client(service: GrpcAuthzService) -> H2Unary:
    return H2Unary(
        _CHECK,
        external_auth_pb2.CheckRequest.SerializeToString,
        external_auth_pb2.CheckResponse.FromString,
        authority=service.authority,
    )


class _Shared:
    def __init__(
        self, config: ExtAuthzConfig, context: FilterContext, wall: Callable[[], float]
    ) -> None:
        self.config = config
        self.context = context
        self.wall = wall
        service = config.service
        self.grpc = grpc_client(service) if isinstance(service, GrpcAuthzService) else None
        extra = f"{config.stat_prefix}." if config.stat_prefix else ""
        self.prefix = f"ext_authz.{extra}"
        store = context.stats
        base = f"http.{context.stat_prefix}.{self.prefix}"
        self.counters = {name: store.counter(base + name) for name in _STATS}
        self._cluster_counters: dict[tuple[str, str], Counter] = {}

    def stat(self, name: str, cluster: str | None) -> None:
        self.counters[name].value += 1
        if cluster is not None:
            key = (cluster, name)
            counter = self._cluster_counters.get(key)
            if counter is None:
                counter = self.context.stats.counter(f"cluster.{cluster}.{self.prefix}{name}")
                self._cluster_counters[key] = counter
            counter.value += 1


class ExtAuthzFilter(HttpFilter):
    __slots__ = (
        "_answered",
        "_body",
        "_call",
        "_cb",
        "_headers",
        "_response_headers",
        "_shared",
        "_size",
        "_state",
    )

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._cb: DownstreamCallbacks | None = None
        self._headers: Headers | None = None
        self._call: Any = None
        self._body: list[bytes] | None = None
        self._size = 0
        self._state = _IDLE
        self._answered: CheckAnswer | None = None
        self._response_headers: tuple[tuple[bytes, bytes], ...] = ()

    # -- decoding ---------------------------------------------------------------------------
    def decode_headers(
        self, cb: DownstreamCallbacks, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        shared = self._shared
        config = shared.config
        override = cb.per_route_config(_NAME)
        if isinstance(override, FilterDisabled) or (
            isinstance(override, ExtAuthzPerRoute) and override.disabled
        ):
            return FilterHeadersStatus.CONTINUE
        if not self._enabled(cb):
            shared.stat("disabled", cb.stream_info.upstream_cluster)
            if config.deny_at_disable:
                self._reply_error(cb)
                return FilterHeadersStatus.STOP_ITERATION
            return FilterHeadersStatus.CONTINUE
        self._cb = cb
        self._headers = headers
        body = config.with_request_body
        buffering = not (
            isinstance(override, ExtAuthzPerRoute) and override.disable_request_body_buffering
        )
        if body is not None and buffering and not end_stream:
            self._body = []
            self._state = _BUFFERING
            return FilterHeadersStatus.STOP_ITERATION
        answer = self._check(None)
        if answer is None:
            return FilterHeadersStatus.STOP_ALL_ITERATION_AND_BUFFER
        return (
            FilterHeadersStatus.CONTINUE
            if self._apply(answer)
            else FilterHeadersStatus.STOP_ITERATION
        )

    def decode_data(
        self, cb: DownstreamCallbacks, data: bytes, end_stream: bool
    ) -> FilterDataStatus:
        state = self._state
        if state == _CHECKING:
            return FilterDataStatus.STOP_ITERATION_AND_BUFFER
        chunks = self._body
        if state != _BUFFERING or chunks is None:
            return FilterDataStatus.CONTINUE
        settings = self._shared.config.with_request_body
        assert settings is not None
        chunks.append(data)
        self._size += len(data)
        limit = settings.max_request_bytes
        if self._size < limit and not end_stream:
            return FilterDataStatus.STOP_ITERATION_AND_BUFFER
        self._body = None
        if self._size > limit and not settings.allow_partial_message:
            self._state = _DONE
            cb.send_local_reply(413, b"Payload Too Large", details="request_payload_too_large")
            return FilterDataStatus.STOP_ITERATION_NO_BUFFER
        body = b"".join(chunks)
        partial = self._size > limit
        answer = self._check(body[:limit] if partial else body, partial)
        if answer is None:
            return FilterDataStatus.STOP_ITERATION_AND_BUFFER
        if self._apply(answer):
            return FilterDataStatus.CONTINUE  # the held headers and body go on
        return FilterDataStatus.STOP_ITERATION_NO_BUFFER

    def _enabled(self, cb: DownstreamCallbacks) -> bool:
        config = self._shared.config
        if config.filter_enabled is not None and not (
            self._shared.context.rng.random() < config.filter_enabled
        ):
            return False
        matcher = config.filter_enabled_metadata
        return matcher is None or matcher.matches(cb.stream_info.all_dynamic_metadata)

    # -- the check --------------------------------------------------------------------------
    def _check(self, body: bytes | None, partial: bool = False) -> CheckAnswer | None:
        """Start the check; its answer when it came at once (no host, no cluster)."""
        cb = self._cb
        assert cb is not None
        self._state = _STARTING
        service = self._shared.config.service
        if isinstance(service, GrpcAuthzService):
            self._grpc_check(cb, service, body)
        else:
            self._http_check(cb, service, body, partial)
        answer, self._answered = self._answered, None
        self._state = _DONE if answer is not None else _CHECKING
        return answer

    def _grpc_check(
        self, cb: DownstreamCallbacks, service: GrpcAuthzService, body: bytes | None
    ) -> None:
        shared = self._shared
        config = shared.config
        clusters = shared.context.clusters
        target = clusters.pick_host(service.cluster) if clusters is not None else None
        if target is None:
            self._on_answer(CheckAnswer(Verdict.ERROR, error="no healthy authorization host"))
            return
        request = check_request(
            _facts(cb, self._headers or [], body, config, shared.wall()),
            allowed=config.allowed_headers,
            disallowed=config.disallowed_headers,
            pack_as_bytes=config.with_request_body is not None
            and config.with_request_body.pack_as_bytes,
        )
        assert shared.grpc is not None
        self._call = shared.grpc.call(target, request, service.timeout, self._on_grpc)

    def _on_grpc(self, response: Any, error: str | None) -> None:
        self._call = None
        if response is None:
            self._on_answer(CheckAnswer(Verdict.ERROR, error=error or "no answer"))
        else:
            self._on_answer(answer_from_grpc(response))

    def _http_check(
        self,
        cb: DownstreamCallbacks,
        service: HttpAuthzService,
        body: bytes | None,
        partial: bool,
    ) -> None:
        config = self._shared.config
        cluster = cb.runtime.clusters.get(service.cluster)
        if cluster is None:
            self._on_answer(CheckAnswer(Verdict.ERROR, error="authorization cluster not found"))
            return
        headers = http_check_headers(
            self._headers or [],
            get_header(self._headers or [], b"host") or b"",
            allowed=config.allowed_headers,
            disallowed=config.disallowed_headers,
            headers_to_add=service.headers_to_add,
        )
        if body is not None:
            headers.append((b"x-envoy-auth-partial-body", b"true" if partial else b"false"))
        self._call = HttpCall.send(
            cluster,
            cb.method,
            service.path_prefix + cb.path,
            headers,
            body or b"",
            timeout=service.timeout or None,
            timers=cb.timers,
            callbacks=self,
        )

    # HttpCallCallbacks
    def on_call_response(self, status: int, headers: Headers, body: bytes) -> None:
        self._call = None
        service = self._shared.config.service
        assert isinstance(service, HttpAuthzService)
        self._on_answer(
            answer_from_http(
                status,
                headers,
                body,
                upstream=service.upstream,
                upstream_append=service.upstream_append,
                client=service.client,
                client_on_success=service.client_on_success,
            )
        )

    def on_call_failure(self, reason: str) -> None:
        self._call = None
        self._on_answer(CheckAnswer(Verdict.ERROR, error=reason))

    # -- the answer ---------------------------------------------------------------------------
    def _on_answer(self, answer: CheckAnswer) -> None:
        if self._state == _STARTING:
            self._answered = answer  # came before _check returned: it hands it back
            return
        if self._state != _CHECKING:
            return
        self._state = _DONE
        if self._apply(answer):
            cb = self._cb
            assert cb is not None
            cb.continue_decoding()

    def _apply(self, answer: CheckAnswer) -> bool:
        """True when the request may go on."""
        cb = self._cb
        headers = self._headers
        assert cb is not None and headers is not None
        shared = self._shared
        config = shared.config
        cluster = cb.stream_info.upstream_cluster
        if answer.dynamic_metadata:
            cb.stream_info.dynamic_metadata(EXT_AUTHZ_METADATA).update(answer.dynamic_metadata)
        if answer.verdict is Verdict.OK:
            shared.stat("ok", cluster)
            for name, value in answer.headers_to_set:
                set_header(headers, name, value)
            for name, value in answer.headers_to_append:
                _append(headers, name, value)
            if answer.headers_to_remove:
                remove_headers(headers, answer.headers_to_remove)
            if answer.query_to_set or answer.query_to_remove:
                cb.path = edit_query(cb.path, answer.query_to_set, answer.query_to_remove)
            self._response_headers = answer.response_headers
            if config.clear_route_cache and (answer.headers_to_set or answer.headers_to_append):
                cb.clear_route_cache()
            return True
        if answer.verdict is Verdict.DENIED:
            shared.stat("denied", cluster)
            cb.send_local_reply(
                answer.status,
                answer.body,
                flag=ResponseFlag.UNAUTHORIZED_EXTERNAL_SERVICE,
                headers=answer.response_headers,
                details="ext_authz_denied",
            )
            return False
        shared.stat("error", cluster)
        if config.failure_mode_allow:
            shared.stat("failure_mode_allowed", cluster)
            if config.failure_mode_allow_header_add:
                set_header(headers, b"x-envoy-auth-failure-mode-allowed", b"true")
            return True
        self._reply_error(cb)
        return False

    def _reply_error(self, cb: DownstreamCallbacks) -> None:
        cb.send_local_reply(
            self._shared.config.status_on_error,
            b"",
            flag=ResponseFlag.UNAUTHORIZED_EXTERNAL_SERVICE,
            details="ext_authz_error",
        )

    # -- encoding -----------------------------------------------------------------------------
    def encode_headers(
        self, cb: DownstreamCallbacks, status: int, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        extra = self._response_headers
        if extra:
            headers.extend(extra)
        return FilterHeadersStatus.CONTINUE

    def on_destroy(self) -> None:
        call = self._call
        if call is not None:
            self._call = None
            call.cancel()


def _append(headers: Headers, name: bytes, value: bytes) -> None:
    """Envoy's ``appendCopy``: onto the existing value after a comma, or a new header."""
    for index, (key, old) in enumerate(headers):
        if key == name:
            headers[index] = (key, old + b"," + value)
            return
    headers.append((name, value))


def _facts(
    cb: DownstreamCallbacks,
    headers: Headers,
    body: bytes | None,
    config: ExtAuthzConfig,
    now: float,
) -> CheckRequestFacts:
    info = cb.stream_info
    conn = info.connection
    host = get_header(headers, b"host") or b""
    scheme = get_header(headers, b"x-forwarded-proto") or conn.scheme
    pseudo = [(b":authority", host), (b":method", cb.method), (b":path", cb.path)]
    pseudo.append((b":scheme", scheme))
    principal = ""
    if conn.tls:
        principal = conn.peer_uri_sans[0] if conn.peer_uri_sans else conn.peer_subject or ""
    metadata = info.all_dynamic_metadata
    return CheckRequestFacts(
        source=conn.remote_address,
        destination=conn.original_destination,
        source_principal=principal,
        method=cb.method,
        path=cb.path,
        host=host,
        scheme=scheme,
        protocol=info.protocol.decode("latin-1"),
        headers=[*pseudo, *((k, v) for k, v in headers if k != b"host")],
        request_id=get_header(headers, b"x-request-id") or b"",
        start_seconds=now,
        body=body,
        sni=conn.requested_server_name if config.include_tls_session else None,
        metadata_context={
            ns: metadata[ns] for ns in config.metadata_context_namespaces if ns in metadata
        },
        context_extensions=_context_extensions(cb),
    )


def _context_extensions(cb: DownstreamCallbacks) -> dict[str, str]:
    override = cb.per_route_config(_NAME)
    if isinstance(override, ExtAuthzPerRoute):
        return dict(override.context_extensions)
    return {}


def factory(config: object, context: FilterContext) -> Callable[[], HttpFilter]:
    assert isinstance(config, ExtAuthzConfig)
    shared = _Shared(config, context, time.time)
    return lambda: ExtAuthzFilter(shared)
