"""A stand-in for ``fortio``, the load generator of Istio's circuit-breaking task.

``python -m pymesh.samples.fortio load [-c N] [-qps R] [-n N] [-t DUR] [-timeout DUR]
[-loglevel LEVEL] [-H 'k: v']... [-json FILE|-] URL`` and ``... curl [-quiet] URL``, with
fortio's flags (one dash, Go durations such as ``30s``) and its output: the ``Code 200 : N
(P %)`` lines, the latency histogram and its ``# target`` percentiles. The load comes from
:mod:`pymesh.load` (open loop at ``-qps``, latency from the scheduled start; ``-qps 0`` as
fast as answers come). In a demo pod ``pymesh exec POD -- fortio load ...`` runs it, and
requests go through the pod's sidecar (``HTTP_PROXY``), as they would through an
iptables-captured one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import NoReturn, TextIO

from pymesh import __version__
from pymesh.errors import ConfigError
from pymesh.load import LoadSpec, parse_target, run_load
from pymesh.load.report import header_lines, to_json, to_text
from pymesh.samples.runtime import proxy_for

__all__ = ["VERSION", "main", "parse_duration"]

VERSION = f"pymesh-{__version__}"
# fortio's log levels, by number, as its "Log level is now" line names them.
_LEVELS = ("Debug", "Verbose", "Info", "Warning", "Error", "Critical", "Fatal")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration (``1m30s``, ``500ms``, ``2.5s``; a bare number is seconds) in seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 30s, 1m, 500ms)")
    return total


def _level(text: str) -> int:
    for i, name in enumerate(_LEVELS):
        if name.lower() == text.strip().lower():
            return i
    raise argparse.ArgumentTypeError(f"unknown log level {text!r} ({', '.join(_LEVELS)})")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"fortio: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fortio", allow_abbrev=False, description="fortio stand-in (pymesh)")
    sub = p.add_subparsers(dest="command", metavar="{load,curl,version}")
    sub.required = True
    for name in ("load", "curl"):
        q = sub.add_parser(name, allow_abbrev=False)
        q.add_argument("-H", dest="headers", action="append", default=[], help="'name: value'")
        q.add_argument("-timeout", type=parse_duration, default=3.0, help="per request (3s)")
        q.add_argument("-loglevel", type=_level, default=2, help="Debug ... Warning, Error")
        q.add_argument("-quiet", action="store_true", help="less output")
        q.add_argument("url")
        if name == "load":
            q.add_argument("-c", type=int, default=4, help="connections (4)")
            q.add_argument("-qps", type=float, default=8.0, help="total rate; 0: max (8)")
            q.add_argument("-n", type=int, default=0, help="exactly this many calls")
            q.add_argument("-t", type=parse_duration, default=5.0, help="how long (5s)")
            q.add_argument("-json", help="write the result as JSON to this file, - for stdout")
            # Not fortio's: a benchmark checks that every 200 is the page it asked for.
            q.add_argument("-expect", default="", help="a 200 without this text is code -2")
    sub.add_parser("version")
    return p


def _log(level: str, message: str, out: TextIO) -> None:
    print(f"{time.strftime('%H:%M:%S')} {level} {message}", file=out, flush=True)


def _headers(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"header {item!r} is not 'name: value'")
        out.append((name.strip(), value.strip()))
    return tuple(out)


def _load(args: argparse.Namespace, env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    target = parse_target(
        args.url,
        headers=_headers(args.headers),
        proxy=proxy_for(args.url, env),
        user_agent=f"fortio.org/fortio-{VERSION}",
        expect=args.expect.encode(),
    )
    spec = LoadSpec(
        target,
        connections=args.c,
        qps=max(args.qps, 0.0),
        requests=args.n or None,
        duration=args.t,
        timeout=args.timeout,
    )
    warn = args.loglevel <= _LEVELS.index("Warning")
    to_stdout = args.json == "-"
    text = err if to_stdout else out

    def log(message: str) -> None:
        if warn:
            _log("W", message, err)

    if not to_stdout:
        for line in header_lines(spec, args.url, VERSION):
            print(line, file=text, flush=True)
    result = asyncio.run(run_load(spec, log))
    for line in to_text(result):
        print(line, file=text)
    if args.json:
        document = json.dumps(to_json(result, args.url, VERSION), indent=2)
        if to_stdout:
            print(document, file=out)
        else:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(document + "\n")
            print(
                f"Successfully wrote {len(document) + 1} bytes of Json data to {args.json}",
                file=out,
            )
    return 0


def _curl(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pymesh.samples.sleep import curl

    argv = ["-s", "-S", "-i", "-m", str(args.timeout)]
    for header in args.headers:
        argv += ["-H", header]
    result = asyncio.run(curl([*argv, args.url], env=env))
    sys.stdout.flush()
    out.buffer.write(result.stdout) if hasattr(out, "buffer") else out.write(result.stdout.decode())
    if result.stderr:
        print(result.stderr.rstrip(), file=sys.stderr)
    return 0 if result.http_code == 200 else 1


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    args = _parser().parse_args(argv)
    environ = dict(os.environ) if env is None else dict(env)
    if args.command == "version":
        print(VERSION, file=out)
        return 0
    if args.loglevel != 2:
        _log("I", f"Log level is now {args.loglevel} {_LEVELS[args.loglevel]} (was 2 Info)", err)
    try:
        if args.command == "curl":
            return _curl(args, environ, out)
        return _load(args, environ, out, err)
    except ConfigError as exc:
        print(f"fortio: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
