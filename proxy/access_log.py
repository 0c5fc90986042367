"""Access logs with Envoy's command operators (``%RESPONSE_CODE%``, ``%REQ(X?Y):N%`` ...).

A format is compiled once into a list of small callables; rendering a line is one pass over
it. Lines are buffered and written once a second (Envoy's ``file_flush_interval``) and at
shutdown, so logging costs no syscall per request.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Protocol

from proxy.config.model_http import (
    AccessLog,
    AccessLogFilter,
    AccessLogFilterKind,
    AccessLogSink,
    ComparisonOp,
)
from proxy.http.headers import get_header
from proxy.routing.grpc import GrpcStatus, is_grpc_content_type, response_grpc_status
from proxy.routing.header_match import headers_match
from pymesh.errors import UnsupportedError

if TYPE_CHECKING:
    from proxy.http.stream_info import StreamInfo

__all__ = [
    "AccessLogger",
    "LogWriter",
    "RequestLogger",
    "compile_format",
    "metadata_text",
    "passes_filter",
    "render_format",
]

Headers = list[tuple[bytes, bytes]]
# (stream info, request headers, response headers or None) -> value; operators read only
# these three, as Envoy's formatters read a StreamInfo and header maps.
Operator = Callable[["StreamInfo", Headers, "Headers | None"], "str | int | None"]

_OP = re.compile(r"%([A-Z_0-9]+)(?:\(([^)]*)\))?(?::(\d+))?%")
_NUMERIC = frozenset(
    {"RESPONSE_CODE", "BYTES_RECEIVED", "BYTES_SENT", "DURATION", "UPSTREAM_REQUEST_ATTEMPT_COUNT"}
)


def _start_time(fmt: str | None) -> Operator:
    def render(s: StreamInfo, req: Headers, resp: Headers | None) -> str:
        wall = time.time() - (time.monotonic() - s.start_time)
        if fmt:
            return time.strftime(fmt.replace("%3f", "000"), time.gmtime(wall))
        ms = int((wall % 1) * 1000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{ms:03d}Z"

    return render


def _pseudo(s: StreamInfo, name: str) -> bytes | None:
    if name == ":method":
        return s.method
    if name == ":path":
        return s.path
    if name == ":authority":
        return s.authority
    if name == ":scheme":
        return s.connection.scheme
    return None


def _header(arg: str, response: bool) -> Operator:
    main, _, alt = arg.partition("?")
    names = [n.strip().lower() for n in (main, alt) if n.strip()]

    def render(s: StreamInfo, req: Headers, resp: Headers | None) -> str | None:
        headers = resp if response else req
        for name in names:
            value = _pseudo(s, name) if name.startswith(":") and not response else None
            if value is None and headers is not None and not name.startswith(":"):
                value = get_header(headers, name.encode())
            if value is not None:
                return value.decode("latin-1")
        return None

    return render


def _grpc_status(arg: str | None) -> Operator:
    """Envoy's ``%GRPC_STATUS%``: for a gRPC request only, the status in the trailers, else in
    the headers (trailers-only), else the HTTP status mapped; named as ``arg`` asks."""

    def render(s: StreamInfo, req: Headers, resp: Headers | None) -> str | int | None:
        if not is_grpc_content_type(get_header(req, b"content-type")):
            return None
        status = response_grpc_status(resp, s.response_trailers, s.response_code or None)
        if status is None or arg == "NUMBER":
            return status
        try:
            known = GrpcStatus(status)
        except ValueError:
            return str(status)  # a code of the application's own
        return known.snake if arg == "SNAKE_STRING" else known.camel

    return render


def metadata_text(value: object) -> str:
    """A metadata value as Envoy prints one: strings bare, the rest as compact JSON with
    integral numbers without a fraction (protobuf ``Value`` numbers are doubles)."""
    if isinstance(value, str):
        return value

    def plain(v: object) -> object:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return json.dumps(plain(value), separators=(",", ":"), sort_keys=True)


def _dynamic_metadata(arg: str) -> Operator:
    """``%DYNAMIC_METADATA(NAMESPACE:KEY:...)%``: a namespace, or a value inside it."""
    namespace, *keys = arg.split(":")

    def render(s: StreamInfo, req: Headers, resp: Headers | None) -> str | None:
        value: object = s.all_dynamic_metadata.get(namespace)
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return None if value is None else metadata_text(value)

    return render


def _duration(s: StreamInfo, req: Headers, resp: Headers | None) -> int:
    end = s.end_time if s.end_time is not None else time.monotonic()
    return int((end - s.start_time) * 1000)


def _address(address: tuple[str, int] | None, with_port: bool) -> str | None:
    if address is None:
        return None
    return f"{address[0]}:{address[1]}" if with_port else address[0]


def _operator(name: str, arg: str | None) -> Operator:
    simple: dict[str, Operator] = {
        "RESPONSE_CODE": lambda s, q, r: s.response_code,
        "RESPONSE_FLAGS": lambda s, q, r: s.response_flags_text(),
        "RESPONSE_CODE_DETAILS": lambda s, q, r: s.response_code_details or None,
        "BYTES_RECEIVED": lambda s, q, r: s.bytes_received,
        "BYTES_SENT": lambda s, q, r: s.bytes_sent,
        "DURATION": _duration,
        "PROTOCOL": lambda s, q, r: s.protocol.decode(),
        "UPSTREAM_HOST": lambda s, q, r: s.upstream_host,
        "UPSTREAM_CLUSTER": lambda s, q, r: s.upstream_cluster,
        "UPSTREAM_LOCAL_ADDRESS": lambda s, q, r: s.upstream_local_address,
        # Envoy writes the reason with its spaces as underscores (one token per field).
        "UPSTREAM_TRANSPORT_FAILURE_REASON": lambda s, q, r: (
            s.upstream_transport_failure_reason.replace(" ", "_") or None
        ),
        "CONNECTION_TERMINATION_DETAILS": lambda s, q, r: s.connection_termination_details or None,
        "ROUTE_NAME": lambda s, q, r: s.route_name,
        "DOWNSTREAM_REMOTE_ADDRESS": lambda s, q, r: _address(s.downstream_remote_address, True),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": lambda s, q, r: _address(
            s.downstream_remote_address, False
        ),
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS": lambda s, q, r: _address(
            s.connection.remote_address, True
        ),
        "DOWNSTREAM_LOCAL_ADDRESS": lambda s, q, r: _address(s.connection.local_address, True),
        "UPSTREAM_REQUEST_ATTEMPT_COUNT": lambda s, q, r: s.attempt_count,
        "HOSTNAME": lambda s, q, r: socket.gethostname(),
        "REQUESTED_SERVER_NAME": lambda s, q, r: s.connection.requested_server_name,
        "DOWNSTREAM_TLS_VERSION": lambda s, q, r: s.connection.tls_version,
        "DOWNSTREAM_PEER_URI_SAN": lambda s, q, r: ",".join(s.connection.peer_uri_sans) or None,
        "DOWNSTREAM_PEER_SUBJECT": lambda s, q, r: s.connection.peer_subject,
        "DOWNSTREAM_PEER_FINGERPRINT_256": lambda s, q, r: s.connection.peer_certificate_sha256,
    }
    if name in simple:
        return simple[name]
    if name == "START_TIME":
        return _start_time(arg)
    if name in ("REQ", "RESP") and arg:
        return _header(arg, name == "RESP")
    if name == "DYNAMIC_METADATA" and arg:
        return _dynamic_metadata(arg)
    if name == "GRPC_STATUS" and arg in (None, "CAMEL_STRING", "SNAKE_STRING", "NUMBER"):
        return _grpc_status(arg)
    raise UnsupportedError(f"access log command operator %{name}% is not supported by pymesh")


def _truncate(op: Operator, limit: int) -> Operator:
    def render(s: StreamInfo, req: Headers, resp: Headers | None) -> str | int | None:
        value = op(s, req, resp)
        return value[:limit] if isinstance(value, str) else value

    return render


def compile_format(fmt: str) -> list[str | Operator]:
    parts: list[str | Operator] = []
    pos = 0
    for m in _OP.finditer(fmt):
        if m.start() > pos:
            parts.append(fmt[pos : m.start()])
        op = _operator(m.group(1), m.group(2))
        if m.group(3):
            op = _truncate(op, int(m.group(3)))
        parts.append(op)
        pos = m.end()
    if pos < len(fmt):
        parts.append(fmt[pos:])
    return parts


def render_format(
    parts: list[str | Operator], s: StreamInfo, req: Headers, resp: Headers | None
) -> str:
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
        else:
            v = p(s, req, resp)
            out.append("-" if v is None or v == "" else str(v))
    return "".join(out)


class RequestLogger(Protocol):
    """What the connection manager calls once per finished request."""

    def log(self, info: StreamInfo, req: Headers, resp: Headers | None) -> None: ...


class LogWriter:
    """A buffered sink shared by every logger that writes to the same path."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def open(cls, sink: AccessLogSink, path: str | None) -> LogWriter:
        if sink is AccessLogSink.STDOUT or path == "/dev/stdout":
            return cls(sys.stdout)
        if sink is AccessLogSink.STDERR or path == "/dev/stderr":
            return cls(sys.stderr)
        assert path is not None
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return cls(open(path, "a", encoding="utf-8"))

    def write(self, line: str) -> None:
        self._lines.append(line)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(1.0, self.flush)

    def flush(self) -> None:
        self._timer = None
        if self._lines:
            self._stream.write("".join(self._lines))
            self._lines.clear()
            self._stream.flush()


