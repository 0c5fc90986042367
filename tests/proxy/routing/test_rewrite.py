import re

import pytest

from proxy.config.model import (
    PathMatchKind,
    RedirectAction,
    RegexRewrite,
    Route,
    RouteAction,
    RouteActionType,
    RouteMatch,
    WeightedCluster,
)
from proxy.routing.rewrite import redirect_location, rewrite_host, rewrite_path


def fwd(kind, path=b"", regex=None, case_sensitive=True, **action) -> Route:
    return Route(
        match=RouteMatch(path_kind=kind, path=path, regex=regex, case_sensitive=case_sensitive),
        action=RouteAction(kind=RouteActionType.CLUSTER, cluster="c", **action),
    )


P = PathMatchKind


@pytest.mark.parametrize(
    ("route", "path", "expected"),
    [
        # Envoy's documented trailing-slash example: two routes are needed to strip /prefix.
        (fwd(P.PREFIX, b"/prefix/", prefix_rewrite=b"/"), b"/prefix/etc", b"/etc"),
        (fwd(P.PREFIX, b"/prefix", prefix_rewrite=b"/"), b"/prefix", b"/"),
        (fwd(P.PREFIX, b"/prefix", prefix_rewrite=b"/"), b"/prefix/etc", b"//etc"),
        (fwd(P.PREFIX, b"/prefix", prefix_rewrite=b"/"), b"/prefixetc", b"/etc"),
        (fwd(P.PREFIX, b"/old", prefix_rewrite=b"/new"), b"/old/x?q=1", b"/new/x?q=1"),
        # case-insensitive match: the rest of the path keeps its case
        (
            fwd(P.PREFIX, b"/old/", case_sensitive=False, prefix_rewrite=b"/n/"),
            b"/OLD/Abc",
            b"/n/Abc",
        ),
        (fwd(P.PATH, b"/exact", prefix_rewrite=b"/other"), b"/exact?a=b", b"/other?a=b"),
        (
            fwd(P.PATH_SEPARATED_PREFIX, b"/api", prefix_rewrite=b"/v2"),
            b"/api/users",
            b"/v2/users",
        ),
        # a regex route's "prefix" is the whole path
        (
            fwd(P.SAFE_REGEX, regex=re.compile(rb"/r/.*"), prefix_rewrite=b"/fixed"),
            b"/r/anything?k=v",
            b"/fixed?k=v",
        ),
        # Envoy's regex_rewrite examples
        (
            fwd(
                P.PREFIX,
                b"/",
                regex_rewrite=RegexRewrite(
                    re.compile(rb"^/service/([^/]+)(/.*)$"), rb"\2/instance/\1"
                ),
            ),
            b"/service/foo/v1/api?x=1",
            b"/v1/api/instance/foo?x=1",
        ),
        (
            fwd(P.PREFIX, b"/", regex_rewrite=RegexRewrite(re.compile(rb"one"), b"two")),
            b"/xxx/one/yyy/one/zzz",
            b"/xxx/two/yyy/two/zzz",
        ),
        (
            fwd(
                P.PREFIX,
                b"/",
                regex_rewrite=RegexRewrite(re.compile(rb"^(.*?)one(.*)$"), rb"\1two\2"),
            ),
            b"/xxx/one/yyy/one/zzz",
            b"/xxx/two/yyy/one/zzz",
        ),
        (fwd(P.PREFIX, b"/"), b"/unchanged", None),
        (fwd(P.PREFIX, b"/", prefix_rewrite=b""), b"/unchanged", None),
    ],
)
def test_path_rewrite_table(route, path, expected):
    assert rewrite_path(route, path) == expected


def action(**kw) -> RouteAction:
    return RouteAction(kind=RouteActionType.CLUSTER, cluster="c", **kw)


