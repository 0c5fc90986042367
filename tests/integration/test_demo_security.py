"""Istio's security tasks, replayed on a running ``pymesh demo`` with Istio's own files,
unchanged (``../shared/istio-samples``), applied with ``pymesh apply -f`` (``-n foo`` where the
task applies a file to foo). The demo's sidecars and ingress gateway are pymesh proxies.

As the tasks do, httpbin and sleep run in namespace ``foo`` (``kubectl apply -n foo``) and
httpbin-gateway routes the ingress gateway's port 80 to httpbin. The tasks' ``jwksUri`` points
to raw.githubusercontent.com: a ServiceEntry sends that host to a server of the test's own
serving the same ``jwks.json``, as an egress rule would.

One demo serves the module, on addresses of the policy area (``127.0.8.0/24``); every test
removes what it applied. Each test's docstring is the outcome the Istio task documents.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pymesh.demo.runtime import unprivileged_port_start
from pymesh.samples.bookinfo.constants import PAGE_TITLE, RATINGS_UNAVAILABLE
from tests.integration.demo_harness import (
    ISTIO,
    Demo,
    istio_file,
    no_demo_processes,
    reviews_version,
)
from tests.support import POLICY_NET, address

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.xdist_group("pymesh-demo-security"),
    pytest.mark.skipif(unprivileged_port_start() > 80, reason="httpbin-gateway listens on 80"),
]

SECURITY = "docs-extracted/security"
DENIED = "RBAC: access denied"
DETAILS_ERROR = "Error fetching product details"
REVIEWS_ERROR = "Error fetching product reviews"

Apply = Callable[..., None]


class _Jwks(BaseHTTPRequestHandler):
    """raw.githubusercontent.com for the tasks' jwksUri: Istio's sample JWKS at any path."""

    document = b""
    fetches = 0

    def do_GET(self) -> None:
        type(self).fetches += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.document)))
        self.end_headers()
        self.wfile.write(self.document)

    def log_message(self, *args: object) -> None:
        pass


def _jwks_entry(host: str, port: int) -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        "metadata: {name: github-jwks, namespace: foo}\n"
        "spec:\n  hosts: [raw.githubusercontent.com]\n  location: MESH_EXTERNAL\n"
        "  ports: [{number: 443, name: http, protocol: HTTP}]\n  resolution: STATIC\n"
        f"  endpoints: [{{address: {host}, ports: {{http: {port}}}}}]\n"
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if not ISTIO.is_dir():
        pytest.skip("../shared/istio-samples is not present")
    base = tmp_path_factory.mktemp("demo-security")
    demo = Demo(
        base / "run",
        control=address(POLICY_NET, 101),
        pods=f"{address(POLICY_NET, 110)}-{address(POLICY_NET, 139)}",
        external=address(POLICY_NET, 140),
    )
    _Jwks.document = istio_file("jwt/jwks.json").read_bytes()
    jwks = ThreadingHTTPServer((demo.external, 0), _Jwks)
    threading.Thread(target=jwks.serve_forever, daemon=True).start()
    entry = base / "jwks-serviceentry.yaml"
    entry.write_text(_jwks_entry(demo.external, jwks.server_address[1]))
    try:
        demo.up()
        demo.pymesh("create", "namespace", "foo")
        for app in ("httpbin/httpbin.yaml", "sleep/sleep.yaml", "httpbin/httpbin-gateway.yaml"):
            demo.pymesh("apply", "-n", "foo", "-f", str(istio_file(app)))
        demo.apply(entry)
        demo.wait(
            lambda: demo.state().ready and {"httpbin.foo", "sleep.foo"} <= _ready(demo),
            90,
            "httpbin and sleep running in foo",
        )
        demo.settle()
        yield demo
        result = demo.down()
        assert result.returncode == 0, result.stdout + result.stderr
        assert not no_demo_processes(demo.run_dir)
    finally:
        jwks.shutdown()
        jwks.server_close()


def _fresh_connections(demo: Demo) -> None:
    """A connection a proxy accepted before a listener update keeps its filter chain for one
    more answer, sent with ``connection: close`` (Envoy's drain). One request through each
    path the tests use makes the next ones meet the new configuration."""
    demo.product_page()
    demo.get(f"http://{demo.control}:80/headers")
    demo.curl_from("sleep.foo", "-s", "http://httpbin.foo:8000/ip")
    demo.curl_from("sleep.default", "-s", "http://productpage:9080/productpage")


def _ready(demo: Demo) -> set[str]:
    return {p.key for p in demo.state().pods if p.ready}


@pytest.fixture
def rules(demo: Demo) -> Iterator[Apply]:
    """``rules(path, namespace=None)`` applies a file; everything applied goes at the end."""
    applied: list[tuple[Path, str | None]] = []

    def apply(path: Path, namespace: str | None = None) -> None:
        applied.append((path, namespace))
        ns = ["-n", namespace] if namespace else []
        demo.pymesh("apply", *ns, "-f", str(path))
        demo.settle()
        _fresh_connections(demo)

    yield apply
    for path, namespace in reversed(applied):
        ns = ["-n", namespace] if namespace else []
        demo.pymesh("delete", *ns, "-f", str(path), check=False)
    if applied:
        demo.settle()


def _task(name: str) -> Path:
    return istio_file(f"{SECURITY}/{name}")


def _from_sleep(demo: Demo, url: str, *argv: str) -> tuple[int, str]:
    result = demo.curl_from("sleep.foo", "-s", *argv, url)
    return result.http_code, result.body.decode("utf-8", "replace")


def _token(name: str) -> str:
    return istio_file(f"jwt/{name}").read_text().strip()


def _bearer(token: str) -> tuple[str, str]:
    return "-H", f"Authorization: Bearer {token}"


# -- authz-http ------------------------------------------------------------------------------


def test_authz_http_deny_all_then_productpage_viewer(demo: Demo, rules: Apply) -> None:
    """HTTP traffic: with deny-all in default the product page answers 403 "RBAC: access
    denied"; with productpage-viewer (GET) the page loads again, and its calls to details and
    reviews, still denied, show their error messages."""
    rules(_task("authz-http/1-deny-all.yaml"))
    page = demo.product_page()
    assert (page.status, page.body) == (403, DENIED)
    rules(_task("authz-http/2-productpage-viewer.yaml"))
    page = demo.product_page()
    assert page.status == 200 and PAGE_TITLE in page.body
    assert DETAILS_ERROR in page.body and REVIEWS_ERROR in page.body
    from_sleep = demo.curl_from(
        "sleep.default", "-s", "-X", "POST", "http://productpage:9080/productpage"
    )
    assert from_sleep.http_code == 403  # productpage-viewer allows GET only


def _pages(demo: Demo, count: int = 6) -> list[str]:
    pages = [demo.product_page() for _ in range(count)]
    assert all(p.status == 200 and PAGE_TITLE in p.body for p in pages), pages
    return [p.body for p in pages]


def test_authz_http_viewers_by_principal(demo: Demo, rules: Apply) -> None:
    """HTTP traffic, the steps that name callers by identity: details-viewer lets productpage
    (``cluster.local/ns/default/sa/bookinfo-productpage``) read details, so the page shows the
    book details and still no reviews; reviews-viewer lets it read reviews, whose calls to
    ratings are still denied ("Ratings service is currently unavailable" instead of stars);
    ratings-viewer lets reviews (``bookinfo-reviews``) read ratings: black and red stars. Any
    other caller (sleep, its own service account) is still denied details."""
    rules(_task("authz-http/1-deny-all.yaml"))
    rules(_task("authz-http/2-productpage-viewer.yaml"))
    rules(_task("authz-http/3-details-viewer.yaml"))
    for body in _pages(demo, 2):
        assert DETAILS_ERROR not in body and "Book Details" in body
        assert REVIEWS_ERROR in body
    rules(_task("authz-http/4-reviews-viewer.yaml"))
    pages = _pages(demo)
    assert not [b for b in pages if DETAILS_ERROR in b or REVIEWS_ERROR in b]
    starred = [b for b in pages if reviews_version(b) in ("v2", "v3")]
    assert starred, "no page from reviews v2 or v3 in six"
    assert all(RATINGS_UNAVAILABLE in b for b in starred)
    rules(_task("authz-http/5-ratings-viewer.yaml"))
    versions = demo.versions(9)
    assert {"v2", "v3"} & set(versions), versions  # a page with stars: ratings answered
    assert not [v for v in versions if v not in ("v1", "v2", "v3")], versions
    assert not [b for b in _pages(demo) if RATINGS_UNAVAILABLE in b]
    other = demo.curl_from("sleep.default", "-s", "http://details:9080/details/0")
    assert (other.http_code, other.body.decode()) == (403, DENIED)


# -- the README's walk-through: deny all, then allow by principal ----------------------------

RULES = Path(__file__).resolve().parents[2] / "pymesh/samples/bookinfo/rules"


def test_readme_deny_all_then_allow_by_principal(demo: Demo, rules: Apply) -> None:
    """The README's steps with the rules pymesh ships: deny-all refuses the page; with
    productpage-reader only the reader's token opens it (none: 403, a bad one: 401); the
    viewers' principals (mesh mTLS, the demo's default) open details and reviews, and
    ``pymesh explain`` names the policy that allowed productpage's call."""
    rules(RULES / "deny-all.yaml")
    assert (demo.product_page().status, demo.product_page().body) == (403, DENIED)
    rules(RULES / "productpage-reader.yaml")
    token = (RULES / "reader.jwt").read_text().strip()
    page = f"{demo.gateway}/productpage"
    assert (demo.get(page).status, demo.get(page).body) == (403, DENIED)
    bad = demo.get(page, {"Authorization": f"Bearer {token[:-4]}AAAA"})
    assert (bad.status, bad.body) == (401, "Jwt verification fails")
    read = demo.get(page, {"Authorization": f"Bearer {token}"})
    assert read.status == 200 and PAGE_TITLE in read.body and DETAILS_ERROR in read.body
    rules(RULES / "bookinfo-viewers.yaml")
    read = demo.get(page, {"Authorization": f"Bearer {token}"})
    assert read.status == 200 and PAGE_TITLE in read.body
    said = demo.pymesh("explain", "productpage-v1", "http://details:9080/details/0").stdout
    verdict = next(ln for ln in said.splitlines() if ln.startswith("authorization"))
    assert "allowed by ns[default]-policy[details-viewer]-rule[0]" in verdict, said
    assert DETAILS_ERROR not in read.body and REVIEWS_ERROR not in read.body


