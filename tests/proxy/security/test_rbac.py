"""The RBAC engine on the configs pilot generates and on every matcher Envoy defines; unsupported
fields are refused with their path."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import pytest
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from google.protobuf import json_format

from proxy.config.translate.rbac import RBAC_SUPPORTED, http_rbac, network_rbac
from proxy.config.translate.support import check_supported
from proxy.security.rbac import PeerCertificate, RbacAction
from pymesh.errors import UnsupportedError, ValidationError

SPIFFE = "spiffe://cluster.local/ns/default/sa/"
CLIENT = ipaddress.ip_address("10.0.0.1")
SERVER = ipaddress.ip_address("10.0.0.2")
VIEWER_POLICY = "ns[default]-policy[details-viewer]-rule[0]"


@dataclass
class Attrs:
    """An RbacInput made of plain values."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    path: bytes | None = b"/"
    direct_remote_ip: Any = CLIENT
    remote_ip: Any = CLIENT
    local_ip: Any = SERVER
    local_port: int = 9080
    requested_server_name: str = ""
    tls: PeerCertificate | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def header(self, name: bytes) -> bytes | None:
        if name == b":path":
            return self.path
        return self.headers.get(name)


def _http(config: dict[str, Any]):
    message = json_format.ParseDict(config, http_rbac_pb2.RBAC())
    check_supported(message, "typed_config", RBAC_SUPPORTED)
    return http_rbac(message, "typed_config")


def _allow(policies: dict[str, Any], action: str = "ALLOW"):
    config = _http({"rules": {"action": action, "policies": policies}})
    assert config.rules is not None
    return config.rules


def _policy(permission: dict[str, Any], principal: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"permissions": [permission], "principals": [principal or {"any": True}]}


def _get(method: str = "GET", **kw: Any) -> Attrs:
    headers = {b":method": method.encode(), b":authority": b"details:9080"}
    headers.update(kw.pop("headers", {}))
    return Attrs(headers=headers, **kw)


def _peer(sa: str) -> PeerCertificate:
    return PeerCertificate(uri_sans=(SPIFFE + sa,))


VIEWER = {
    "ns[default]-policy[details-viewer]-rule[0]": {
        "permissions": [
            {"and_rules": {"rules": [{"or_rules": {"rules": [
                {"header": {"name": ":method", "string_match": {"exact": "GET"}}}
            ]}}]}}
        ],
        "principals": [
            {"and_ids": {"ids": [{"or_ids": {"ids": [
                {"authenticated": {"principal_name": {"exact": SPIFFE + "bookinfo-productpage"}}}
            ]}}]}}
        ],
    },
    "ns[default]-policy[deny-all]-rule[0]": {
        "permissions": [{"not_rule": {"any": True}}],
        "principals": [{"not_id": {"any": True}}],
    },
}  # fmt: skip


@pytest.mark.parametrize(
    ("attrs", "allowed", "policy"),
    [
        (
            _get(tls=_peer("bookinfo-productpage")),
            True,
            "ns[default]-policy[details-viewer]-rule[0]",
        ),
        (_get("POST", tls=_peer("bookinfo-productpage")), False, None),
        (_get(tls=_peer("bookinfo-reviews")), False, None),
        (_get(), False, None),  # plaintext: no principal at all
        # A DNS SAN is tried after the URI SANs.
        (_get(tls=PeerCertificate(dns_sans=(SPIFFE + "bookinfo-productpage",))), True, None),
    ],
)
def test_allow_by_principal(attrs: Attrs, allowed: bool, policy: str | None) -> None:
    verdict = _allow(VIEWER).evaluate(attrs)
    assert verdict.allowed is allowed
    if policy is not None:
        assert verdict.policy == policy


def test_deny_reports_first_matching_policy_in_name_order() -> None:
    rules = _allow({"b": _policy({"any": True}), "a": _policy({"any": True})}, "DENY")
    verdict = rules.evaluate(_get())
    assert not verdict.allowed and verdict.policy == "a"
    assert _allow({}, "DENY").evaluate(_get()).allowed  # nothing to deny


def test_log_always_allows() -> None:
    rules = _allow(
        {"audit": _policy({"header": {"name": ":method", "exact_match": "POST"}})}, "LOG"
    )
    assert rules.action is RbacAction.LOG
    assert rules.evaluate(_get("POST")).log and rules.evaluate(_get("POST")).allowed
    assert not rules.evaluate(_get("GET")).log


