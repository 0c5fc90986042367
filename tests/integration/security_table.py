"""The policy, identities, tokens and listeners of the security differential table
(``test_security_differential.py``).

Pilot turns one set of Istio policies (RequestAuthentication with two issuers, ALLOW / DENY /
AUDIT / dry-run AuthorizationPolicies using every field the tables exercise) into the RBAC and
jwt_authn filters of httpbin's sidecar in ``foo``, and the network RBAC of a tcp-echo sidecar
beside it; the bootstrap puts them on five listeners: plaintext HTTP, mTLS (client certificate
required, SPIFFE identities signed by pymesh's own CA), server-only TLS behind the TLS
inspector, and two TCP ports.
"""

from __future__ import annotations

import datetime
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from auth.ca import CaSettings, CertificateAuthority, parse_csr
from auth.pem import chain_pem, key_pem
from pilot.generate.security import security_http_filters, security_network_filters
from pymesh.config.loader import load_documents
from pymesh.config.snapshot import ConfigSnapshot
from pymesh.identity import SpiffeId
from tests.auth.pki import company_ca, csr_pem
from tests.pilot.generate._mesh import Mesh, workload_nodes
from tests.proxy.runtime.bootstrap import cluster, hcm, route, sa, vhost
from tests.proxy.security.tokens import SigningKey, jwks_json, make_keys

__all__ = ["ISSUER_A", "ISSUER_B", "SERVER_NAME", "Identities", "Ports", "Tokens", "bootstrap"]

ISSUER_A = "https://issuer-a.example.com"
ISSUER_B = "issuer-b@example.com"
SERVER_NAME = "httpbin.foo.svc.cluster.local"
TRUST_DOMAIN = "cluster.local"
ACCESS_LOG = (
    "%RESPONSE_CODE% %RESPONSE_CODE_DETAILS% %RESPONSE_FLAGS% "
    "rbac=%DYNAMIC_METADATA(envoy.filters.http.rbac)% "
    "audit=%DYNAMIC_METADATA(envoy.common)% "
    "jwt=%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:payload:sub)%\n"
)

HTTPBIN = """
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {app: httpbin}
  ports: [{name: http, port: 8000}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  template:
    metadata: {labels: {app: httpbin, version: v1}}
    spec:
      serviceAccountName: httpbin
      containers: [{name: httpbin, image: httpbin, ports: [{containerPort: 8000}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: tcp-echo, namespace: foo}
spec:
  selector: {matchLabels: {app: tcp-echo}}
  template:
    metadata: {labels: {app: tcp-echo}}
    spec:
      containers: [{name: tcp-echo, image: tcp-echo, ports: [{containerPort: 9000}]}]
"""