def test_quick_start_strict_then_allow_by_principal(demo: Demo, rules: Apply) -> None:
    """The README's quick start: productpage's certificate names its service account; with
    mesh-wide STRICT the page still loads (the sidecars talk mTLS); deny-all refuses it; with
    productpage-viewer the page loads without details and reviews; with the viewers by
    principal the page is whole, and sleep, another identity, may not read details."""
    shown = demo.pymesh("proxy-config", "secret", "productpage-v1").stdout
    assert "spiffe://cluster.local/ns/default/sa/bookinfo-productpage" in shown, shown
    rules(RULES / "mesh-strict.yaml")
    assert demo.product_page().status == 200
    rules(RULES / "deny-all.yaml")
    assert (demo.product_page().status, demo.product_page().body) == (403, DENIED)
    rules(RULES / "productpage-viewer.yaml")
    for body in _pages(demo, 2):
        assert DETAILS_ERROR in body and REVIEWS_ERROR in body
    rules(RULES / "bookinfo-viewers.yaml")
    pages = _pages(demo)
    assert not [b for b in pages if DETAILS_ERROR in b or REVIEWS_ERROR in b]
    assert not [b for b in pages if RATINGS_UNAVAILABLE in b]
    other = demo.curl_from("sleep.default", "-s", "http://details:9080/details/0")
    assert (other.http_code, other.body.decode()) == (403, DENIED)


