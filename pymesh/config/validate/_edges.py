"""Gateway, ServiceEntry, WorkloadEntry and Sidecar checks, after Istio's webhook."""

from __future__ import annotations

import posixpath
from collections.abc import Collection

from pymesh.config import hosts
from pymesh.config.issues import Reporter
from pymesh.config.model.networking import (
    CaptureMode,
    Gateway,
    OutboundTrafficPolicyMode,
    Resolution,
    ServerTLSMode,
    ServerTLSSettings,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
)
from pymesh.config.validate._common import (
    check,
    check_destination,
    check_export_to,
    check_labels,
    check_port,
    check_port_name,
    check_protocol,
    check_selector_labels,
    protocol_is_http,
    protocol_is_tls,
)
from pymesh.config.validate._destination_rule import validate_connection_pool

__all__ = [
    "validate_gateway",
    "validate_service_entry",
    "validate_sidecar",
    "validate_workload_entry",
]

_UNIX = "unix://"
_LOCAL_BINDS = frozenset({"127.0.0.1", "0.0.0.0", "::1", "::"})


def _unix_address(rep: Reporter, path: str, address: str) -> None:
    if address.startswith("@"):
        return
    if not posixpath.isabs(address) or address.endswith("/"):
        rep.fail(path, f"{address!r} is not an absolute path to a socket file")


def _bind(rep: Reporter, path: str, bind: str) -> None:
    if bind.startswith(_UNIX):
        _unix_address(rep, path, bind.removeprefix(_UNIX))
    elif bind:
        check(rep, path, hosts.check_ip, bind)


def validate_gateway(gw: Gateway, name: str, path: str, rep: Reporter) -> None:
    if not hosts.is_dns1123_label(name):
        rep.fail("metadata.name", f"invalid gateway name {name!r} (must be a DNS-1123 label)")
    if not gw.servers:
        rep.fail(f"{path}.servers", "a gateway needs at least one server")
    port_names: set[str] = set()
    for i, server in enumerate(gw.servers):
        spath = f"{path}.servers[{i}]"
        if not server.hosts:
            rep.fail(f"{spath}.hosts", "a server needs at least one host")
        for j, host in enumerate(server.hosts):
            check(rep, f"{spath}.hosts[{j}]", _gateway_host, host)
        port = server.port
        check_protocol(rep, f"{spath}.port.protocol", port.protocol)
        if not port.protocol:
            rep.fail(f"{spath}.port.protocol", "protocol must be set")
        if port.number or not server.bind.startswith(_UNIX):
            check_port(rep, f"{spath}.port.number", port.number)
        if server.bind.startswith(_UNIX) and port.number:
            rep.fail(f"{spath}.port.number", "port must be 0 for a unix domain socket bind")
        if not port.name:
            rep.fail(f"{spath}.port.name", "port name must be set")
        if port.name in port_names:
            rep.fail(f"{spath}.port.name", f"duplicate port name {port.name!r} across servers")
        port_names.add(port.name)
        _bind(rep, f"{spath}.bind", server.bind)
        tls = server.tls
        if protocol_is_tls(port.protocol) and tls is None:
            rep.fail(f"{spath}.tls", f"{port.protocol} servers need tls settings")
        if tls is None:
            continue
        if not protocol_is_tls(port.protocol):
            if not protocol_is_http(port.protocol):
                rep.fail(f"{spath}.tls", "tls settings need an HTTPS or TLS port")
            if tls.mode is not ServerTLSMode.PASSTHROUGH or _has_certificates(tls):
                rep.fail(f"{spath}.tls", "plain-text HTTP servers may only set httpsRedirect")
        _server_tls(tls, f"{spath}.tls", rep)


def _gateway_host(host: str) -> None:
    hosts.check_namespaced_host(host, gateway=True)


def _has_certificates(tls: ServerTLSSettings) -> bool:
    return bool(
        tls.server_certificate
        or tls.private_key
        or tls.ca_certificates
        or tls.credential_name
        or tls.credential_names
        or tls.tls_certificates
    )


