"""The ``sleep`` workload's client: the part of curl that Istio's tasks type.

``python -m pymesh.samples.sleep [-s] [-S] [-v] [-i] [-I] [-f] [-X METHOD] [-H 'k: v']...
[-d DATA]... [-A UA] [-o FILE] [-w FORMAT] [-m SECONDS] [--connect-timeout S] [-x PROXY] URL``

http:// URLs go through ``HTTP_PROXY``/``http_proxy`` (minus ``NO_PROXY``), which is how a
process-mode pod reaches its sidecar; without a proxy it connects directly. Output and exit
codes follow curl: the body on stdout, ``-w`` after it, ``000`` and a non-zero status when no
response came. :func:`curl` runs the same thing in-process and returns what would be printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

import aiohttp
from yarl import URL

from pymesh import __version__
from pymesh.samples.runtime import proxy_for

__all__ = ["USER_AGENT", "CurlOptions", "CurlResult", "UsageError", "curl", "main", "parse_args"]

USER_AGENT = f"pymesh-sleep/{__version__}"

# curl's exit codes for the failures a mesh produces.
_EXIT_USAGE = 2
_EXIT_BAD_URL = 3
_EXIT_RESOLVE = 6
_EXIT_CONNECT = 7
_EXIT_PARTIAL = 18
_EXIT_FILE = 26
_EXIT_HTTP_ERROR = 22
_EXIT_TIMEOUT = 28
_EXIT_EMPTY_REPLY = 52
_EXIT_RECV = 56


@dataclass(frozen=True, slots=True)
class CurlOptions:
    """A parsed command line."""

    url: str
    method: str | None = None
    headers: tuple[str, ...] = ()
    # (option as typed, value): -d reads @file without newlines, --data-binary as is,
    # --data-raw never reads a file.
    data: tuple[tuple[str, str], ...] = ()
    silent: bool = False
    show_error: bool = False
    verbose: bool = False
    include: bool = False
    head: bool = False
    fail: bool = False
    output: str | None = None
    write_out: str | None = None
    user_agent: str | None = None
    max_time: float | None = None
    connect_timeout: float | None = None
    proxy: str | None = None


@dataclass(frozen=True, slots=True)
class CurlResult:
    """What one run produced: the response (``http_code`` 0 when none) and the output."""

    exit_code: int
    http_code: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    stdout: bytes = b""
    stderr: str = ""
    time_total: float = 0.0


class UsageError(Exception):
    """The command line cannot be understood."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class _Data(argparse.Action):
    """Keeps each -d value with the option that gave it, in command-line order."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        items = list(getattr(namespace, self.dest, None) or ())
        items.append((option_string or "-d", str(values)))
        setattr(namespace, self.dest, items)


def parse_args(argv: Sequence[str]) -> CurlOptions:
    """Parse a curl-style command line; raises :class:`UsageError`."""
    p = _Parser(prog="sleep", add_help=False)
    p.add_argument("url")
    p.add_argument("-X", "--request", dest="method")
    p.add_argument("-H", "--header", dest="headers", action="append", default=[])
    p.add_argument("-d", "--data", "--data-raw", "--data-binary", dest="data", action=_Data)
    p.add_argument("-s", "--silent", action="store_true")
    p.add_argument("-S", "--show-error", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-i", "--include", action="store_true")
    p.add_argument("-I", "--head", action="store_true")
    p.add_argument("-f", "--fail", action="store_true")
    p.add_argument("-o", "--output")
    p.add_argument("-w", "--write-out")
    p.add_argument("-A", "--user-agent")
    p.add_argument("-m", "--max-time", type=float)
    p.add_argument("--connect-timeout", type=float)
    p.add_argument("-x", "--proxy")
    ns = p.parse_args(list(argv))
    return CurlOptions(
        url=ns.url,
        method=ns.method,
        headers=tuple(ns.headers),
        data=tuple(ns.data or ()),
        silent=ns.silent,
        show_error=ns.show_error,
        verbose=ns.verbose,
        include=ns.include,
        head=ns.head,
        fail=ns.fail,
        output=ns.output,
        write_out=ns.write_out,
        user_agent=ns.user_agent,
        max_time=ns.max_time,
        connect_timeout=ns.connect_timeout,
        proxy=ns.proxy,
    )


def _request_headers(opts: CurlOptions) -> tuple[list[tuple[str, str]], set[str]]:
    """Headers to send, and curl defaults that ``-H 'Name:'`` removed.

    As in curl, ``-H 'Name: v'`` replaces a default header of that name, ``-H 'Name:'``
    drops it and ``-H 'Name;'`` sends it empty; repeated custom headers are all sent.
    """
    defaults = {"user-agent": ("User-Agent", opts.user_agent or USER_AGENT)}
    defaults["accept"] = ("Accept", "*/*")
    if opts.data:
        defaults["content-type"] = ("Content-Type", "application/x-www-form-urlencoded")
    custom: list[tuple[str, str]] = []
    removed: set[str] = set()
    for line in opts.headers:
        name, sep, value = line.partition(":")
        if not sep:
            if not name.endswith(";"):
                continue
            name = name[:-1]
        name, value = name.strip(), value.strip()
        defaults.pop(name.lower(), None)
        if sep and not value:
            removed.add(name)
        else:
            custom.append((name, value))
    return [*defaults.values(), *custom], removed


def _body(opts: CurlOptions) -> bytes | None:
    if not opts.data:
        return None
    parts = []
    for option, value in opts.data:
        if not value.startswith("@") or option == "--data-raw":
            parts.append(value.encode())
            continue
        with open(value[1:], "rb") as f:
            content = f.read()
        if option != "--data-binary":
            content = content.replace(b"\r", b"").replace(b"\n", b"")
        parts.append(content)
    return b"&".join(parts)


def _write_out(fmt: str, values: Mapping[str, str]) -> bytes:
    out = fmt
    for escape, char in (("\\n", "\n"), ("\\r", "\r"), ("\\t", "\t")):
        out = out.replace(escape, char)
    for name, value in values.items():
        out = out.replace("%{" + name + "}", value)
    return out.encode()


def _failure(exc: BaseException, elapsed: float) -> tuple[int, str]:
    if isinstance(exc, TimeoutError):
        return _EXIT_TIMEOUT, f"Operation timed out after {int(elapsed * 1000)} milliseconds"
    if isinstance(exc, aiohttp.InvalidURL):
        return _EXIT_BAD_URL, f"URL rejected: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = getattr(exc, "os_error", None)
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return _EXIT_RESOLVE, f"Could not resolve host: {exc.host}"
        return _EXIT_CONNECT, f"Failed to connect to {exc.host} port {exc.port}: {os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return _EXIT_EMPTY_REPLY, "Empty reply from server"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return _EXIT_PARTIAL, f"Transferred a partial file: {exc}"
    if isinstance(exc, aiohttp.ClientError):
        return _EXIT_RECV, f"Recv failure: {exc}"
    if isinstance(exc, OSError):
        return _EXIT_FILE, f"Failed to read or write a file: {exc}"
    return _EXIT_USAGE, str(exc)


@dataclass(frozen=True, slots=True)
class _Exchange:
    method: str
    url: URL
    proxied: bool
    sent: tuple[tuple[str, str], ...]
    status: int
    status_line: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


async def _send(opts: CurlOptions, env: Mapping[str, str]) -> _Exchange:
    url = URL(opts.url if "://" in opts.url else f"http://{opts.url}", encoded=True)
    method = opts.method or ("HEAD" if opts.head else "POST" if opts.data else "GET")
    headers, removed = _request_headers(opts)
    proxy = opts.proxy or proxy_for(url, env)
    async with (
        aiohttp.ClientSession(
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # curl sends no Accept-Encoding unless asked to (--compressed).
            skip_auto_headers={"Accept-Encoding", *removed},
            timeout=aiohttp.ClientTimeout(total=opts.max_time, connect=opts.connect_timeout),
        ) as session,
        session.request(
            method, url, headers=headers, data=_body(opts), proxy=proxy, allow_redirects=False
        ) as resp,
    ):
        body = await resp.read()
        version = resp.version or aiohttp.HttpVersion11
        reason = f" {resp.reason}" if resp.reason else ""
        return _Exchange(
            method=method,
            url=url,
            proxied=proxy is not None and url.scheme == "http",
            sent=tuple(resp.request_info.headers.items()),
            status=resp.status,
            status_line=f"HTTP/{version.major}.{version.minor} {resp.status}{reason}",
            headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers),
            body=body,
        )


def _verbose(ex: _Exchange) -> str:
    target = str(ex.url) if ex.proxied else ex.url.raw_path_qs
    lines = [f"> {ex.method} {target} HTTP/1.1", *(f"> {k}: {v}" for k, v in ex.sent), ">"]
    lines += [f"< {ex.status_line}", *(f"< {k}: {v}" for k, v in ex.headers), "<"]
    return "\n".join(lines) + "\n"


def _render(opts: CurlOptions, ex: _Exchange, elapsed: float) -> CurlResult:
    exit_code = 0
    stderr = _verbose(ex) if opts.verbose else ""
    stdout = b""
    if opts.include or opts.head:
        head = ex.status_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in ex.headers)
        stdout += (head + "\r\n").encode("latin-1")
    if opts.fail and ex.status >= 400:
        exit_code = _EXIT_HTTP_ERROR
        if not opts.silent or opts.show_error:
            stderr += f"curl: (22) The requested URL returned error: {ex.status}\n"
    elif opts.output in (None, "-"):
        stdout += ex.body
    else:
        with open(opts.output, "wb") as f:
            f.write(ex.body)
    if opts.write_out is not None:
        values = {
            "http_code": f"{ex.status:03d}",
            "response_code": f"{ex.status:03d}",
            "time_total": f"{elapsed:.6f}",
            "size_download": str(len(ex.body)),
            "content_type": dict((k.lower(), v) for k, v in ex.headers).get("content-type", ""),
            "url_effective": str(ex.url),
            "method": ex.method,
        }
        stdout += _write_out(opts.write_out, values)
    return CurlResult(exit_code, ex.status, ex.headers, ex.body, stdout, stderr, elapsed)


async def curl(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> CurlResult:
    """Run one curl command line in-process; nothing is printed."""
    try:
        opts = parse_args(argv)
    except UsageError as exc:
        return CurlResult(_EXIT_USAGE, stderr=f"curl: {exc}\n")
    start = time.monotonic()
    try:
        exchange = await _send(opts, os.environ if env is None else env)
        return _render(opts, exchange, time.monotonic() - start)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        elapsed = time.monotonic() - start
        code, message = _failure(exc, elapsed)
        stdout = b""
        if opts.write_out is not None:
            values = {"http_code": "000", "response_code": "000", "time_total": f"{elapsed:.6f}"}
            stdout = _write_out(opts.write_out, values)
        stderr = f"curl: ({code}) {message}\n" if not opts.silent or opts.show_error else ""
        return CurlResult(code, stdout=stdout, stderr=stderr, time_total=elapsed)


def main(argv: Sequence[str] | None = None) -> int:
    result = asyncio.run(curl(sys.argv[1:] if argv is None else argv))
    sys.stderr.write(result.stderr)
    sys.stderr.flush()
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.buffer.flush()
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