# -- authz-deny ------------------------------------------------------------------------------


def test_authz_deny(demo: Demo, rules: Apply) -> None:
    """Explicit deny: GET to httpbin is denied, POST allowed; with the x-token exception an
    admin's GET goes through; with the ALLOW on /ip only /ip is reachable, by an admin."""
    assert _from_sleep(demo, "http://httpbin.foo:8000/get")[0] == 200
    rules(_task("authz-deny/1-deny-method-get.yaml"))
    assert _from_sleep(demo, "http://httpbin.foo:8000/get") == (403, DENIED)
    assert _from_sleep(demo, "http://httpbin.foo:8000/post", "-X", "POST")[0] == 200
    rules(_task("authz-deny/2-deny-method-get-unless-admin.yaml"))
    assert _from_sleep(demo, "http://httpbin.foo:8000/get", "-H", "x-token: admin")[0] == 200
    assert _from_sleep(demo, "http://httpbin.foo:8000/get", "-H", "x-token: guest")[0] == 403
    rules(_task("authz-deny/3-allow-path-ip.yaml"))
    assert _from_sleep(demo, "http://httpbin.foo:8000/ip", "-H", "x-token: admin")[0] == 200
    assert _from_sleep(demo, "http://httpbin.foo:8000/get", "-H", "x-token: admin")[0] == 403


