"""Bad inputs: each must fail with a ValidationError naming file, document index and field
path. Valid-but-unusual inputs must load."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pymesh.config import load_documents
from pymesh.errors import ValidationError

SOURCE = "bad.yaml"

_PREAMBLE = """apiVersion: v1
kind: ServiceAccount
metadata: {name: first}
---
"""


def vs(spec: str, version: str = "v1") -> str:
    return f"""apiVersion: networking.istio.io/{version}
kind: VirtualService
metadata: {{name: reviews}}
spec:
{spec}"""


def route(extra: str = "", dest: str = "{host: reviews, subset: v1}") -> str:
    return vs(f"""  hosts: [reviews]
  http:
  - route:
    - destination: {dest}
{extra}""")


def two_weights(a: int, b: int) -> str:
    return vs(f"""  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {a}
    - destination: {{host: reviews, subset: v2}}
      weight: {b}
""")


def kind(kind_name: str, spec: str, group: str = "networking.istio.io/v1") -> str:
    return f"""apiVersion: {group}
kind: {kind_name}
metadata: {{name: x}}
spec:
{spec}"""


@dataclass(frozen=True)
class Bad:
    text: str
    path: str | None
    message: str
    document: int = 0


BAD = {
    "broken-yaml": Bad("a: [1,\n  b: 2\n", None, "invalid YAML at line"),
    "broken-yaml-second-document": Bad(_PREAMBLE + "kind: [\n", None, "invalid YAML", 1),
    "tab-indentation": Bad("a:\n\t- b\n", None, "invalid YAML at line 2"),
    "duplicate-key": Bad(vs("  hosts: [a]\n  hosts: [b]\n"), "spec.hosts", "duplicate key"),
    "not-a-mapping": Bad("- just\n- a list\n", None, "must be a mapping"),
    "missing-kind": Bad("apiVersion: v1\nmetadata: {name: a}\n", "kind", "required"),
    "missing-name": Bad(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {}\n",
        "metadata.name",
        "required field is missing",
    ),
    "unknown-metadata-field": Bad(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, lables: {a: b}}\n",
        "metadata.lables",
        "did you mean 'labels'",
    ),
    "unsupported-api-version": Bad(
        vs("  hosts: [a]\n", version="v2"), "apiVersion", "unsupported apiVersion"
    ),
    "unknown-field": Bad(
        route("      wieght: 5\n"),
        "spec.http[0].route[0].wieght",
        "unknown field 'wieght'; did you mean 'weight'?",
    ),
    "unknown-top-level-field": Bad(vs("  hosts: [a]\n") + "extra: 1\n", "extra", "unknown field"),
    "snake-case-field": Bad(
        route("    per_try_timeout: 1s\n"), "spec.http[0].per_try_timeout", "unknown field"
    ),
    "negative-weight": Bad(
        two_weights(-10, 110), "spec.http[0].route[0].weight", "weight -10 must not be negative"
    ),
    "weights-sum-to-zero": Bad(
        two_weights(0, 0), "spec.http[0].route", "total destination weight is 0"
    ),
    "missing-destination-host": Bad(
        route(dest="{subset: v1}"),
        "spec.http[0].route[0].destination.host",
        "required field is missing",
    ),
    "missing-destination-rule-host": Bad(
        kind("DestinationRule", "  subsets: [{name: v1}]\n"),
        "spec.host",
        "required field is missing",
    ),
    "missing-route-action": Bad(
        vs("  hosts: [reviews]\n  http:\n  - timeout: 1s\n"),
        "spec.http[0]",
        "one of route, redirect, directResponse",
    ),
    "no-routes": Bad(vs("  hosts: [reviews]\n"), "spec", "at least one of http, tcp or tls"),
    "bad-duration-unit": Bad(
        route("    timeout: 3 seconds\n"), "spec.http[0].timeout", "invalid duration '3 seconds'"
    ),
    "bad-duration-number": Bad(
        route("    timeout: 5\n"), "spec.http[0].timeout", "duration must be a string"
    ),
    "duration-below-1ms": Bad(
        route("    timeout: 100us\n"), "spec.http[0].timeout", "at least 1ms"
    ),
    "negative-duration": Bad(
        route("    timeout: -1s\n"), "spec.http[0].timeout", "must not be negative"
    ),
    "bad-regex": Bad(
        vs("""  hosts: [reviews]
  http:
  - match:
    - uri: {regex: "/api/(v1"}
    route:
    - destination: {host: reviews}
