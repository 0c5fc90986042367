"""The node's service proxy (kube-proxy's role) for pods without a sidecar.

In Kubernetes a pod without a sidecar (Istio's ``legacy`` namespace) reaches ``httpbin.foo:8000``
through cluster DNS and kube-proxy: the Service's port becomes a connection to one of its pods'
addresses on the target port, plaintext, where that pod's sidecar (if it has one) receives it.
The demo has neither, so a sidecar-less pod's ``HTTP_PROXY`` points here (in netns mode on
the host's bridge address, where such a pod, with no capture rules, reaches it): the request's
host and port name the Service, and the bytes go to ``<pod address>:<targetPort>`` unchanged
but for the request line's origin form. There is no mesh here: no identity, no TLS, no
routing rule, nothing a sidecar would add.

A Service that does not exist, or has no running pod, or a pod that closes the connection
before answering (a STRICT sidecar refusing plaintext), resets the client's connection: curl
says ``000``, as it does in Istio's tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

__all__ = [
    "ProxyRequest",
    "ServicePort",
    "ServiceProxy",
    "ServiceTable",
    "parse_request",
]

log = structlog.get_logger(__name__)

_MAX_HEAD = 64 * 1024
_DROPPED = frozenset({b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive"})
_SUFFIXES = (".svc.cluster.local", ".svc")


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    host: str
    port: int
    #: the head to send to the pod: origin-form request line, ``Connection: close``
    head: bytes


def parse_request(head: bytes) -> ProxyRequest:
    """A forward-proxy request head (through ``\\r\\n\\r\\n``); ValueError says what is wrong."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x request line: {lines[0][:80]!r}")
    method, target, version = parts
    if method == b"CONNECT":
        raise ValueError("CONNECT is not supported: send http:// URLs")
    authority = b""
    path = target
    if target.lower().startswith(b"http://"):
        rest = target[len(b"http://") :]
        authority, slash, tail = rest.partition(b"/")
        path = slash + tail or b"/"
    headers = [line for line in lines[1:] if line]
    if not authority:
        hosts = [h.partition(b":")[2].strip() for h in headers if h.lower().startswith(b"host:")]
        authority = hosts[0] if hosts else b""
    if not authority:
        raise ValueError("the request names no host")
    text = authority.decode("ascii", "replace")
    host, colon, port_text = text.rpartition(":")
    if not colon or not port_text.isdigit():
        host, port_text = text, "80"
    kept = [h for h in headers if h.partition(b":")[0].strip().lower() not in _DROPPED]
    out = b"\r\n".join([b" ".join((method, path, version)), *kept, b"Connection: close"])
    return ProxyRequest(host.lower(), int(port_text), out + b"\r\n\r\n")


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    target: int | str


@dataclass(frozen=True, slots=True)
class _Service:
    selector: Mapping[str, str]
    ports: tuple[ServicePort, ...]


@dataclass(frozen=True, slots=True)
class _Pod:
    namespace: str
    labels: Mapping[str, str]
    ip: str
    container_port: int | None


@dataclass(frozen=True, slots=True)
class ServiceTable:
    """Services (from pilot's Kubernetes JSON) and the running pods behind them."""

    services: Mapping[tuple[str, str], _Service] = field(default_factory=dict)
    pods: tuple[_Pod, ...] = ()

    @classmethod
    def build(
        cls,
        items: Iterable[Mapping[str, Any]],
        pods: Iterable[tuple[str, Mapping[str, str], str, int | None]],
    ) -> ServiceTable:
        """``pods``: (namespace, labels, address, container port) of each running pod."""
        services = {}
        for item in items:
            if item.get("kind") != "Service":
                continue
            meta, spec = item.get("metadata") or {}, item.get("spec") or {}
            name = str(meta.get("name", ""))
            if not name:
                continue
            ports = tuple(
                ServicePort(int(p["port"]), p.get("targetPort") or int(p["port"]))
                for p in spec.get("ports") or ()
                if isinstance(p, Mapping) and isinstance(p.get("port"), int)
            )
            selector = {str(k): str(v) for k, v in (spec.get("selector") or {}).items()}
            services[(name, str(meta.get("namespace") or "default"))] = _Service(selector, ports)
        return cls(services, tuple(_Pod(ns, dict(lb), ip, cp) for ns, lb, ip, cp in pods))

    def endpoints(self, host: str, port: int) -> list[tuple[str, int]]:
        """Where a connection to ``host:port`` goes: ``name.namespace[.svc[.cluster.local]]``
        (a bare name means ``default``: there is no caller's namespace to search)."""
        for suffix in _SUFFIXES:
            if host.endswith(suffix):
                host = host[: -len(suffix)]
                break
        name, _, namespace = host.partition(".")
        service = self.services.get((name, namespace or "default"))
        if service is None or not service.selector:
            return []
        found = []
        for service_port in service.ports:
            if service_port.port != port:
                continue
            for pod in self.pods:
                if pod.namespace != (namespace or "default"):
                    continue
                if any(pod.labels.get(k) != v for k, v in service.selector.items()):
                    continue
                target = service_port.target
                if isinstance(target, str):
                    target = int(target) if target.isdigit() else pod.container_port or 0
                if target:
                    found.append((pod.ip, target))
        return found


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, half_close: bool
) -> int:
    total = 0
    try:
        while data := await reader.read(65536):
            total += len(data)
            writer.write(data)
            await writer.drain()
        if half_close and writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    return total


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, as a refused connection reaches curl (exit 56, code 000)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ServiceProxy:
    """The service proxy on ``address:port``; ``table()`` gives the current services."""

    def __init__(self, address: str, port: int, table: Callable[[], ServiceTable]) -> None:
        self.address, self.port = address, port
        self._table = table
        self._server: asyncio.Server | None = None
        self._turn = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.address, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    def _pick(self, endpoints: Sequence[tuple[str, int]]) -> tuple[str, int]:
        self._turn += 1
        return endpoints[self._turn % len(endpoints)]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(30.0):
                head = await reader.readuntil(b"\r\n\r\n")
            request = parse_request(head[:_MAX_HEAD])
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            log.debug("service proxy: no request", error=str(exc))
            _reset(writer)
            return
        except ValueError as exc:
            body = f"{exc}\n".encode()
            writer.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
            writer.close()
            return
        endpoints = self._table().endpoints(request.host, request.port)
        if not endpoints:
            log.info("service proxy: no endpoint", host=request.host, port=request.port)
            _reset(writer)
            return
        ip, port = self._pick(endpoints)
        try:
            async with asyncio.timeout(5.0):
                up_reader, up_writer = await asyncio.open_connection(ip, port)
        except (OSError, TimeoutError) as exc:
            log.info("service proxy: connect failed", endpoint=f"{ip}:{port}", error=str(exc))
            _reset(writer)
            return
        up_writer.write(request.head)
        sent = asyncio.ensure_future(_pipe(reader, up_writer, half_close=True))
        # The client's end is closed by us: a reset when the pod answered nothing.
        answered = await _pipe(up_reader, writer, half_close=False)
        sent.cancel()
        up_writer.close()
        if answered:
            writer.close()
        else:
            _reset(writer)