# -- authz-jwt -------------------------------------------------------------------------------


def test_authz_jwt(demo: Demo, rules: Apply) -> None:
    """JWT token: with the RequestAuthentication an invalid token is 401 and requests without
    one pass; require-jwt then denies them (403) and lets the sample token through; the
    group1 claim policy lets only the groups-scope token through."""
    url = "http://httpbin.foo:8000/headers"
    rules(_task("authz-jwt/1-requestauthentication-jwt-example.yaml"))
    assert _from_sleep(demo, url, *_bearer("invalidToken"))[0] == 401
    assert _from_sleep(demo, url)[0] == 200
    rules(_task("authz-jwt/2-authorizationpolicy-require-jwt.yaml"))
    assert _from_sleep(demo, url) == (403, DENIED)
    assert _from_sleep(demo, url, *_bearer(_token("demo.jwt")))[0] == 200
    rules(_task("authz-jwt/3-authorizationpolicy-require-jwt-group1-claim.yaml"))
    assert _from_sleep(demo, url, *_bearer(_token("demo.jwt"))) == (403, DENIED)
    assert _from_sleep(demo, url, *_bearer(_token("groups-scope.jwt")))[0] == 200
    assert _Jwks.fetches >= 1  # the keys came through the sidecar's cluster, not inline


# -- authz-dry-run ---------------------------------------------------------------------------


def test_authz_dry_run(demo: Demo, rules: Apply) -> None:
    """Dry run: the DENY policy on /headers with istio.io/dry-run denies nothing, and the
    httpbin sidecar counts what it would have denied."""
    rules(_task("authz-dry-run/1-authorizationpolicy-deny-path-headers-dry-run.yaml"), "foo")
    before = _shadow_denied(demo)
    for _ in range(3):
        assert _from_sleep(demo, "http://httpbin.foo:8000/headers")[0] == 200
    assert _from_sleep(demo, "http://httpbin.foo:8000/ip")[0] == 200
    assert _shadow_denied(demo) == before + 3


def _shadow_denied(demo: Demo) -> int:
    stats = demo.admin_stats("httpbin.foo")
    return sum(int(v) for k, v in stats.items() if k.endswith("istio_dry_run_deny_.shadow_denied"))


# -- authz-ingress ---------------------------------------------------------------------------