POLICIES = """
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  jwtRules:
  - issuer: {issuer_a}
    jwks: '{jwks_a}'
    audiences: [api.example.com]
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]
  - issuer: {issuer_b}
    jwks: '{jwks_b}'
    fromHeaders: [{{name: x-token-b}}]
    fromParams: [tok]
    forwardOriginalToken: true
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-delete, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  action: DENY
  rules: [{{to: [{{operation: {{methods: [DELETE]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-admin-files, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/files/admin/*"]}}}}]
    when: [{{key: "request.headers[x-token]", notValues: [admin]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/bookinfo-productpage]}}}}]
    to: [{{operation: {{methods: [GET, HEAD], paths: [/productpage, "/static/*"]}}}}]
  - from: [{{source: {{namespaces: [foo]}}}}]
    to: [{{operation: {{paths: ["/api/{{*}}/items", "/files/{{**}}"]}}}}]
  - from: [{{source: {{requestPrincipals: ["{issuer_a}/alice"]}}}}]
    when:
    - {{key: "request.auth.claims[groups]", values: [admins]}}
    - {{key: request.auth.audiences, values: [api.example.com]}}
  - from: [{{source: {{requestPrincipals: ["{issuer_b}/*"]}}}}]
    to: [{{operation: {{paths: ["/b/*"]}}}}]
  - from: [{{source: {{remoteIpBlocks: [10.1.2.0/24], notIpBlocks: [192.0.2.1]}}}}]
    to: [{{operation: {{paths: [/ip]}}}}]
  - to: [{{operation: {{hosts: ["*.example.com"], notPaths: ["/private*"]}}}}]
  - to: [{{operation: {{paths: [/sni]}}}}]
    when: [{{key: connection.sni, values: [api.example.com]}}]
  - to: [{{operation: {{paths: [/port], ports: ["{plain_port}"]}}}}]
  - from: [{{source: {{notPrincipals: ["*"]}}}}]
    to: [{{operation: {{paths: [/plaintext-only]}}}}]
    when: [{{key: request.auth.presenter, notValues: [evil]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: audit, namespace: foo}}
spec:
  action: AUDIT
  rules: [{{to: [{{operation: {{paths: ["/static/*"]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-run-deny
  namespace: foo
  annotations: {{"istio.io/dry-run": "true"}}
spec:
  action: DENY
  rules: [{{to: [{{operation: {{paths: ["/static/*"]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: tcp, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: tcp-echo}}}}
  rules: [{{to: [{{operation: {{ports: ["{tcp_port}"]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: tcp-deny-get, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: tcp-echo}}}}
  action: DENY
  rules: [{{to: [{{operation: {{methods: [GET], ports: ["{tcp_other_port}"]}}}}]}}]
"""


@dataclass(frozen=True)
class Ports:
    plain: int
    mtls: int
    tls: int
    tcp: int
    tcp_other: int


@dataclass
class Identities:
    """Client contexts for each caller, and the server's certificate files."""

    ca_file: Path
    server_chain: Path
    server_key: Path
    clients: dict[str, ssl.SSLContext] = field(default_factory=dict)


def identities(workdir: Path) -> Identities:
    material = company_ca(intermediate=False)
    ca = CertificateAuthority(material, CaSettings(), time.time)
    workdir.mkdir(parents=True, exist_ok=True)
    ca_file = workdir / "root.pem"
    ca_file.write_text(material.root_pem)
    server_key = ec.generate_private_key(ec.SECP256R1())
    chain = ca.sign_server(server_key.public_key(), [SERVER_NAME, "api.example.com"], [], 3600)
    out = Identities(ca_file, workdir / "server.pem", workdir / "server.key")
    out.server_chain.write_text("".join(chain))
    out.server_key.write_bytes(key_pem(server_key))
    callers = {
        "productpage": ("default", "bookinfo-productpage"),
        "reviews": ("default", "bookinfo-reviews"),
        "sleep": ("foo", "sleep"),
    }
    for name, (namespace, account) in callers.items():
        key = ec.generate_private_key(ec.SECP256R1())
        identity = SpiffeId(TRUST_DOMAIN, namespace, account)
        request = parse_csr(csr_pem(key, uri=identity.uri))
        out.clients[name] = _client(workdir, name, ca.sign_workload(request, identity, 3600), key)
    # A certificate the same root signed with a DNS name only: no SPIFFE identity.
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "legacy")]))
        .issuer_name(material.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("legacy.example.com")]), critical=False
        )
        .sign(material.key, hashes.SHA256())
    )
    out.clients["dns-only"] = _client(workdir, "dns-only", (chain_pem([leaf]),), key)
    anonymous = ssl.create_default_context(cafile=str(ca_file))
    out.clients["no-certificate"] = anonymous
    return out


def _client(
    workdir: Path, name: str, chain: tuple[str, ...], key: ec.EllipticCurvePrivateKey
) -> ssl.SSLContext:
    (workdir / f"{name}.pem").write_text("".join(chain))
    (workdir / f"{name}.key").write_bytes(key_pem(key))
    context = ssl.create_default_context(cafile=str(workdir / "root.pem"))
    context.load_cert_chain(workdir / f"{name}.pem", workdir / f"{name}.key")
    return context


