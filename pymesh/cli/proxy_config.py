"""``pymesh proxy-config all|bootstrap|listeners|routes|clusters|endpoints|secret|log POD
[-n NS] [-o json|yaml]`` (singular or plural, as istioctl takes them).

Listeners, routes, clusters and endpoints are what pilot last sent the proxy (pilot's side
of ``istioctl proxy-config``, which asks Envoy's admin instead), in istioctl's table layout;
``all`` is every one of them. ``bootstrap``, ``log`` and ``secret`` come from the proxy's own
admin interface (``<pod ip>:15000``), which only the proxy knows about: ``secret`` shows the
certificates the proxy holds (from its agent's SDS), with serial, validity and SPIFFE ID."""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import yaml
from cryptography import x509

from pymesh.cli.pilot_client import PilotClient, add_pilot_arguments, client_from_args, guarded
from pymesh.cli.tables import render_table
from pymesh.errors import ControlPlaneError, ValidationError

__all__ = ["TABLES", "add_arguments", "run"]

_HCM = "envoy.filters.network.http_connection_manager"
_TCP = "envoy.filters.network.tcp_proxy"


_PILOT_TYPES = ("clusters", "listeners", "routes", "endpoints", "secrets")
_TYPES = {
    **{t: t for t in _PILOT_TYPES},
    **{t[:-1]: t for t in _PILOT_TYPES},
    "all": "all",
    "bootstrap": "bootstrap",
    "log": "log",
    "logs": "log",
}
ADMIN_PORT = 15000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "type",
        metavar="TYPE",
        help="all, bootstrap, listeners, routes, clusters, endpoints, secret or log "
        "(singular or plural)",
    )
    parser.add_argument("proxy", help="pod name (pod.namespace), proxy id or IP")
    parser.add_argument("-n", "--namespace", help="the pod's namespace")
    parser.add_argument("-o", "--output", choices=("short", "table", "json", "yaml"))
    add_pilot_arguments(parser)


def _istio_config(meta: dict[str, Any] | None) -> str:
    """``/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews`` ->
    ``reviews.default``."""
    path = (((meta or {}).get("filter_metadata") or {}).get("istio") or {}).get("config", "")
    parts = str(path).strip("/").split("/")
    if len(parts) >= 6 and parts[-4] == "namespaces":
        return f"{parts[-1]}.{parts[-3]}"
    return ""


def _cluster_rows(items: list[dict[str, Any]]) -> Iterator[tuple[str, ...]]:
    for c in items:
        name = c.get("name", "")
        parts = name.split("|")
        if len(parts) == 4:
            direction, port, subset, fqdn = parts
        else:
            direction, port, subset, fqdn = "-", "-", "-", name
        kind = c.get("type") or ("EDS" if "eds_cluster_config" in c else "STATIC")
        if "cluster_type" in c:
            kind = c["cluster_type"].get("name", "CUSTOM")
        rule = _istio_config(c.get("metadata")) or "-"
        yield fqdn, port or "-", subset or "-", direction or "-", kind, rule


def _chain_match(match: dict[str, Any]) -> str:
    out = []
    if "prefix_ranges" in match:
        addrs = [
            f"{r.get('address_prefix')}/{r.get('prefix_len', 32)}" for r in match["prefix_ranges"]
        ]
        out.append(f"Addr: {','.join(addrs)}")
    if "destination_port" in match:
        out.append(f"Port: {match['destination_port']}")
    if "server_names" in match:
        out.append(f"SNI: {','.join(match['server_names'])}")
    if "transport_protocol" in match:
        out.append(f"Trans: {match['transport_protocol']}")
    if "application_protocols" in match:
        out.append(f"App: {','.join(match['application_protocols'])}")
    return "; ".join(out) or "ALL"


def _destination(filters: list[dict[str, Any]]) -> str:
    for f in filters:
        cfg = f.get("typed_config") or {}
        if f.get("name") == _HCM or "HttpConnectionManager" in str(cfg.get("@type", "")):
            if "rds" in cfg:
                return f"Route: {cfg['rds'].get('route_config_name', '')}"
            rc = cfg.get("route_config") or {}
            vhosts = ",".join(v.get("name", "") for v in rc.get("virtual_hosts", []))
            return f"Inline Route: {rc.get('name') or vhosts}"
        if f.get("name") == _TCP or "TcpProxy" in str(cfg.get("@type", "")):
            return f"Cluster: {cfg.get('cluster') or 'weighted'}"
    return "Non-HTTP/Non-TCP"