"""),
        "spec.http[0].match[0].uri.regex",
        "invalid regex",
    ),
    "two-string-matches": Bad(
        vs("""  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason, prefix: ja}
    route:
    - destination: {host: reviews}
"""),
        "spec.http[0].match[0].headers[end-user]",
        "only one of exact, prefix, regex",
    ),
    "empty-uri-match": Bad(
        vs("""  hosts: [reviews]
  http:
  - match:
    - uri: {}
    route:
    - destination: {host: reviews}
"""),
        "spec.http[0].match[0].uri",
        "one of exact, prefix or regex must be set",
    ),
    "empty-prefix-header": Bad(
        vs("""  hosts: [reviews]
  http:
  - match:
    - headers: {x-a: {prefix: ""}}
    route:
    - destination: {host: reviews}
"""),
        "spec.http[0].match[0].headers[x-a].prefix",
        "must not be empty",
    ),
    "percentage-above-100": Bad(
        route("""    fault:
      abort:
        httpStatus: 500
        percentage: {value: 120}
"""),
        "spec.http[0].fault.abort.percentage.value",
        "percentage 120",
    ),
    "mirror-percentage-negative": Bad(
        route("""    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: -1}
"""),
        "spec.http[0].mirrorPercentage.value",
        "not in range 0..100",
    ),
    "port-out-of-range": Bad(
        route(dest="{host: reviews, port: {number: 70000}}"),
        "spec.http[0].route[0].destination.port.number",
        "70000",
    ),
    "invalid-host": Bad(
        route(dest="{host: Bad_Host!}"), "spec.http[0].route[0].destination.host", "invalid"
    ),
    "mesh-wildcard-host": Bad(
        vs("  hosts: ['*']\n  http:\n  - route: [{destination: {host: a}}]\n"),
        "spec.hosts[0]",
        "not allowed",
    ),
    "duplicate-hosts": Bad(
        vs(
            "  hosts: [a.example.com, '*.example.com']\n"
            "  http:\n  - route: [{destination: {host: a}}]\n"
        ),
        "spec.hosts",
        "duplicate hosts",
    ),
    "route-and-redirect": Bad(
        route("    redirect: {uri: /x}\n"), "spec.http[0]", "route and redirect cannot be combined"
    ),
    "bad-redirect-code": Bad(
        vs("  hosts: [a]\n  http:\n  - redirect: {uri: /x, redirectCode: 200}\n"),
        "spec.http[0].redirect.redirectCode",
        "not a 3xx",
    ),
    "bad-abort-status": Bad(
        route("    fault: {abort: {httpStatus: 99}}\n"),
        "spec.http[0].fault.abort.httpStatus",
        "not in range 200..599",
    ),
    "bad-retry-on": Bad(
        route("    retries: {attempts: 3, retryOn: '5xx,sometimes'}\n"),
        "spec.http[0].retries.retryOn",
        "'sometimes' is not a valid retryOn",
    ),
    "wrong-type": Bad(
        route("    retries: {attempts: three}\n"),
        "spec.http[0].retries.attempts",
        "expected an integer",
    ),
    "label-value-not-string": Bad(
        kind("DestinationRule", "  host: r\n  subsets: [{name: v1, labels: {version: 1}}]\n"),
        "spec.subsets[0].labels[version]",
        "expected a string",
    ),
    "bad-enum": Bad(
        kind("DestinationRule", "  host: r\n  trafficPolicy: {tls: {mode: STRICT}}\n"),
        "spec.trafficPolicy.tls.mode",
        "expected one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL",
    ),
    "duplicate-subset": Bad(
        kind("DestinationRule", "  host: r\n  subsets: [{name: v1}, {name: v1}]\n"),
        "spec.subsets[1].name",
        "duplicate subset name",
    ),
    "negative-max-connections": Bad(
        kind(
            "DestinationRule",
            """  host: r
  trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}
""",
        ),
        "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        "must not be negative",
    ),
    "lb-oneof": Bad(
        kind(
            "DestinationRule",
            """  host: r
  trafficPolicy:
    loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}
""",
        ),
        "spec.trafficPolicy.loadBalancer",
        "only one of simple, consistentHash",
    ),
    "maglev-not-prime": Bad(
        kind(
            "DestinationRule",
            """  host: r
  trafficPolicy:
    loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}