PERMISSIONS = [
    ({"url_path": {"path": {"prefix": "/api/"}}}, _get(path=b"/api/x?q=/y"), True),
    ({"url_path": {"path": {"exact": "/api"}}}, _get(path=b"/api?x=1"), True),
    ({"url_path": {"path": {"exact": "/api"}}}, _get(path=b"/api/"), False),
    ({"url_path": {"path": {"exact": "/API", "ignore_case": True}}}, _get(path=b"/api"), True),
    ({"url_path": {"path": {"safe_regex": {"regex": ".+"}}}}, Attrs(path=None), False),
    (
        {"header": {"name": ":authority", "string_match": {"suffix": ".COM", "ignore_case": True}}},
        _get(headers={b":authority": b"www.example.com"}),
        True,
    ),
    ({"header": {"name": "x-token", "present_match": True}}, _get(), False),
    (
        {"header": {"name": "x-token", "string_match": {"exact": "a,b"}}},
        _get(headers={b"x-token": b"a,b"}),
        True,
    ),
    ({"destination_port": 9080}, _get(), True),
    ({"destination_port": 9000}, _get(), False),
    ({"destination_port_range": {"start": 9000, "end": 9080}}, _get(), False),
    ({"destination_port_range": {"start": 9000, "end": 9081}}, _get(), True),
    ({"destination_ip": {"address_prefix": "10.0.0.0", "prefix_len": 24}}, _get(), True),
    ({"destination_ip": {"address_prefix": "::1", "prefix_len": 128}}, _get(), False),
    ({"requested_server_name": {"suffix": ".local"}}, _get(requested_server_name="a.local"), True),
    ({"requested_server_name": {"safe_regex": {"regex": ".+"}}}, _get(), False),
    ({"not_rule": {"destination_port": 9000}}, _get(), True),
    ({"or_rules": {"rules": [{"destination_port": 1}, {"destination_port": 9080}]}}, _get(), True),
    ({"and_rules": {"rules": [{"destination_port": 1}, {"any": True}]}}, _get(), False),
]


def _template(template: str) -> dict[str, Any]:
    return {
        "uri_template": {
            "name": "uri-template",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3."
                "UriTemplateMatchConfig",
                "path_template": template,
            },
        }
    }


TEMPLATES = [
    ("/path/template/*", b"/path/template/a", True),
    ("/path/template/*", b"/path/template/a/b", False),
    ("/path/template/*", b"/path/template/", False),
    ("/**/path/template", b"/x/y/path/template?q", True),
    ("/static/**", b"/static/css/site.css", True),
    ("/static/**", b"/other/site.css", False),
    ("/*/api/*.json", b"/v1/api/x.json", True),
]


@pytest.mark.parametrize(("permission", "attrs", "matches"), PERMISSIONS)
def test_permissions(permission: dict[str, Any], attrs: Attrs, matches: bool) -> None:
    assert _allow({"p": _policy(permission)}).evaluate(attrs).allowed is matches


@pytest.mark.parametrize(("template", "path", "matches"), TEMPLATES)
def test_uri_templates(template: str, path: bytes, matches: bool) -> None:
    assert _allow({"p": _policy(_template(template))}).evaluate(_get(path=path)).allowed is matches


def _jwt(claim: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "filter": "envoy.filters.http.jwt_authn",
            "path": [{"key": "payload"}, {"key": claim}],
            "value": value,
        }
    }


PAYLOAD = {"iss": "issuer", "sub": "me", "groups": ["group1", "group2"], "n": 3.0, "ok": True}
META = {"envoy.filters.http.jwt_authn": {"payload": PAYLOAD}}
CLAIM_ANY_FORM = {
    "or_match": {
        "value_matchers": [
            {"list_match": {"one_of": {"string_match": {"exact": "group1"}}}},
            {"string_match": {"exact": "group1"}},
        ]
    }
}
PRINCIPALS = [
    (_jwt("iss", {"string_match": {"exact": "issuer"}}), META, True),
    (_jwt("iss", {"string_match": {"exact": "issuer"}}), {}, False),
    (_jwt("groups", CLAIM_ANY_FORM), META, True),
    (_jwt("sub", {"present_match": True}), META, True),
    (_jwt("missing", {"present_match": False}), META, True),
    (_jwt("n", {"double_match": {"exact": 3}}), META, True),
    (_jwt("n", {"double_match": {"range": {"start": 4, "end": 5}}}), META, False),
    (_jwt("ok", {"bool_match": True}), META, True),
    (_jwt("n", {"string_match": {"exact": "3"}}), META, False),
    ({"not_id": _jwt("sub", {"string_match": {"safe_regex": {"regex": ".+"}}})}, {}, True),
]