def _listener_rows(items: list[dict[str, Any]]) -> Iterator[tuple[str, ...]]:
    for lst in items:
        sa = (lst.get("address") or {}).get("socket_address") or {}
        address, port = sa.get("address", "-"), str(sa.get("port_value", 0))
        if "api_listener" in lst:
            hcm = lst["api_listener"].get("api_listener") or {}
            dest = _destination([{"name": _HCM, "typed_config": hcm}])
            yield lst.get("name", ""), "-", "API listener", dest
            continue
        chains = list(lst.get("filter_chains", []))
        if "default_filter_chain" in lst:
            chains.append({**lst["default_filter_chain"], "_default": True})
        for chain in chains:
            match = (
                "DEFAULT"
                if chain.get("_default")
                else _chain_match(chain.get("filter_chain_match") or {})
            )
            yield address, port, match, _destination(chain.get("filters", []))


def _route_match(route: dict[str, Any]) -> str:
    m = route.get("match") or {}
    if "prefix" in m:
        path = "/*" if m["prefix"] in ("", "/") else f"{m['prefix']}*"
    elif "path" in m:
        path = m["path"]
    elif "safe_regex" in m:
        path = f"~{m['safe_regex'].get('regex', '')}"
    elif "path_separated_prefix" in m:
        path = f"{m['path_separated_prefix']}/*"
    else:
        path = "/*"
    headers = []
    for h in m.get("headers", []):
        sm = h.get("string_match") or {}
        value = next(iter(sm.values()), "") if sm else h.get("exact_match", "")
        headers.append(f"{h.get('name')}={value}" if value else str(h.get("name")))
    return path + (f" ({', '.join(headers)})" if headers else "")


def _route_rows(items: list[dict[str, Any]]) -> Iterator[tuple[str, ...]]:
    for rc in items:
        hosts = rc.get("virtual_hosts", [])
        if not hosts:
            yield rc.get("name", ""), "", "", "", ""
        for vh in hosts:
            domains = vh.get("domains", [])
            shown = ", ".join(domains[:2]) + (
                f" + {len(domains) - 2} more..." if len(domains) > 2 else ""
            )
            for route in vh.get("routes", []) or [{}]:
                vs = _istio_config(route.get("metadata"))
                if not vs and "direct_response" in route:
                    vs = str(route["direct_response"].get("status", ""))
                yield rc.get("name", ""), vh.get("name", ""), shown, _route_match(route), vs or "-"


def _endpoint_rows(items: list[dict[str, Any]]) -> Iterator[tuple[str, ...]]:
    for cla in items:
        cluster = cla.get("cluster_name", "")
        for group in cla.get("endpoints", []):
            for lb in group.get("lb_endpoints", []):
                sa = ((lb.get("endpoint") or {}).get("address") or {}).get("socket_address") or {}
                addr = f"{sa.get('address', '')}:{sa.get('port_value', 0)}"
                status = lb.get("health_status", "HEALTHY")
                if status == "UNKNOWN":
                    status = "HEALTHY"
                yield addr, status, "OK", cluster


SECRET_HEADER = (
    "RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER",
    "NOT BEFORE", "IDENTITY",
)  # fmt: skip


def secret_rows(dump: dict[str, Any], now: float) -> Iterator[tuple[str, ...]]:
    """istioctl's secret table from a ``SecretsConfigDump``: one row per certificate (a
    chain's leaf first, then its CAs), with the SPIFFE ID of the leaf."""
    entries = [*dump.get("dynamic_active_secrets", []), *dump.get("static_secrets", [])]
    for entry in entries:
        secret = entry.get("secret") or {}
        name = str(entry.get("name") or secret.get("name", ""))
        if "tls_certificate" in secret:
            kind, field = "Cert Chain", secret["tls_certificate"].get("certificate_chain", {})
        else:
            kind = "CA"
            field = (secret.get("validation_context") or {}).get("trusted_ca", {})
        pem = base64.b64decode(field.get("inline_bytes", "")) if field else b""
        try:
            certs = x509.load_pem_x509_certificates(pem) if pem else []
        except ValueError:
            certs = []
        for index, cert in enumerate(certs):
            before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
            valid = before.timestamp() <= now <= after.timestamp()
            yield (
                name, kind, "ACTIVE", str(valid).lower(), f"{cert.serial_number:x}",
                _when(after), _when(before), _spiffe(cert) if index == 0 else "",
            )  # fmt: skip