def _server_tls(tls: ServerTLSSettings, path: str, rep: Reporter) -> None:
    mode = tls.mode
    for name, value in (
        ("credentialNames", tls.credential_names),
        ("tlsCertificates", tls.tls_certificates),
    ):
        if len(value) > 2:
            rep.fail(f"{path}.{name}", "at most 2 entries are allowed")
    if mode is ServerTLSMode.ISTIO_MUTUAL:
        if _has_certificates(tls):
            rep.fail(path, "ISTIO_MUTUAL uses the mesh certificates; remove the certificate fields")
        return
    if mode in (ServerTLSMode.PASSTHROUGH, ServerTLSMode.AUTO_PASSTHROUGH):
        if _has_certificates(tls) or tls.ca_crl:
            rep.warn(path, f"{mode} does not terminate TLS; the certificates are ignored")
        return
    sources = sum(
        (
            bool(tls.server_certificate and tls.private_key),
            bool(tls.credential_name),
            bool(tls.credential_names),
            bool(tls.tls_certificates),
        )
    )
    if sources > 1:
        rep.fail(
            path,
            "only one of credentialName, credentialNames, serverCertificate/privateKey "
            "or tlsCertificates may be set",
        )
    if tls.ca_crl and tls.credential_name:
        rep.fail(f"{path}.caCrl", "with credentialName the CRL must come from the credential")
    if tls.ca_crl and mode is ServerTLSMode.SIMPLE:
        rep.fail(f"{path}.caCrl", "a CRL has no use with SIMPLE TLS")
    if tls.credential_name or tls.credential_names:
        return
    mutual = mode in (ServerTLSMode.MUTUAL, ServerTLSMode.OPTIONAL_MUTUAL)
    if mutual and not tls.ca_certificates:
        rep.fail(f"{path}.caCertificates", f"{mode} TLS needs a client CA bundle")
    pairs = [(c.server_certificate, c.private_key) for c in tls.tls_certificates] or [
        (tls.server_certificate, tls.private_key)
    ]
    for server_certificate, private_key in pairs:
        if not server_certificate:
            rep.fail(f"{path}.serverCertificate", f"{mode} TLS needs a server certificate")
        if not private_key:
            rep.fail(f"{path}.privateKey", f"{mode} TLS needs a private key")


def validate_workload_entry(
    we: WorkloadEntry,
    path: str,
    rep: Reporter,
    *,
    service_ports: Collection[str] | None = None,
    fqdn_ok: bool = True,
) -> None:
    address = we.address
    if not address:
        if not we.network:
            rep.fail(f"{path}.address", "address is required")
        rep.warn(f"{path}.address", f"address is unset with network {we.network!r}")
    if address.startswith(_UNIX):
        _unix_address(rep, f"{path}.address", address.removeprefix(_UNIX))
        if we.ports:
            rep.fail(f"{path}.ports", "a unix domain socket endpoint takes no ports")
    elif address and not hosts.is_ip(address):
        if not fqdn_ok:
            rep.fail(f"{path}.address", f"{address!r} is not an IP address")
        check(rep, f"{path}.address", hosts.check_fqdn, address)
    for name, number in we.ports.items():
        ppath = f"{path}.ports[{name}]"
        if service_ports is not None and name not in service_ports:
            rep.fail(ppath, f"port {name!r} is not a port of the ServiceEntry")
        check_port_name(rep, ppath, name)
        check_port(rep, ppath, number)
    check_labels(rep, f"{path}.labels", we.labels)