@pytest.mark.parametrize(("principal", "metadata", "matches"), PRINCIPALS)
def test_metadata_principals(principal: dict[str, Any], metadata: Any, matches: bool) -> None:
    rules = _allow({"p": _policy({"any": True}, principal)})
    assert rules.evaluate(_get(metadata=metadata)).allowed is matches


@pytest.mark.parametrize(
    ("principal", "attrs", "matches"),
    [
        ({"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}, _get(), True),
        (
            {"remote_ip": {"address_prefix": "1.2.3.4", "prefix_len": 32}},
            _get(remote_ip=ipaddress.ip_address("1.2.3.4")),
            True,
        ),
        ({"remote_ip": {"address_prefix": "1.2.3.4", "prefix_len": 32}}, _get(), False),
        ({"authenticated": {}}, _get(tls=PeerCertificate(present=False)), True),
        ({"authenticated": {}}, _get(), False),
        (
            {"authenticated": {"principal_name": {"exact": "CN=client"}}},
            _get(tls=PeerCertificate(subject="CN=client")),
            True,
        ),
        ({"header": {"name": ":method", "exact_match": "GET"}}, _get(), True),
        ({"url_path": {"path": {"prefix": "/"}}}, _get(), True),
    ],
)
def test_connection_principals(principal: dict[str, Any], attrs: Attrs, matches: bool) -> None:
    assert _allow({"p": _policy({"any": True}, principal)}).evaluate(attrs).allowed is matches


def test_shadow_and_prefixes() -> None:
    config = _http(
        {
            "shadow_rules": {"action": "DENY", "policies": {"p": _policy({"any": True})}},
            "shadow_rules_stat_prefix": "istio_dry_run_deny_",
        }
    )
    assert config.rules is None and config.shadow_rules is not None
    assert config.shadow_rules_stat_prefix == "istio_dry_run_deny_"


def test_network_rbac() -> None:
    message = json_format.ParseDict(
        {"stat_prefix": "tcp.", "rules": {"policies": {"p": _policy({"destination_port": 9000})}}},
        network_rbac_pb2.RBAC(),
    )
    config = network_rbac(message, "typed_config")
    assert config.stat_prefix == "tcp." and not config.continuous
    assert config.rules is not None
    assert not config.rules.evaluate(Attrs(path=None)).allowed
    assert config.rules.evaluate(Attrs(path=None, local_port=9000)).allowed


@pytest.mark.parametrize(
    ("config", "path"),
    [
        (
            {"rules": {"policies": {"p": {**_policy({"any": True}), "condition": {}}}}},
            "typed_config.rules.policies[p].condition",
        ),
        ({"matcher": {}}, "typed_config.matcher"),
        (
            {"rules": {"policies": {"p": _policy({"any": True}, {"filter_state": {"key": "k"}})}}},
            "typed_config.rules.policies[p].principals[0].filter_state",
        ),
        ({"track_per_rule_stats": True}, "typed_config.track_per_rule_stats"),
    ],
)
def test_unsupported_fields_are_refused(config: dict[str, Any], path: str) -> None:
    with pytest.raises(UnsupportedError) as err:
        _http(config)
    assert err.value.path == path


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"rules": {"policies": {"p": {"permissions": [{"any": True}]}}}},
         "typed_config.rules.policies[p].principals"),
        ({"rules": {"policies": {"p": _policy(_template("/a/{x}"))}}},
         "typed_config.rules.policies[p].permissions[0].uri_template.typed_config.path_template"),
        ({"rules": {"policies": {"p": _policy({"url_path": {"path": {"prefix": ""}}})}}},
         "typed_config.rules.policies[p].permissions[0].url_path.path.prefix"),
        ({"rules": {"policies": {"p": _policy({"and_rules": {"rules": []}})}}},
         "typed_config.rules.policies[p].permissions[0].and_rules.rules"),
    ],
)  # fmt: skip
def test_invalid_configs_name_the_field(config: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationError) as err:
        _http(config)
    assert err.value.path == path