def test_host_rewrite():
    headers = [(b"host", b"orig"), (b"x-target", b"from-header")]
    assert rewrite_host(action(), headers) is None
    assert rewrite_host(action(host_rewrite_literal=b"lit"), headers) == b"lit"
    assert rewrite_host(action(host_rewrite_header=b"x-target"), headers) == b"from-header"
    assert rewrite_host(action(host_rewrite_header=b"x-missing"), headers) is None
    assert rewrite_host(action(host_rewrite_header=b"x-empty"), [(b"x-empty", b"")]) is None
    wc = WeightedCluster(name="w", weight=1, host_rewrite_literal=b"weighted")
    assert rewrite_host(action(host_rewrite_literal=b"lit"), headers, weighted_cluster=wc) == (
        b"weighted"
    )
    auto = action(auto_host_rewrite=True)
    assert rewrite_host(auto, headers) is None
    assert rewrite_host(auto, headers, upstream_hostname="") is None
    assert rewrite_host(auto, headers, upstream_hostname="db.internal") == b"db.internal"


def redirect(path=b"/", kind=P.PREFIX, **kw) -> Route:
    return Route(match=RouteMatch(path_kind=kind, path=path), action=RedirectAction(**kw))


@pytest.mark.parametrize(
    ("route", "scheme", "host", "path", "expected"),
    [
        # https_redirect drops the default port of the old scheme only
        (redirect(scheme_redirect=b"https"), b"http", b"a.com", b"/x?y", b"https://a.com/x?y"),
        (redirect(scheme_redirect=b"https"), b"http", b"a.com:80", b"/x", b"https://a.com/x"),
        (
            redirect(scheme_redirect=b"https"),
            b"http",
            b"a.com:8080",
            b"/x",
            b"https://a.com:8080/x",
        ),
        (redirect(scheme_redirect=b"http"), b"https", b"a.com:443", b"/", b"http://a.com/"),
        (redirect(scheme_redirect=b"https"), b"https", b"a.com:443", b"/", b"https://a.com:443/"),
        (redirect(port_redirect=8443), b"http", b"a.com:80", b"/p", b"http://a.com:8443/p"),
        (redirect(port_redirect=8443), b"http", b"[::1]:80", b"/p", b"http://[::1]:8443/p"),
        (redirect(host_redirect=b"b.com"), b"http", b"a.com:80", b"/p", b"http://b.com/p"),
        (
            redirect(host_redirect=b"b.com", port_redirect=81),
            b"http",
            b"a.com",
            b"/p",
            b"http://b.com:81/p",
        ),
        # path_redirect keeps the request's query unless it brings its own
        (redirect(path_redirect=b"/new"), b"http", b"a", b"/old?q=1", b"http://a/new?q=1"),
        (redirect(path_redirect=b"/new?z=2"), b"http", b"a", b"/old?q=1", b"http://a/new?z=2"),
        (
            redirect(path_redirect=b"/new?z=2", strip_query=True),
            b"http",
            b"a",
            b"/old?q=1",
            b"http://a/new?z=2",
        ),
        (
            redirect(path_redirect=b"/new", strip_query=True),
            b"http",
            b"a",
            b"/old?q=1",
            b"http://a/new",
        ),
        (redirect(path_redirect=b"new"), b"http", b"a", b"/old", b"http://a/new"),
        (
            redirect(b"/old/", prefix_rewrite=b"/new/"),
            b"http",
            b"a",
            b"/old/x?q",
            b"http://a/new/x?q",
        ),
        (
            redirect(b"/old/", prefix_rewrite=b"/new/", strip_query=True),
            b"http",
            b"a",
            b"/old/x?q",
            b"http://a/new/x",
        ),
        (
            redirect(regex_rewrite=RegexRewrite(re.compile(rb"/v1/"), b"/v2/")),
            b"https",
            b"a",
            b"/api/v1/x?v1",
            b"https://a/api/v2/x?v1",
        ),
    ],
)
def test_redirect_location_table(route, scheme, host, path, expected):
    assert redirect_location(route, scheme=scheme, host=host, path=path) == expected


def test_redirect_response_code_default_is_301():
    assert RedirectAction().response_code == 301


def test_redirect_location_needs_a_redirect_route():
    with pytest.raises(TypeError):
        redirect_location(fwd(P.PREFIX, b"/"), scheme=b"http", host=b"a", path=b"/")
