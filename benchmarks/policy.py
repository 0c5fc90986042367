"""Policy benchmark: what authorization and JWT checks cost a sidecar, Envoy beside pymesh.

``python -m benchmarks.policy [--quick] [--reps N] [--duration S] [--only envoy,pymesh]``

The HTTP filters are the ones pilot writes on productpage's inbound listener for three
configurations of Bookinfo:

* ``none`` — no policy: fault, cors, router (what every sidecar runs);
* ``authz`` — Istio's authz-http task (``1-deny-all`` … ``5-ratings-viewer``): an RBAC filter
  whose one ALLOW policy lets GET through (``productpage-viewer``);
* ``jwt`` — a RequestAuthentication with the sample JWKS inline and an AuthorizationPolicy
  requiring its issuer's principal (the authz-jwt task on productpage): jwt_authn verifies the
  sample token (RS256) on every request, then RBAC checks the principal.

Each is put in front of the router of a one-listener bootstrap to nginx (``/`` answers 100
bytes) and measured as in :mod:`benchmarks.proxy`: the proxy alone on CPU 1, nginx and
``wrk -t1 -c50`` on CPU 0, a fresh proxy per measurement with a sanity check that the policy
is in force (the allowed request answers 200, the refused one 403), a warm-up, repetitions
interleaved (none, authz, jwt; Envoy then pymesh). CPU µs per request is the proxy's utime +
stime over the measurement divided by the requests; a check's cost is its configuration's
CPU per request minus ``none``'s, as a share of ``none``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import loadgen, procstat
from benchmarks.nginx import BODY_100, Nginx
from tests.support.envoy import PROXY_KINDS, make_proxy, router_bootstrap
from tests.support.httpclient import request_sync
from tests.support.procs import free_port

__all__ = ["main"]

HOST = "127.0.0.1"
RESULTS = Path(__file__).resolve().parent / "results"
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "istio-samples"
CONFIGS = ("none", "authz", "jwt")
AUTHZ_HTTP = [
    f"docs-extracted/security/authz-http/{name}.yaml"
    for name in (
        "1-deny-all",
        "2-productpage-viewer",
        "3-details-viewer",
        "4-reviews-viewer",
        "5-ratings-viewer",
    )
]
JWT_POLICY = """
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-example, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  jwtRules: [{issuer: testing@secure.istio.io, jwks: '%s'}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: [testing@secure.istio.io/testing@secure.istio.io]}}]
"""


def pilot_filters(config: str) -> list[dict[str, Any]]:
    """The HTTP filters pilot writes on productpage's inbound (port 9080) for ``config``."""
    from pilot.generate import LISTENER_TYPE
    from pymesh.config.loader import load_documents
    from tests.pilot.generate._mesh import build_mesh

    files: list[Path | str] = ["bookinfo/platform/kube/bookinfo.yaml"]
    extra: list[Any] = []
    if config == "authz":
        files += AUTHZ_HTTP
    elif config == "jwt":
        jwks = (SAMPLES / "jwt" / "jwks.json").read_text().strip()
        extra = list(load_documents(JWT_POLICY % jwks).resources)
    mesh = build_mesh(*files, gateway=False, resources=extra)
    inbound = mesh.by_name("productpage-v1", LISTENER_TYPE)["virtualInbound"]
    for chain in inbound["filter_chains"]:
        if chain.get("filter_chain_match", {}).get("destination_port") != 9080:
            continue
        for nf in chain["filters"]:
            filters: list[dict[str, Any]] = nf["typed_config"].get("http_filters", [])
            if filters:
                return filters
    raise RuntimeError("pilot wrote no HTTP chain for productpage's port 9080")


def bootstrap(
    listen: tuple[str, int], nginx: Nginx, filters: list[dict[str, Any]]
) -> dict[str, Any]:
    boot = router_bootstrap(listen, [(nginx.host, nginx.port)], admin=(HOST, free_port(HOST)))
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    hcm["typed_config"]["http_filters"] = filters
    return boot


@dataclass(frozen=True, slots=True)
class Check:
    """What the sanity check sends: the allowed request, and one the policy refuses."""

    headers: Mapping[str, str] = field(default_factory=dict)
    refused: tuple[str, tuple[tuple[str, str], ...]] | None = None  # method, headers


def checks(token: str) -> dict[str, Check]:
    bearer = {"authorization": f"Bearer {token}"}
    return {
        "none": Check(),
        "authz": Check(refused=("POST", ())),
        "jwt": Check(headers=bearer, refused=("GET", ())),
    }


def _sanity(listen: tuple[str, int], check: Check) -> None:
    r = request_sync(*listen, headers=list(check.headers.items()), timeout=5.0)
    if r.status != 200 or r.body != BODY_100.encode():
        raise RuntimeError(f"GET / answered {r.status}: {r.body[:200]!r}")
    if check.refused is not None:
        method, headers = check.refused
        r = request_sync(*listen, method=method, headers=list(headers), timeout=5.0)
        if r.status != 403:
            raise RuntimeError(f"the refused {method} answered {r.status}, not 403: {r.body!r}")


