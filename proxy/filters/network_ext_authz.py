"""``envoy.filters.network.ext_authz``: ask the gRPC authorizer about a connection before the
TCP proxy carries its first bytes (Istio's CUSTOM action on TCP ports).

The ``CheckRequest`` carries the peers only (addresses, the client's principal, the SNI with
``include_tls_session``). Allowed: the held bytes go on; denied: the connection is closed; an
error too, unless ``failure_mode_allow``. ``filter_enabled_metadata`` reads the connection's
metadata (the network RBAC filter's shadow verdict). Stats: ``ext_authz.<stat_prefix>.*``
(``ok``, ``denied``, ``error``, ``failure_mode_allowed``, ``disabled``, ``total``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from proxy.config.translate.ext_authz import ExtAuthzConfig, GrpcAuthzService
from proxy.filters.ext_authz import grpc_client
from proxy.http.filter import FilterContext
from proxy.network_filter import NetworkCallbacks, ReadFilter, ReadFilterStatus
from proxy.security.ext_authz import CheckRequestFacts, Verdict, answer_from_grpc, check_request
from proxy.upstream.h2_unary import H2Unary, H2UnaryCall

__all__ = ["NetworkExtAuthzFilter", "network_factory"]

_STATS = ("ok", "denied", "error", "failure_mode_allowed", "disabled", "total")


class _Shared:
    def __init__(self, config: ExtAuthzConfig, context: FilterContext) -> None:
        assert isinstance(config.service, GrpcAuthzService)
        self.config = config
        self.service = config.service
        self.context = context
        self.client: H2Unary = grpc_client(config.service)
        prefix = f"ext_authz.{config.stat_prefix}"
        self.counters = {n: context.stats.counter(prefix + n) for n in _STATS}

    def stat(self, name: str) -> None:
        self.counters[name].value += 1


class NetworkExtAuthzFilter(ReadFilter):
    __slots__ = ("_call", "_cb", "_decided", "_shared")

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._decided = False
        self._call: H2UnaryCall | None = None
        self._cb: NetworkCallbacks | None = None

    def on_data(self, cb: NetworkCallbacks, data: bytes) -> ReadFilterStatus:
        if self._decided:
            return ReadFilterStatus.CONTINUE
        if self._call is not None:
            return ReadFilterStatus.STOP_ITERATION
        shared = self._shared
        config = shared.config
        matcher = config.filter_enabled_metadata
        if matcher is not None and not matcher.matches(cb.all_dynamic_metadata):
            shared.stat("disabled")
            self._decided = True
            return ReadFilterStatus.CONTINUE
        clusters = shared.context.clusters
        target = clusters.pick_host(shared.service.cluster) if clusters is not None else None
        shared.stat("total")
        if target is None:
            return self._error(cb)
        conn = cb.connection_info
        principal = ""
        if conn.tls:
            principal = conn.peer_uri_sans[0] if conn.peer_uri_sans else conn.peer_subject or ""
        facts = CheckRequestFacts(
            source=conn.remote_address,
            destination=conn.original_destination,
            source_principal=principal,
            method=b"",
            path=b"",
            host=b"",
            scheme=b"",
            protocol="",
            headers=[],
            request_id=b"",
            start_seconds=time.time(),
            sni=conn.requested_server_name if config.include_tls_session else None,
        )
        request = check_request(facts, allowed=None, disallowed=())
        request.attributes.request.ClearField("http")
        self._cb = cb
        self._call = shared.client.call(target, request, shared.service.timeout, self._answer)
        return ReadFilterStatus.STOP_ITERATION

    def _answer(self, response: Any, error: str | None) -> None:
        self._call = None
        cb = self._cb
        assert cb is not None
        if response is None:
            if self._error(cb) is ReadFilterStatus.CONTINUE:
                cb.continue_reading()
            return
        answer = answer_from_grpc(response)
        self._decided = True
        if answer.verdict is Verdict.OK:
            self._shared.stat("ok")
            cb.continue_reading()
            return
        self._shared.stat("denied")
        cb.close("ext_authz_denied")

    def _error(self, cb: NetworkCallbacks) -> ReadFilterStatus:
        shared = self._shared
        shared.stat("error")
        self._decided = True
        if shared.config.failure_mode_allow:
            shared.stat("failure_mode_allowed")
            return ReadFilterStatus.CONTINUE
        cb.close("ext_authz_error")
        return ReadFilterStatus.STOP_ITERATION

    def on_close(self) -> None:
        call = self._call
        if call is not None:
            self._call = None
            call.cancel()


def network_factory(config: object, context: FilterContext) -> Callable[[], ReadFilter]:
    assert isinstance(config, ExtAuthzConfig)
    shared = _Shared(config, context)
    return lambda: NetworkExtAuthzFilter(shared)
