"""Analyzer checks for AuthorizationPolicy and RequestAuthentication, on Bookinfo and Istio's
task files (``pymesh analyze`` runs them with the others)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymesh.config import analyze as an
from pymesh.config import analyze_security as sec
from pymesh.config import load_documents, load_path

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "istio-samples"


def _bookinfo(*texts: str) -> list:
    if not SAMPLES.is_dir():
        pytest.skip("../shared/istio-samples is not present")
    resources = list(load_path(SAMPLES / "bookinfo/platform/kube/bookinfo.yaml").resources)
    for text in texts:
        resources.extend(load_documents(text).resources)
    return resources


def _policy(name: str, spec: str, namespace: str = "default") -> str:
    return (
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}\n---\n"
    )


def test_bookinfo_viewers_are_clean() -> None:
    files = ["1-deny-all.yaml", "2-productpage-viewer.yaml", "3-details-viewer.yaml",
             "4-reviews-viewer.yaml", "5-ratings-viewer.yaml"]  # fmt: skip
    texts = [(SAMPLES / "docs-extracted/security/authz-http" / f).read_text() for f in files]
    findings = [
        f for f in an.analyze(_bookinfo(*texts)) if f.resource.kind == "AuthorizationPolicy"
    ]
    assert findings == []


def test_selector_matching_nothing() -> None:
    found = sec.policies_selecting_nothing(
        _bookinfo(_policy("typo", "  selector: {matchLabels: {app: detials}}\n  rules: [{}]"))
    )
    assert [(f.code, f.path, f.message) for f in found] == [
        (
            "IST0127",
            "spec.selector",
            "No matching workloads for this resource with the following labels: app=detials",
        )
    ]


def test_target_ref_policies_apply_to_no_pymesh_proxy() -> None:
    ingress = SAMPLES / "docs-extracted/security/authz-ingress"
    text = (ingress / "3-authorizationpolicy-ingress-allow-ipblocks-gateway-api.yaml").read_text()
    assert [f.code for f in sec.policies_selecting_nothing(_bookinfo(text))] == ["PYM0003"]


def test_principal_naming_no_service_account() -> None:
    spec = (
        "  selector: {matchLabels: {app: details}}\n"
        "  rules:\n  - from:\n    - source:\n        principals:\n"
        "        - cluster.local/ns/default/sa/bookinfo-productpage\n"
        "        - cluster.local/ns/default/sa/bookinfo-productpgae\n"
        "        - cluster.local/ns/other/sa/anything\n"
        "        - cluster.local/ns/default/sa/*\n"
    )
    found = sec.unknown_principals(_bookinfo(_policy("p", spec)))
    assert [(f.code, f.path, f.message) for f in found] == [
        (
            "IST0101",
            "spec.rules[0].from[0].source.principals[1]",
            "Referenced service account not found: 'default/bookinfo-productpgae'",
        )
    ]


def test_request_principals_need_a_request_authentication() -> None:
    policy = _policy(
        "require-jwt",
        "  selector: {matchLabels: {app: productpage}}\n"
        "  rules: [{from: [{source: {requestPrincipals: ['*']}}]}]",
    )
    found = sec.request_principals_without_authn(_bookinfo(policy))
    assert [(f.code, f.path) for f in found] == [("PYM0002", "spec.rules")]
    authn = (
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
        "metadata: {name: jwt, namespace: istio-system}\n"
        "spec:\n  jwtRules: [{issuer: me, jwksUri: 'https://example.com/jwks'}]\n"
    )
    assert sec.request_principals_without_authn(_bookinfo(policy, authn)) == []
