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
from typing import IO, TYPE_CHECKING

from proxy.config.model_http import (
    AccessLog,
    AccessLogFilter,
    AccessLogFilterKind,
    AccessLogSink,
    ComparisonOp,
)
from proxy.http.headers import get_header
from proxy.http.local_reply import ResponseFlag
from proxy.routing.header_match import headers_match
from pymesh.errors import UnsupportedError

if TYPE_CHECKING:
    from proxy.http.stream import ActiveStream

__all__ = ["AccessLogger", "LogWriter", "compile_format", "render_format"]

Operator = Callable[["ActiveStream"], "str | int | None"]

_OP = re.compile(r"%([A-Z_0-9]+)(?:\(([^)]*)\))?(?::(\d+))?%")
_NUMERIC = frozenset(
    {"RESPONSE_CODE", "BYTES_RECEIVED", "BYTES_SENT", "DURATION", "UPSTREAM_REQUEST_ATTEMPT_COUNT"}
)


def _flags(s: ActiveStream) -> str:
    flags = s.response_flags
    if not flags:
        return "-"
    order = ResponseFlag.ORDER
    return ",".join(sorted(flags, key=lambda f: order.index(f) if f in order else len(order)))


def _start_time(fmt: str | None) -> Operator:
    def render(s: ActiveStream) -> str:
        wall = time.time() - (s.loop.time() - s.start_time)
        if fmt:
            return time.strftime(fmt.replace("%3f", "000"), time.gmtime(wall))
        ms = int((wall % 1) * 1000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{ms:03d}Z"

    return render


def _header(arg: str, response: bool) -> Operator:
    main, _, alt = arg.partition("?")
    names = [n.strip().lower() for n in (main, alt) if n.strip()]

    def pseudo(s: ActiveStream, name: str) -> bytes | None:
        if name == ":method":
            return s.method
        if name == ":path":
            return s.original_path
        if name == ":authority":
            return s.authority
        if name == ":scheme":
            return s.conn.scheme
        return None

    def render(s: ActiveStream) -> str | None:
        headers = s.response_headers if response else s.request_headers
        for name in names:
            value = pseudo(s, name) if name.startswith(":") and not response else None
            if value is None and headers is not None and not name.startswith(":"):
                value = get_header(headers, name.encode())
            if value is not None:
                return value.decode("latin-1")
        return None

    return render


def _duration(s: ActiveStream) -> int:
    return int((s.loop.time() - s.start_time) * 1000)


def _remote(with_port: bool) -> Operator:
    def render(s: ActiveStream) -> str:
        transport = s.conn.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        if isinstance(peer, tuple):
            return f"{peer[0]}:{peer[1]}" if with_port else str(peer[0])
        return s.downstream_address

    return render


def _local(s: ActiveStream) -> str | None:
    local = s.conn.local_address
    return f"{local[0]}:{local[1]}" if local else None


def _operator(name: str, arg: str | None) -> Operator:
    simple: dict[str, Operator] = {
        "RESPONSE_CODE": lambda s: s.response_code,
        "RESPONSE_FLAGS": _flags,
        "RESPONSE_CODE_DETAILS": lambda s: s.response_details or None,
        "BYTES_RECEIVED": lambda s: s.bytes_received,
        "BYTES_SENT": lambda s: s.bytes_sent,
        "DURATION": _duration,
        "PROTOCOL": lambda s: "HTTP/" + s.request.http_version.decode(),
        "UPSTREAM_HOST": lambda s: s.upstream_host,
        "UPSTREAM_CLUSTER": lambda s: s.cluster_name,
        "ROUTE_NAME": lambda s: s.route.name if s.route is not None and s.route.name else None,
        "DOWNSTREAM_REMOTE_ADDRESS": _remote(True),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": _remote(False),
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS": _remote(True),
        "DOWNSTREAM_LOCAL_ADDRESS": _local,
        "UPSTREAM_REQUEST_ATTEMPT_COUNT": lambda s: s.router.attempts if s.router else 0,
        "HOSTNAME": lambda s: socket.gethostname(),
        "REQUESTED_SERVER_NAME": lambda s: None,
    }
    if name in simple:
        return simple[name]
    if name == "START_TIME":
        return _start_time(arg)
    if name in ("REQ", "RESP") and arg:
        return _header(arg, name == "RESP")
    raise UnsupportedError(f"access log command operator %{name}% is not supported by pymesh")


def _truncate(op: Operator, limit: int) -> Operator:
    def render(s: ActiveStream) -> str | int | None:
        value = op(s)
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


def render_format(parts: list[str | Operator], s: ActiveStream) -> str:
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
        else:
            v = p(s)
            out.append("-" if v is None or v == "" else str(v))
    return "".join(out)


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

    def log(self, stream: ActiveStream) -> None:
        if self._filter is not None and not _evaluate(self._filter, stream):
            return
        if self._json is not None:
            record: dict[str, object] = {}
            for key, parts, numeric in self._json:
                if numeric:
                    value = parts[0](stream)  # type: ignore[operator]
                else:
                    rendered = [p if isinstance(p, str) else p(stream) for p in parts]
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
            self._writer.write(render_format(self._text, stream))


def _compare(op: ComparisonOp, left: float, right: float) -> bool:
    if op is ComparisonOp.EQ:
        return left == right
    if op is ComparisonOp.GE:
        return left >= right
    if op is ComparisonOp.LE:
        return left <= right
    return left != right


def _evaluate(f: AccessLogFilter, s: ActiveStream) -> bool:
    kind = f.kind
    if kind is AccessLogFilterKind.STATUS_CODE:
        return _compare(f.op, s.response_code, f.value)
    if kind is AccessLogFilterKind.DURATION:
        return _compare(f.op, s.loop.time() - s.start_time, f.value)
    if kind is AccessLogFilterKind.NOT_HEALTH_CHECK:
        return True
    if kind is AccessLogFilterKind.RESPONSE_FLAG:
        flags = s.response_flags or []
        return bool(flags) if not f.flags else any(fl in f.flags for fl in flags)
    if kind is AccessLogFilterKind.HEADER:
        return f.header is not None and headers_match((f.header,), s.request_headers)
    if kind is AccessLogFilterKind.AND:
        return all(_evaluate(c, s) for c in f.children)
    return any(_evaluate(c, s) for c in f.children)
