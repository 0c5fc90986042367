"""Where the proxy's CPU goes per request: py-spy on ``pymesh proxy`` under wrk load.

``python -m benchmarks.profile [--seconds 15] [--top 25] [--out FILE]``

The same setup as ``benchmarks.proxy``'s saturation scenario (nginx on CPU 0 with wrk, the
proxy alone on CPU 1, router-only bootstrap), with py-spy sampling the proxy (``--nonblocking``,
so the proxy is never stopped to be sampled). Prints the functions with the most *self* time
and the most *total* time, as shares of all samples, and keeps py-spy's raw collapsed stacks
(``--out``) for a flame graph.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import loadgen
from benchmarks.nginx import Nginx
from tests.support.envoy import PymeshProxyProcess, router_bootstrap
from tests.support.procs import free_port

__all__ = ["main", "summarise"]

HOST = "127.0.0.1"


def summarise(collapsed: str, top: int) -> str:
    """Self and total shares per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    out = [f"{samples} samples", "", "| self % | function |", "| ---: | --- |"]
    out += [f"| {100 * n / samples:.1f} | `{name}` |" for name, n in own.most_common(top)]
    out += ["", "| total % | function |", "| ---: | --- |"]
    out += [f"| {100 * n / samples:.1f} | `{name}` |" for name, n in total.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    """``on_body (proxy/codec/_base.py:321)`` -> ``on_body (proxy/codec/_base.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        for root in ("proxy/", "pymesh/", "asyncio/"):
            if root in path:
                path = root + path.split(root, 1)[1]
                break
    return f"{name} ({path})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None, help="keep the collapsed stacks")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory(prefix="pymesh-profile-") as tmp:
        workdir = Path(tmp)
        nginx = Nginx(workdir / "nginx").start()
        listen = (HOST, free_port(HOST))
        boot = router_bootstrap(listen, [(nginx.host, nginx.port)], admin=(HOST, free_port(HOST)))
        proxy = PymeshProxyProcess(boot, workdir=workdir / "pymesh", log_level="warning", cpus="1")
        try:
            proxy.start(timeout=15.0)
            url = f"http://{listen[0]}:{listen[1]}/"
            loadgen.run_wrk(url, connections=args.connections, seconds=2, workdir=workdir, cpus="0")
            raw = workdir / "stacks.txt"
            assert proxy.pid is not None
            recorder = subprocess.Popen(
                [spy, "record", "--nonblocking", "--format", "raw", "-o", str(raw),
                 "--pid", str(proxy.pid), "--duration", str(int(args.seconds) + 1)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            time.sleep(0.5)  # py-spy attaches before the load starts
            result = loadgen.run_wrk(
                url, connections=args.connections, seconds=args.seconds, workdir=workdir, cpus="0"
            )
            _, err = recorder.communicate(timeout=args.seconds + 60)
            if recorder.returncode != 0:
                print(err.decode(errors="replace"), file=sys.stderr)
                return 1
        finally:
            proxy.stop()
            nginx.stop()
        collapsed = raw.read_text()
        if args.out is not None:
            args.out.write_text(collapsed)
    print(f"wrk -c{args.connections}: {result.rps:.0f} req/s under py-spy\n")
    print(summarise(collapsed, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