class AccessLogger:
    def __init__(self, config: AccessLog, writer: LogWriter) -> None:
        self._writer = writer
        self._filter = config.filter
        self._json: list[tuple[str, list[str | Operator], bool]] | None = None
        self._text: list[str | Operator] | None = None
        self._omit_empty = config.omit_empty_values
        if config.json_format is not None:
            self._json = []
            # Envoy writes the keys sorted (the format is a protobuf Struct, a map).
            for key, value in sorted(config.json_format.items()):
                fmt = str(value)
                parts = compile_format(fmt)
                single_numeric = (
                    len(parts) == 1
                    and not isinstance(parts[0], str)
                    and fmt.strip("%").split("(")[0] in _NUMERIC
                )
                self._json.append((key, parts, single_numeric))
        else:
            self._text = compile_format(config.text_format or "")

    def log(self, info: StreamInfo, req: Headers, resp: Headers | None) -> None:
        if self._filter is not None and not passes_filter(self._filter, info, req):
            return
        if self._json is not None:
            record: dict[str, object] = {}
            for key, parts, numeric in self._json:
                if numeric:
                    value = parts[0](info, req, resp)  # type: ignore[operator]
                else:
                    rendered = [p if isinstance(p, str) else p(info, req, resp) for p in parts]
                    if len(rendered) == 1:
                        value = rendered[0]
                    else:
                        value = "".join("" if r is None else str(r) for r in rendered)
                if value is None or value == "":
                    if self._omit_empty:
                        continue
                    value = None
                record[key] = value
            self._writer.write(json.dumps(record, separators=(",", ":")) + "\n")
        else:
            assert self._text is not None
            self._writer.write(render_format(self._text, info, req, resp))


def _compare(op: ComparisonOp, left: float, right: float) -> bool:
    if op is ComparisonOp.EQ:
        return left == right
    if op is ComparisonOp.GE:
        return left >= right
    if op is ComparisonOp.LE:
        return left <= right
    return left != right


def passes_filter(f: AccessLogFilter, s: StreamInfo, req: Headers) -> bool:
    kind = f.kind
    if kind is AccessLogFilterKind.STATUS_CODE:
        return _compare(f.op, s.response_code, f.value)
    if kind is AccessLogFilterKind.DURATION:
        end = s.end_time if s.end_time is not None else time.monotonic()
        return _compare(f.op, end - s.start_time, f.value)
    if kind is AccessLogFilterKind.NOT_HEALTH_CHECK:
        return True
    if kind is AccessLogFilterKind.RESPONSE_FLAG:
        flags = s.response_flags or []
        return bool(flags) if not f.flags else any(fl in f.flags for fl in flags)
    if kind is AccessLogFilterKind.HEADER:
        return f.header is not None and headers_match((f.header,), req)
    if kind is AccessLogFilterKind.AND:
        return all(passes_filter(c, s, req) for c in f.children)
    return any(passes_filter(c, s, req) for c in f.children)