@dataclass(frozen=True)
class Tokens:
    keys: dict[str, SigningKey]

    def a(self, alg: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        base = {
            "iss": ISSUER_A,
            "sub": "alice",
            "aud": "api.example.com",
            "groups": ["admins", "dev"],
            "exp": now + 3600,
        }
        return self.keys[alg].sign({**base, **claims})

    def b(self, **claims: Any) -> str:
        now = int(time.time())
        return self.keys["ES256"].sign({"iss": ISSUER_B, "sub": "bob", "exp": now + 3600, **claims})


def tokens() -> Tokens:
    return Tokens(make_keys())


def _security(tok: Tokens, ports: Ports) -> tuple[list[Any], list[Any]]:
    text = POLICIES.format(
        issuer_a=ISSUER_A,
        issuer_b=ISSUER_B,
        jwks_a=jwks_json(tok.keys["RS256"], tok.keys["PS256"]),
        jwks_b=jwks_json(tok.keys["ES256"]),
        plain_port=ports.plain,
        tcp_port=ports.tcp,
        tcp_other_port=ports.tcp_other,
    )
    resources = [*load_documents(HTTPBIN).resources, *load_documents(text).resources]
    snapshot = ConfigSnapshot(tuple(resources)).resources
    nodes = workload_nodes(snapshot)
    mesh = Mesh(snapshot, nodes)
    httpbin, tcp_echo = nodes["httpbin"], nodes["tcp-echo"]
    return security_http_filters(mesh.ctx, httpbin), security_network_filters(mesh.ctx, tcp_echo)


def _tls(ids: Identities, *, require_client: bool) -> dict[str, Any]:
    context: dict[str, Any] = {
        "common_tls_context": {
            "tls_certificates": [
                {
                    "certificate_chain": {"filename": str(ids.server_chain)},
                    "private_key": {"filename": str(ids.server_key)},
                }
            ],
            "validation_context": {"trusted_ca": {"filename": str(ids.ca_file)}},
        }
    }
    if require_client:
        context["require_client_certificate"] = True
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
            ".DownstreamTlsContext",
            **context,
        },
    }


def bootstrap(
    host: str, ports: Ports, upstream: tuple[str, int], ids: Identities, tok: Tokens, log: Path
) -> dict[str, Any]:
    http_filters, network_filters = _security(tok, ports)
    access_log = [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3"
                ".FileAccessLog",
                "path": str(log),
                "log_format": {"text_format_source": {"inline_string": ACCESS_LOG}},
            },
        }
    ]

    def manager(prefix: str) -> dict[str, Any]:
        return hcm(
            [vhost([route("/")])],
            http_filters=http_filters,
            stat_prefix=prefix,
            access_log=access_log,
        )

    def http_listener(name: str, port: int, tls: dict[str, Any] | None) -> dict[str, Any]:
        chain: dict[str, Any] = {"filters": [manager(name)]}
        out: dict[str, Any] = {"name": name, "address": sa(host, port), "filter_chains": [chain]}
        if tls is not None:
            chain["transport_socket"] = tls
        if name == "tls":  # the SNI reaches RBAC through the TLS inspector only
            out["listener_filters"] = [
                {
                    "name": "envoy.filters.listener.tls_inspector",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.listener"
                        ".tls_inspector.v3.TlsInspector"
                    },
                }
            ]
        return out

    def tcp_listener(name: str, port: int) -> dict[str, Any]:
        proxy = {
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3"
                ".TcpProxy",
                "stat_prefix": name,
                "cluster": "backend",
            },
        }
        return {
            "name": name,
            "address": sa(host, port),
            "filter_chains": [{"filters": [*network_filters, proxy]}],
        }

    listeners = [
        http_listener("plain", ports.plain, None),
        http_listener("mtls", ports.mtls, _tls(ids, require_client=True)),
        http_listener("tls", ports.tls, _tls(ids, require_client=False)),
        tcp_listener("tcp", ports.tcp),
        tcp_listener("tcp_other", ports.tcp_other),
    ]
    return {
        "static_resources": {
            "listeners": listeners,
            "clusters": [cluster("backend", [upstream])],
        }
    }