def validate_service_entry(se: ServiceEntry, namespace: str, path: str, rep: Reporter) -> None:
    if not se.hosts:
        rep.fail(f"{path}.hosts", "at least one host is required")
    for i, host in enumerate(se.hosts):
        hpath = f"{path}.hosts[{i}]"
        if host == "*":
            rep.fail(hpath, "host '*' is not allowed in a ServiceEntry")
        check(rep, hpath, hosts.check_wildcard_domain, host)
        if se.resolution is not Resolution.DYNAMIC_DNS:
            try:
                hosts.check_partial_wildcard(host)
            except ValueError as e:
                rep.warn(hpath, str(e))
    cidr = False
    for i, address in enumerate(se.addresses):
        check(rep, f"{path}.addresses[{i}]", hosts.check_ip_or_cidr, address)
        cidr = cidr or "/" in address
    if cidr and se.resolution not in (Resolution.NONE, Resolution.STATIC):
        rep.fail(f"{path}.addresses", "CIDR addresses need resolution NONE or STATIC")
    if se.workload_selector is not None:
        if se.endpoints:
            rep.fail(path, "only one of workloadSelector or endpoints may be set")
        check_selector_labels(rep, f"{path}.workloadSelector.labels", se.workload_selector.labels)
    names: set[str] = set()
    numbers: set[int] = set()
    for i, port in enumerate(se.ports):
        ppath = f"{path}.ports[{i}]"
        if port.name in names:
            rep.fail(f"{ppath}.name", f"port name {port.name!r} already defined")
        if port.number in numbers:
            rep.fail(f"{ppath}.number", f"port {port.number} already defined")
        names.add(port.name)
        numbers.add(port.number)
        check_port_name(rep, f"{ppath}.name", port.name)
        check_protocol(rep, f"{ppath}.protocol", port.protocol)
        check_port(rep, f"{ppath}.number", port.number)
        if port.target_port:
            check_port(rep, f"{ppath}.targetPort", port.target_port)
        if not se.addresses and port.protocol.upper() in ("", "TCP"):
            rep.warn(ppath, "TCP ports without addresses can only be matched by port")
    _resolution(se, names, path, rep)
    if se.resolution is not Resolution.NONE and len(se.hosts) > 1:
        for i, port in enumerate(se.ports):
            if not (protocol_is_http(port.protocol) or protocol_is_tls(port.protocol)):
                rep.fail(f"{path}.ports[{i}]", "several hosts need HTTP or TLS ports to tell apart")
    check_export_to(rep, f"{path}.exportTo", se.export_to, namespace, service_entry=True)


def _resolution(se: ServiceEntry, port_names: set[str], path: str, rep: Reporter) -> None:
    res = se.resolution
    epath = f"{path}.endpoints"
    if res is Resolution.NONE and se.endpoints:
        rep.fail(epath, "resolution NONE takes no endpoints")
    if res is Resolution.STATIC:
        for i, ep in enumerate(se.endpoints):
            validate_workload_entry(
                ep, f"{epath}[{i}]", rep, service_ports=port_names, fqdn_ok=False
            )
    if res in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN):
        if not se.endpoints:
            for i, host in enumerate(se.hosts):
                if hosts.is_wildcard(host):
                    rep.fail(
                        f"{path}.hosts[{i}]", f"resolution {res} without endpoints needs FQDNs"
                    )
        if res is Resolution.DNS_ROUND_ROBIN and len(se.endpoints) > 1:
            rep.fail(epath, "resolution DNS_ROUND_ROBIN takes at most one endpoint")
        for i, ep in enumerate(se.endpoints):
            validate_workload_entry(ep, f"{epath}[{i}]", rep, service_ports=port_names)
    if res is Resolution.DYNAMIC_DNS:
        for i, host in enumerate(se.hosts):
            if not hosts.is_wildcard(host):
                rep.fail(f"{path}.hosts[{i}]", "resolution DYNAMIC_DNS needs wildcard hosts")
        if se.addresses or se.endpoints:
            rep.fail(path, "resolution DYNAMIC_DNS takes no addresses or endpoints")
        for i, port in enumerate(se.ports):
            if port.protocol.upper() not in ("HTTP", "TLS", "GRPC", "HTTP2"):
                rep.fail(
                    f"{path}.ports[{i}].protocol", "DYNAMIC_DNS supports HTTP, TLS, GRPC, HTTP2"
                )