def _client_policy(path: Path, action: str, tmp: Path) -> Path:
    """The task's policy with the client's own address added, as the task edits it."""
    listed = '["1.2.3.4", "5.6.7.0/24"]'
    text = path.read_text().replace(listed, listed[:-1] + ', "127.0.0.0/8"]')
    if action != "ALLOW":
        text = text.replace("action: ALLOW", f"action: {action}")
    out = tmp / f"{action.lower()}-{path.name}"
    out.write_text(text)
    return out


@pytest.mark.parametrize(
    "policy",
    ["1-authorizationpolicy-ingress-allow-ipblocks.yaml",
     "2-authorizationpolicy-ingress-allow-remoteipblocks.yaml"],
)  # fmt: skip
def test_authz_ingress(demo: Demo, rules: Apply, tmp_path: Path, policy: str) -> None:
    """Ingress gateway: the ALLOW policy for 1.2.3.4 and 5.6.7.0/24 denies this client (403);
    with the client's address added it is allowed; as a DENY it is denied again."""
    gateway = f"http://{demo.control}:80/headers"
    assert demo.get(gateway).status == 200
    task = _task(f"authz-ingress/{policy}")
    rules(task)
    assert (demo.get(gateway).status, demo.get(gateway).body) == (403, DENIED)
    rules(_client_policy(task, "ALLOW", tmp_path))
    assert demo.get(gateway).status == 200
    rules(_client_policy(task, "DENY", tmp_path))
    assert demo.get(gateway).status == 403


# -- authn-policy (end-user authentication at the gateway) ------------------------------------


def test_authn_policy_at_the_ingress(demo: Demo, rules: Apply) -> None:
    """End-user authentication: with the gateway's RequestAuthentication a bad token is 401
    and no token passes; frontend-ingress then denies requests without a token (403); the
    /headers variant denies tokenless requests to /headers only."""
    gateway = f"http://{demo.control}:80"
    rules(_task("authn-policy/06-requestauthentication-jwt-example-ingressgateway.yaml"))
    assert demo.get(f"{gateway}/headers", {"Authorization": "Bearer deadbeef"}).status == 401
    assert demo.get(f"{gateway}/headers").status == 200
    rules(_task("authn-policy/08-authorizationpolicy-frontend-ingress-deny-no-principal.yaml"))
    assert demo.get(f"{gateway}/headers").status == 403
    token = {"Authorization": f"Bearer {_token('demo.jwt')}"}
    assert demo.get(f"{gateway}/headers", token).status == 200
    rules(_task("authn-policy/10-authorizationpolicy-frontend-ingress-deny-headers-path.yaml"))
    assert demo.get(f"{gateway}/headers").status == 403
    assert demo.get(f"{gateway}/ip").status == 200


# -- jwt-route -------------------------------------------------------------------------------


def test_jwt_route(demo: Demo, rules: Apply) -> None:
    """JWT claim based routing: /headers routes to httpbin only for a token whose groups claim
    holds group1 (200); without a token or with the plain sample token no route matches
    (404); an invalid token is refused (401)."""
    gateway = f"http://{demo.control}:80/headers"
    rules(_task("jwt-route/1-requestauthentication-ingress-jwt.yaml"))
    try:
        demo.apply(_task("jwt-route/2-virtualservice-httpbin-route-on-jwt-claim.yaml"))
        assert demo.get(gateway).status == 404
        assert demo.get(gateway, {"Authorization": "Bearer some.invalid.token"}).status == 401
        assert demo.get(gateway, {"Authorization": f"Bearer {_token('demo.jwt')}"}).status == 404
        grouped = {"Authorization": f"Bearer {_token('groups-scope.jwt')}"}
        assert demo.get(gateway, grouped).status == 200
    finally:
        # The task's VirtualService replaced httpbin-gateway's: put that one back.
        demo.pymesh("apply", "-n", "foo", "-f", str(istio_file("httpbin/httpbin-gateway.yaml")))
        demo.settle()


def test_zz_nothing_left_denied(demo: Demo) -> None:
    """Every test removed its policies: the page and httpbin answer as before."""
    assert demo.product_page().status == 200
    assert _from_sleep(demo, "http://httpbin.foo:8000/get")[0] == 200