def _when(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _spiffe(cert: x509.Certificate) -> str:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    return ",".join(u for u in uris if u.startswith("spiffe://"))


def _secret_rows(items: list[dict[str, Any]]) -> Iterator[tuple[str, ...]]:
    for s in items:
        kind = (
            "Cert Chain" if "tls_certificate" in s else "CA" if "validation_context" in s else "-"
        )
        yield s.get("name", ""), kind


Table = tuple[tuple[str, ...], Callable[[list[dict[str, Any]]], Iterator[tuple[str, ...]]]]
TABLES: dict[str, Table] = {
    "clusters": (
        ("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"),
        _cluster_rows,
    ),
    "listeners": (("ADDRESSES", "PORT", "MATCH", "DESTINATION"), _listener_rows),
    "routes": (("NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"), _route_rows),
    "endpoints": (("ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"), _endpoint_rows),
    "secrets": (("RESOURCE NAME", "TYPE"), _secret_rows),
}


def _dump(value: Any, output: str) -> str:
    if output == "yaml":
        return str(yaml.safe_dump(value, sort_keys=False)).rstrip()
    return json.dumps(value, indent=2)


def _admin(client: PilotClient, proxy: str, path: str) -> bytes:
    """GET ``path`` from the proxy's admin: the address of the proxy pilot knows by that
    name, port 15000 (Istio's)."""
    _, data = client.call("GET", "/proxies")
    ids = [str(p["id"]) for p in data.get("proxies", []) if _named(str(p["id"]), proxy)]
    if not ids:
        raise ControlPlaneError(f"proxy {proxy!r} is not connected to pilot")
    address = f"{ids[0].split('~')[1]}:{ADMIN_PORT}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{address}{path}", timeout=client.timeout) as resp:
            body: bytes = resp.read()
            return body
    except urllib.error.HTTPError as exc:
        raise ControlPlaneError(
            f"{proxy}: admin {path}: {exc.read().decode(errors='replace').strip()}"
        ) from None
    except OSError as exc:
        raise ControlPlaneError(f"cannot reach the admin of {proxy} at {address}: {exc}") from None


def _named(proxy_id: str, wanted: str) -> bool:
    parts = proxy_id.split("~")
    if len(parts) != 4:
        return proxy_id == wanted
    pod = parts[2]
    return wanted in (proxy_id, pod, pod.split(".")[0], parts[1])


def _run(args: argparse.Namespace) -> int:
    kind = _TYPES.get(args.type.lower())
    if kind is None:
        raise ValidationError(
            f"unknown type {args.type!r}: use all, bootstrap, listeners, routes, clusters, "
            "endpoints, secret or log"
        )
    client = client_from_args(args)
    name = f"{args.proxy}.{args.namespace}" if args.namespace else args.proxy
    output = args.output or "table"
    if kind == "bootstrap":
        dump = json.loads(_admin(client, name, "/config_dump"))
        bootstrap: dict[str, Any] = next(
            (c for c in dump.get("configs", []) if "BootstrapConfigDump" in c.get("@type", "")),
            {},
        )
        print(_dump(bootstrap, "json" if output == "table" else output))
        return 0
    if kind == "log":
        print(_admin(client, name, "/logging").decode(errors="replace").rstrip())
        return 0
    if kind == "secrets":
        # As istioctl: the proxy's own view (the agent's certificates never pass pilot).
        dump = json.loads(_admin(client, name, "/config_dump"))
        secrets: dict[str, Any] = next(
            (c for c in dump.get("configs", []) if "SecretsConfigDump" in c.get("@type", "")),
            {},
        )
        if output in ("json", "yaml"):
            print(_dump(secrets, output))
        else:
            print(render_table(SECRET_HEADER, list(secret_rows(secrets, time.time()))))
        return 0
    quoted = urllib.parse.quote(name, safe="")
    kinds = _PILOT_TYPES if kind == "all" else (kind,)
    found = {k: client.call("GET", f"/proxies/{quoted}/config/{k}")[1] for k in kinds}
    if output in ("json", "yaml"):
        if kind == "all":
            print(_dump({k: d.get("resources", []) for k, d in found.items()}, output))
        else:
            print(_dump(found[kind].get("resources", []), output))
        return 0
    tables = []
    for k, data in found.items():
        header, rows = TABLES[k]
        tables.append(render_table(header, list(rows(data.get("resources", [])))))
    print("\n\n".join(tables))
    return 0


def run(args: argparse.Namespace) -> int:
    return guarded(_run, args)