""",
        ),
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
        "prime",
    ),
    "gateway-without-servers": Bad(
        kind("Gateway", "  selector: {istio: ingressgateway}\n"),
        "spec.servers",
        "at least one server",
    ),
    "gateway-https-without-tls": Bad(
        kind(
            "Gateway",
            """  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*']
""",
        ),
        "spec.servers[0].tls",
        "need tls settings",
    ),
    "gateway-short-host": Bad(
        kind(
            "Gateway",
            """  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [reviews]
""",
        ),
        "spec.servers[0].hosts[0]",
        "short names",
    ),
    "gateway-bad-protocol": Bad(
        kind(
            "Gateway",
            """  servers:
  - port: {number: 80, name: http, protocol: HTTPX}
    hosts: ['*']
""",
        ),
        "spec.servers[0].port.protocol",
        "unsupported protocol",
    ),
    "service-entry-wildcard-all": Bad(
        kind("ServiceEntry", "  hosts: ['*']\n"), "spec.hosts[0]", "not allowed"
    ),
    "service-entry-missing-port-name": Bad(
        kind(
            "ServiceEntry",
            """  hosts: [a.example.com]
  ports: [{number: 80}]
""",
        ),
        "spec.ports[0].name",
        "required field is missing",
    ),
    "service-entry-dns-wildcard": Bad(
        kind(
            "ServiceEntry",
            """  hosts: ['*.example.com']
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
""",
        ),
        "spec.hosts[0]",
        "needs FQDNs",
    ),
    "sidecar-short-egress-host": Bad(
        kind("Sidecar", "  egress: [{hosts: [reviews]}]\n"),
        "spec.egress[0].hosts[0]",
        "namespace/dnsName",
    ),
    "workload-entry-without-address": Bad(
        kind("WorkloadEntry", "  labels: {app: a}\n"), "spec.address", "address is required"
    ),
    "peer-auth-port-without-selector": Bad(
        kind(
            "PeerAuthentication",
            """  portLevelMtls:
    8080: {mode: DISABLE}
""",
            "security.istio.io/v1",
        ),
        "spec.portLevelMtls",
        "needs a selector",
    ),
    "authz-empty-from": Bad(
        kind("AuthorizationPolicy", "  rules: [{from: []}]\n", "security.istio.io/v1"),
        "spec.rules[0].from",
        "must not be empty",
    ),
    "authz-unknown-when-key": Bad(
        kind(
            "AuthorizationPolicy",
            """  rules:
  - when: [{key: request.color, values: [red]}]
""",
            "security.istio.io/v1",
        ),
        "spec.rules[0].when[0].key",
        "unknown attribute",
    ),
    "authz-deny-without-rules": Bad(
        kind("AuthorizationPolicy", "  action: DENY\n", "security.istio.io/v1"),
        "spec.rules",
        "DENY without rules",
    ),
    "authz-bad-ip": Bad(
        kind(
            "AuthorizationPolicy",
            """  rules:
  - from: [{source: {ipBlocks: [10.0.0.300]}}]
""",
            "security.istio.io/v1",
        ),
        "spec.rules[0].from[0].source.ipBlocks[0]",
        "not a valid IP",
    ),
    "authz-bad-path-template": Bad(
        kind(
            "AuthorizationPolicy",
            """  rules:
  - to: [{operation: {paths: ["/a/{**}/{*}"]}}]
""",
            "security.istio.io/v1",
        ),
        "spec.rules[0].to[0].operation.paths[0]",
        "{**} must be last",
    ),
    "authz-bad-path-literal": Bad(
        kind(
            "AuthorizationPolicy",
            """  rules:
  - to: [{operation: {notPaths: ["/a b/{*}"]}}]
""",
            "security.istio.io/v1",
        ),
        "spec.rules[0].to[0].operation.notPaths[0]",
        "invalid literal",
    ),
    "authz-bad-cidr": Bad(
        kind(
            "AuthorizationPolicy",
            """  rules:
  - from: [{source: {remoteIpBlocks: [1.2.3.0/33]}}]
""",
            "security.istio.io/v1",
        ),
        "spec.rules[0].from[0].source.remoteIpBlocks[0]",
        "",
    ),
    "authz-unknown-field": Bad(
        kind(
            "AuthorizationPolicy",
            """  rules:
  - to: [{operation: {method: [GET]}}]
