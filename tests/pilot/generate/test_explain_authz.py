"""``pymesh explain`` names the AuthorizationPolicy rule that allows or denies a request, read
off the destination's generated RBAC filters by the proxy's own RBAC engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilot.generate import explain
from pymesh.config.loader import load_documents
from tests.pilot.generate._mesh import BOOKINFO, Mesh, build_mesh

AUTHZ = "docs-extracted/security/authz-http/"


def _viewers(mode: str | None = None, *, mtls: bool = True) -> Mesh:
    return build_mesh(
        BOOKINFO,
        AUTHZ + "1-deny-all.yaml",
        AUTHZ + "3-details-viewer.yaml",
        AUTHZ + "5-ratings-viewer.yaml",
        mode=mode,
        gateway=False,
        mtls=mtls,
    )


@pytest.mark.parametrize("mode", [None, "process"])
def test_bookinfo_viewers(mode: str | None) -> None:
    mesh = _viewers(mode)
    productpage, reviews = mesh.nodes["productpage-v1"], mesh.nodes["reviews-v1"]
    allowed = explain(mesh.ctx, productpage, "http://details:9080/details/0")
    assert allowed.authorization == "allowed by ns[default]-policy[details-viewer]-rule[0]"
    assert "authorization    allowed by" in allowed.render()
    post = explain(mesh.ctx, productpage, "http://details:9080/details/0", {":method": "POST"})
    assert post.authorization == "denied (403 RBAC: access denied)"
    other = explain(mesh.ctx, reviews, "http://details:9080/details/0")
    assert other.authorization == "denied (403 RBAC: access denied)"
    ratings = explain(mesh.ctx, reviews, "http://ratings:9080/ratings/0")
    assert ratings.authorization == "allowed by ns[default]-policy[ratings-viewer]-rule[0]"


def test_principals_need_mesh_mtls() -> None:
    """Pods without the injector's tlsMode label call each other in plaintext: the caller
    has no identity, so a policy on principals denies it, as the destination's sidecar does."""
    mesh = _viewers(mtls=False)
    denied = explain(mesh.ctx, mesh.nodes["productpage-v1"], "http://details:9080/details/0")
    assert denied.authorization == (
        "denied (403 RBAC: access denied); plaintext: the caller presents no identity"
    )

    # Labelled pods, but details' PeerAuthentication turns mTLS off: plaintext again.
    disable = load_documents(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: details, namespace: default}\n"
        "spec: {selector: {matchLabels: {app: details}}, mtls: {mode: DISABLE}}\n"
    ).resources
    mesh = build_mesh(
        BOOKINFO, AUTHZ + "1-deny-all.yaml", AUTHZ + "3-details-viewer.yaml",
        gateway=False, mtls=True, resources=disable,
    )  # fmt: skip
    plain = explain(mesh.ctx, mesh.nodes["productpage-v1"], "http://details:9080/details/0")
    assert plain.authorization == denied.authorization


def test_deny_policy_is_named_and_dry_run_noted(tmp_path: Path) -> None:
    deny = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-post, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: DENY
  rules: [{to: [{operation: {methods: [POST]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: no-delete
  namespace: default
  annotations: {istio.io/dry-run: "true"}
spec:
  selector: {matchLabels: {app: details}}
  action: DENY
  rules: [{to: [{operation: {methods: [DELETE]}}]}]
"""
    path = tmp_path / "deny.yaml"
    path.write_text(deny)
    mesh = build_mesh(BOOKINFO, path, gateway=False, mtls=True)
    productpage = mesh.nodes["productpage-v1"]
    url = "http://details:9080/details/0"
    denied = explain(mesh.ctx, productpage, url, {":method": "POST"})
    assert denied.authorization == (
        "denied (403 RBAC: access denied) by ns[default]-policy[no-post]-rule[0]"
    )
    dry = explain(mesh.ctx, productpage, url, {":method": "DELETE"})
    assert dry.authorization == (
        "allowed; dry-run would deny (ns[default]-policy[no-delete]-rule[0])"
    )
    assert explain(mesh.ctx, productpage, url).authorization == "allowed"
    no_policy = explain(mesh.ctx, productpage, "http://reviews:9080/reviews/0")
    assert no_policy.authorization == "allowed; no policy applies"