def validate_sidecar(sc: Sidecar, path: str, rep: Reporter) -> None:
    if sc.workload_selector is not None:
        check_selector_labels(rep, f"{path}.workloadSelector.labels", sc.workload_selector.labels)
        if not sc.workload_selector.labels:
            rep.warn(f"{path}.workloadSelector", "selector without labels applies to all workloads")
    if sc == Sidecar(workload_selector=sc.workload_selector):
        rep.fail(path, "empty Sidecar configuration")
    ports: set[int] = set()
    for i, ing in enumerate(sc.ingress):
        ipath = f"{path}.ingress[{i}]"
        _sidecar_port(rep, f"{ipath}.port", ing.port.number, ing.port.name, ing.port.protocol)
        _bind(rep, f"{ipath}.bind", ing.bind)
        if ing.port.number in ports:
            rep.fail(f"{ipath}.port.number", "ports of IP-bound listeners must be unique")
        ports.add(ing.port.number)
        if ing.default_endpoint:
            _default_endpoint(rep, f"{ipath}.defaultEndpoint", ing.default_endpoint)
        if ing.tls is not None:
            _ingress_tls(ing.tls, ing.port.protocol, f"{ipath}.tls", rep)
        if ing.connection_pool is not None:
            validate_connection_pool(ing.connection_pool, f"{ipath}.connectionPool", rep)
            if ing.connection_pool.http is not None and not protocol_is_http(ing.port.protocol):
                rep.warn(
                    f"{ipath}.connectionPool.http", "port is not HTTP: only tcp settings apply"
                )
    if sc.inbound_connection_pool is not None:
        validate_connection_pool(sc.inbound_connection_pool, f"{path}.inboundConnectionPool", rep)
    ports = set()
    sockets: set[str] = set()
    for i, eg in enumerate(sc.egress):
        epath = f"{path}.egress[{i}]"
        if eg.port is None:
            if i != len(sc.egress) - 1:
                rep.fail(epath, "the egress listener without port must be the last one")
        elif eg.port.number == 0:
            if not eg.bind.startswith(_UNIX):
                rep.fail(f"{epath}.bind", "port 0 needs a unix domain socket bind address")
            _bind(rep, f"{epath}.bind", eg.bind)
            if eg.capture_mode not in (CaptureMode.DEFAULT, CaptureMode.NONE):
                rep.fail(f"{epath}.captureMode", "unix sockets need captureMode DEFAULT or NONE")
            if eg.bind in sockets:
                rep.fail(f"{epath}.bind", "unix domain socket listeners must be unique")
            sockets.add(eg.bind)
        else:
            p = eg.port
            _sidecar_port(rep, f"{epath}.port", p.number, p.name, p.protocol)
            _bind(rep, f"{epath}.bind", eg.bind)
            if p.number in ports:
                rep.fail(f"{epath}.port.number", "ports of IP-bound listeners must be unique")
            ports.add(p.number)
        if not eg.hosts:
            rep.fail(f"{epath}.hosts", "an egress listener needs at least one host")
        for j, host in enumerate(eg.hosts):
            check(rep, f"{epath}.hosts[{j}]", _egress_host, host)
    if (otp := sc.outbound_traffic_policy) is not None and otp.egress_proxy is not None:
        opath = f"{path}.outboundTrafficPolicy"
        if otp.mode is not OutboundTrafficPolicyMode.ALLOW_ANY:
            rep.fail(f"{opath}.egressProxy", "egressProxy needs mode ALLOW_ANY")
        if otp.egress_proxy.port is None:
            rep.fail(f"{opath}.egressProxy.port", "egressProxy needs a port")
        check(rep, f"{opath}.egressProxy.host", hosts.check_fqdn, otp.egress_proxy.host)
        check_destination(rep, f"{opath}.egressProxy", otp.egress_proxy)


def _egress_host(host: str) -> None:
    hosts.check_namespaced_host(host, gateway=False)


def _sidecar_port(rep: Reporter, path: str, number: int, name: str, protocol: str) -> None:
    if name:
        check_port_name(rep, f"{path}.name", name)
    check_protocol(rep, f"{path}.protocol", protocol)
    check_port(rep, f"{path}.number", number)


def _default_endpoint(rep: Reporter, path: str, endpoint: str) -> None:
    if endpoint.startswith(_UNIX):
        _unix_address(rep, path, endpoint.removeprefix(_UNIX))
        return
    host, colon, port = endpoint.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or (host and host not in _LOCAL_BINDS):
        rep.fail(
            path,
            "must be 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port>, "
            ":<port> or unix://<path>",
        )
    if not port.isdigit():
        rep.fail(path, f"port {port!r} is not a number")
    check_port(rep, path, int(port))


def _ingress_tls(tls: ServerTLSSettings, protocol: str, path: str, rep: Reporter) -> None:
    for present, what in (
        (tls.subject_alt_names, "subjectAltNames"),
        (tls.https_redirect, "httpsRedirect"),
        (tls.credential_name, "credentialName"),
        (tls.credential_names, "credentialNames"),
        (tls.tls_certificates, "tlsCertificates"),
    ):
        if present:
            rep.fail(f"{path}.{what}", f"{what} is not supported on sidecar ingress")
    if tls.mode in (ServerTLSMode.ISTIO_MUTUAL, ServerTLSMode.AUTO_PASSTHROUGH):
        rep.fail(f"{path}.mode", f"mode {tls.mode} is not allowed on sidecar ingress")
    if not protocol_is_tls(protocol):
        rep.fail(path, "tls settings need an HTTPS or TLS port")
    _server_tls(tls, path, rep)