""",
            "security.istio.io/v1",
        ),
        "spec.rules[0].to[0].operation.method",
        "",
    ),
    "kube-service-bad-port": Bad(
        """apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  ports: [{port: 0}]
""",
        "spec.ports[0].port",
        "must be in the range 1..65535",
    ),
    "kube-deployment-selector-mismatch": Bad(
        """apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: b}}
    spec: {containers: [{name: c, image: i}]}
""",
        "spec.selector.matchLabels[app]",
        "does not match the template labels",
    ),
    "bad-resource-name": Bad(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: Not_Valid}\n",
        "metadata.name",
        "invalid name",
    ),
    "error-in-second-document": Bad(
        _PREAMBLE + two_weights(-1, 1), "spec.http[0].route[0].weight", "must not be negative", 1
    ),
}


@pytest.mark.parametrize("case", list(BAD.values()), ids=list(BAD))
def test_bad_input_names_file_document_and_path(case: Bad) -> None:
    with pytest.raises(ValidationError) as info:
        load_documents(case.text, SOURCE)
    err = info.value
    assert err.source == SOURCE
    assert err.document == case.document
    assert err.path == case.path
    assert case.message in err.message
    text = str(err)
    assert text.startswith(f"{SOURCE}: document {case.document}: ")
    if case.path:
        assert f": {case.path}: " in text


def test_field_errors_point_at_the_line() -> None:
    with pytest.raises(ValidationError) as info:
        load_documents(_PREAMBLE + two_weights(1, -1), SOURCE)
    # Line numbers count from the top of the file: document 1 starts on line 5.
    assert info.value.message.endswith("(line 15)")


GOOD = {
    "weights-not-summing-to-100": two_weights(1, 2),
    "single-destination-without-weight": route(),
    "header-presence-match": vs("""  hosts: [reviews]
  http:
  - match:
    - headers: {x-canary: {}}
    route:
    - destination: {host: reviews}
"""),
    "empty-uri-prefix": vs("""  hosts: [reviews]
  http:
  - match: [{uri: {prefix: ""}}]
    route: [{destination: {host: reviews}}]
"""),
    "ten-millisecond-timeout": route("    timeout: 10ms\n"),
    "minute-timeout": route("    timeout: 1m\n"),
    "compound-duration": route("    timeout: 1h30m\n"),
    "delegate-virtual-service": vs("  http:\n  - route: [{destination: {host: reviews}}]\n"),
    "gateway-bound-wildcard": vs(
        "  hosts: ['*']\n  gateways: [gw]\n  http:\n  - route: [{destination: {host: a}}]\n"
    ),
    "tcp-route": vs(
        "  hosts: [db]\n  tcp:\n  - match: [{port: 27017}]\n"
        "    route: [{destination: {host: mongodb, port: {number: 27017}}}]\n"
    ),
    "tls-route": vs(
        "  hosts: ['*.example.com']\n  gateways: [gw]\n  tls:\n"
        "  - match: [{sniHosts: [a.example.com]}]\n"
        "    route: [{destination: {host: a.example.com}}]\n"
    ),
    "json-document": '{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a"}}',
    "peer-auth-port-level": kind(
        "PeerAuthentication",
        """  selector: {matchLabels: {app: a}}
  mtls: {mode: STRICT}
  portLevelMtls:
    "8080": {mode: DISABLE}
""",
        "security.istio.io/v1beta1",
    ),
    "mirror-percent-alias": route("    mirror: {host: reviews}\n    mirror_percent: 50\n"),
    "kubectl-get-output": """apiVersion: v1
kind: ServiceAccount
metadata:
  name: a
  namespace: default
  uid: 0b5f0d0e-1111-2222-3333-444455556666
  resourceVersion: "123"
  creationTimestamp: 2024-01-01T00:00:00Z
  managedFields: [{manager: kubectl}]
secrets: [{name: a-token}]
""",
}


@pytest.mark.parametrize("text", list(GOOD.values()), ids=list(GOOD))
def test_valid_inputs_load(text: str) -> None:
    assert len(load_documents(text, "good.yaml").resources) == 1


def test_deprecated_fields_warn() -> None:
    result = load_documents(route("    mirror: {host: reviews}\n    mirrorPercent: 50\n"), "w.yaml")
    (res,) = result.resources
    assert res.spec.http[0].effective_mirror_percentage == 50.0
    assert [w.path for w in result.warnings] == ["spec.http[0].mirrorPercent"]