def measure(
    kind: str,
    config: str,
    boot: dict[str, Any],
    check: Check,
    work: Path,
    args: argparse.Namespace,
    cpus: tuple[str | None, str | None],
) -> dict[str, float]:
    load_cpus, proxy_cpus = cpus
    listener = boot["static_resources"]["listeners"][0]["address"]["socket_address"]
    listen = (listener["address"], listener["port_value"])
    proxy = make_proxy(
        kind, boot, workdir=work / f"{kind}-{config}", log_level="warning", cpus=proxy_cpus
    )
    proxy.start(timeout=30.0)
    try:
        _sanity(listen, check)
        url = f"http://{listen[0]}:{listen[1]}/"

        def wrk(seconds: float) -> loadgen.LoadResult:
            return loadgen.run_wrk(
                url,
                connections=args.connections,
                seconds=seconds,
                workdir=work,
                cpus=load_cpus,
                headers=check.headers,
            )

        wrk(args.warmup)
        cpu0 = procstat.cpu_seconds(proxy.pid)
        res = wrk(args.duration)
        cpu = procstat.cpu_seconds(proxy.pid) - cpu0
    finally:
        proxy.stop()
    if res.error_ratio > 0.01:
        raise RuntimeError(f"{res.errors} of {res.requests} requests failed")
    return {"rps": res.rps, "cpu_us_per_req": cpu * 1e6 / max(res.requests, 1)}


def _median(values: Sequence[float], fmt: str = ",.0f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def table(runs: Mapping[tuple[str, str], list[dict[str, float]]], kinds: Sequence[str]) -> str:
    """Markdown: req/s and CPU per request, medians (min-max), each check's cost, and with
    both proxies measured, pymesh's numbers as ratios of Envoy's."""
    rows = [
        "| proxy | policy | req/s | CPU µs/req | check cost (CPU µs/req) | share of a request |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    cost: dict[tuple[str, str], float] = {}
    cpu: dict[tuple[str, str], float] = {}
    for kind in kinds:
        base = statistics.median(r["cpu_us_per_req"] for r in runs[kind, "none"])
        for config in CONFIGS:
            rs = runs[kind, config]
            per_req = [r["cpu_us_per_req"] for r in rs]
            cpu[kind, config] = statistics.median(per_req)
            cost[kind, config] = cpu[kind, config] - base
            extra = ("", "")
            if config != "none":
                extra = (f"{cost[kind, config]:+.1f}", f"{cost[kind, config] / base:+.1%}")
            rows.append(
                f"| {kind} | {config} | {_median([r['rps'] for r in rs])} | "
                f"{_median(per_req, '.1f')} | {extra[0]} | {extra[1]} |"
            )
    if {"envoy", "pymesh"} <= set(kinds):
        rows += ["", "| policy | CPU µs/req pymesh/Envoy | check cost pymesh/Envoy |"]
        rows.append("| --- | --- | --- |")
        for config in CONFIGS:
            ratio = cpu["pymesh", config] / cpu["envoy", config]
            check = ""
            if config != "none" and cost["envoy", config] > 0:
                check = f"{cost['pymesh', config] / cost['envoy', config]:.2f}x"
            rows.append(f"| {config} | {ratio:.2f}x | {check} |")
    return "\n".join(rows)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.policy", description=__doc__)
    p.add_argument("--quick", action="store_true", help="1 repetition, 3 s runs (smoke run)")
    p.add_argument("--only", default=",".join(PROXY_KINDS), help="envoy,pymesh")
    p.add_argument("--reps", type=int, help="repetitions (default 3, --quick 1)")
    p.add_argument("--duration", type=float, help="seconds per measurement (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each run")
    p.add_argument("--connections", type=int, default=50, help="wrk connections")
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    args.reps = args.reps or (1 if args.quick else 3)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    kinds = [k for k in args.only.split(",") if k]
    if bad := [k for k in kinds if k not in PROXY_KINDS]:
        print(f"unknown proxy: {', '.join(bad)}", file=sys.stderr)
        return 2
    if missing := loadgen.missing_tools():
        print(f"missing tools: {' '.join(missing)} (make apt-bench)", file=sys.stderr)
        return 2
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    cpus = ("0", "1") if pin else (None, None)
    token = (SAMPLES / "jwt" / "demo.jwt").read_text().strip()
    filters = {config: pilot_filters(config) for config in CONFIGS}
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    work = Path(tempfile.mkdtemp(prefix="pymesh-bench-policy-"))
    nginx = Nginx(work / "nginx", host=HOST, cpus=cpus[0]).start()
    try:
        for rep in range(1, args.reps + 1):
            for config in CONFIGS:
                for kind in kinds:
                    boot = bootstrap((HOST, free_port(HOST)), nginx, filters[config])
                    m = measure(kind, config, boot, checks(token)[config], work, args, cpus)
                    runs.setdefault((kind, config), []).append(m)
                    print(
                        f"[{rep}/{args.reps}] {kind} {config}: {m['rps']:,.0f} req/s, "
                        f"{m['cpu_us_per_req']:.1f} µs CPU/req",
                        file=sys.stderr,
                        flush=True,
                    )
    except (RuntimeError, OSError, TimeoutError, loadgen.ToolError) as exc:
        print(f"failed: {exc}\nlogs kept in {work}", file=sys.stderr)
        return 1
    finally:
        nginx.stop()
    print(f"\nPolicy benchmark, {args.reps} interleaved repetition(s), median (min-max):\n")
    print(table(runs, kinds))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"policy-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "args": vars(args),
                "filters": filters,
                "runs": {f"{k}/{c}": rs for (k, c), rs in runs.items()},
            },
            indent=2,
        )
    )
    print(f"\nJSON: {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
