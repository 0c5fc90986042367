import random
import re

import pytest

from proxy.config.model import (
    DirectResponseAction,
    HeaderMatcher,
    PathMatchKind,
    QueryParameterMatcher,
    Route,
    RouteAction,
    RouteActionType,
    RouteConfiguration,
    RouteMatch,
    StringMatcher,
    StringMatchKind,
    VirtualHost,
    WeightedCluster,
    WeightedClusters,
)
from proxy.routing.matcher import RouteTable, pick_weighted_cluster, strip_port
from pymesh.errors import ValidationError


def vh(name: str, *domains: str, routes: tuple[Route, ...] = ()) -> VirtualHost:
    return VirtualHost(name=name, domains=tuple(d.encode() for d in domains), routes=routes)


def route(name: str, kind=PathMatchKind.PREFIX, path=b"/", **match) -> Route:
    return Route(
        name=name,
        match=RouteMatch(path_kind=kind, path=path, **match),
        action=RouteAction(kind=RouteActionType.CLUSTER, cluster=name),
    )


DOMAINS = RouteConfiguration(
    virtual_hosts=(
        vh("exact", "www.foo.com"),
        vh("suffix", "*.foo.com"),
        vh("longer-suffix", "*-bar.foo.com"),
        vh("prefix", "foo.*"),
        vh("longer-prefix", "foo-bar.*"),
        vh("with-port", "api.foo.com:8080"),
        vh("port-wildcard", "svc:*"),
        vh("default", "*"),
    )
)


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        (b"www.foo.com", "exact"),
        (b"WWW.Foo.COM", "exact"),  # case-insensitive
        (b"a.foo.com", "suffix"),
        (b"baz-bar.foo.com", "longer-suffix"),  # longest suffix wins (Envoy's example)
        (b"-bar.foo.com", "suffix"),  # the wildcard does not match the empty string
        (b".foo.com", "default"),
        (b"foo.com", "prefix"),
        (b"foo.org", "prefix"),
        (b"foo-bar.org", "longer-prefix"),
        (b"a.foo.org", "default"),
        (b"foo.x.foo.com", "suffix"),  # suffix wildcards before prefix wildcards
        (b"api.foo.com:8080", "with-port"),
        (b"api.foo.com", "suffix"),
        (b"www.foo.com:80", "default"),  # the port takes part in matching by default
        (b"a.foo.com:80", "default"),
        (b"svc:8080", "port-wildcard"),
        (b"", "default"),
    ],
)
def test_virtual_host_precedence(authority, expected):
    table = RouteTable.build(DOMAINS)
    found = table.find_virtual_host(authority)
    assert found is not None and found.name == expected
    # Cached answers are the same.
    assert table.find_virtual_host(authority) is found


def test_ignore_port_in_host_matching():
    cfg = RouteConfiguration(
        virtual_hosts=(vh("a", "www.foo.com"), vh("v6", "[::1]")),
        ignore_port_in_host_matching=True,
    )
    table = RouteTable.build(cfg)
    assert table.find_virtual_host(b"www.foo.com:443").name == "a"
    assert table.find_virtual_host(b"[::1]:80").name == "v6"
    assert table.find_virtual_host(b"other") is None


def test_strip_port():
    assert strip_port(b"a:80") == b"a"
    assert strip_port(b"a") == b"a"
    assert strip_port(b"[::1]") == b"[::1]"
    assert strip_port(b"[::1]:80") == b"[::1]"
    assert strip_port(b"a:b") == b"a:b"


def test_no_default_and_only_default():
    assert (
        RouteTable.build(RouteConfiguration(virtual_hosts=(vh("a", "a"),))).find_virtual_host(b"b")
        is None
    )
    table = RouteTable.build(RouteConfiguration(virtual_hosts=(vh("d", "*"),)))
    assert table.find_virtual_host(b"anything").name == "d"


def test_duplicate_domains_are_rejected():
    with pytest.raises(ValidationError, match="unique"):
        RouteTable.build(RouteConfiguration(virtual_hosts=(vh("a", "x"), vh("b", "X"))))
    with pytest.raises(ValidationError):
        RouteTable.build(RouteConfiguration(virtual_hosts=(vh("a", "*"), vh("b", "*"))))


def match(routes, path, headers=(), method=b"GET", rng=None):
    v = vh("v", "*", routes=tuple(routes))
    table = RouteTable.build(RouteConfiguration(virtual_hosts=(v,)), rng=rng)
    r = table.match(v, method, path, list(headers))
    return r.name if r is not None else None


PATH_ROUTES = [
    route("exact", PathMatchKind.PATH, b"/exact"),
    route("sep", PathMatchKind.PATH_SEPARATED_PREFIX, b"/api"),
    route("regex", PathMatchKind.SAFE_REGEX, b"", regex=re.compile(rb"/re/\d+")),
    route("ci", PathMatchKind.PREFIX, b"/ci/", case_sensitive=False),
    route("foo", PathMatchKind.PREFIX, b"/foo"),
    route("catch-all", PathMatchKind.PREFIX, b"/"),
]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/exact", "exact"),
        (b"/exact?x=1", "exact"),  # the query string is not part of the path
        (b"/exact#frag", "exact"),
        (b"/exact/", "catch-all"),
        (b"/EXACT", "catch-all"),  # case-sensitive by default
        (b"/api", "sep"),
        (b"/api/v1", "sep"),
        (b"/api?x", "sep"),
        (b"/apiv1", "catch-all"),  # path_separated_prefix needs a / boundary
        (b"/re/123", "regex"),
        (b"/re/123?q=a", "regex"),
        (b"/re/123/x", "catch-all"),  # regexes match the whole path
        (b"/CI/Thing", "ci"),
        (b"/foobar", "foo"),  # plain prefix has no boundary
        (b"/", "catch-all"),
    ],
)
def test_path_match_table(path, expected):
    assert match(PATH_ROUTES, path) == expected


def test_first_match_wins():
    routes = [route("first", path=b"/a"), route("second", path=b"/a/b")]
    assert match(routes, b"/a/b") == "first"
    assert match(list(reversed(routes)), b"/a/b") == "second"


def test_no_route_matches():
    assert match([route("x", path=b"/x")], b"/y") is None


def test_header_and_pseudo_header_matching():
    routes = [
        route(
            "post-json",
            headers=(
                HeaderMatcher(
                    b":method", string_match=StringMatcher(StringMatchKind.EXACT, b"POST")
                ),
                HeaderMatcher(b"content-type", present_match=True),
            ),
        ),
        route(
            "no-debug",
            headers=(HeaderMatcher(b"x-debug", present_match=True, invert_match=True),),
        ),
        route("rest"),
    ]
    assert match(routes, b"/", [(b"content-type", b"x")], method=b"POST") == "post-json"
    assert match(routes, b"/", [(b"content-type", b"x")], method=b"GET") == "no-debug"
    assert match(routes, b"/", [(b"x-debug", b"1")], method=b"GET") == "rest"


def test_authority_pseudo_header_comes_from_host():
    routes = [
        route(
            "h",
            headers=(
                HeaderMatcher(
                    b":authority", string_match=StringMatcher(StringMatchKind.PREFIX, b"api.")
                ),
            ),
        ),
        route("rest"),
    ]
    assert match(routes, b"/", [(b"host", b"api.example.com")]) == "h"
    assert match(routes, b"/", [(b"host", b"www.example.com")]) == "rest"


def test_query_parameter_matching():
    routes = [
        route(
            "debug",
            query_parameters=(
                QueryParameterMatcher(b"debug", StringMatcher(StringMatchKind.EXACT, b"1")),
            ),
        ),
        route("has-x", query_parameters=(QueryParameterMatcher(b"x"),)),
        route("rest"),
    ]
    assert match(routes, b"/p?debug=1") == "debug"
    assert match(routes, b"/p?debug=0&x") == "has-x"
    assert match(routes, b"/p") == "rest"
    assert match(routes, b"/p#debug=1") == "rest"


def test_runtime_fraction_splits_with_one_draw_per_request():
    # Envoy's traffic-shifting recipe: a 30 % route in front of an unconditional one.
    routes = [route("canary", runtime_fraction=0.3), route("stable")]
    v = vh("v", "*", routes=tuple(routes))
    table = RouteTable.build(RouteConfiguration(virtual_hosts=(v,)))
    rng = random.Random(7)
    n = 20_000
    canary = sum(table.match(v, b"GET", b"/", [], rng).name == "canary" for _ in range(n))
    assert abs(canary / n - 0.3) < 0.02


def test_complementary_fractions_share_the_draw():
    # 50 % then 50 %-of-what-remains would give 75 % with independent draws; Envoy's shared
    # random value gives exactly the first route's share to the second as well.
    routes = [route("a", runtime_fraction=0.5), route("b", runtime_fraction=0.5), route("c")]
    v = vh("v", "*", routes=tuple(routes))
    table = RouteTable.build(RouteConfiguration(virtual_hosts=(v,)))
    rng = random.Random(3)
    names = [table.match(v, b"GET", b"/", [], rng).name for _ in range(4000)]
    assert names.count("b") == 0
    assert abs(names.count("a") / 4000 - 0.5) < 0.04


def test_direct_response_routes_match_too():
    r = Route(
        name="dr",
        match=RouteMatch(path_kind=PathMatchKind.PREFIX, path=b"/health"),
        action=DirectResponseAction(status=200, body=b"ok"),
    )
    assert match([r], b"/healthz") == "dr"


def test_match_accepts_a_virtual_host_not_from_the_table():
    table = RouteTable.build(RouteConfiguration())
    other = vh("o", "x", routes=(route("r"),))
    assert table.match(other, b"GET", b"/", []).name == "r"


def weighted(*pairs: tuple[str, int]) -> RouteAction:
    clusters = tuple(WeightedCluster(name=n, weight=w) for n, w in pairs)
    return RouteAction(
        kind=RouteActionType.WEIGHTED_CLUSTERS,
        weighted_clusters=WeightedClusters(clusters, sum(w for _, w in pairs)),
    )


def test_weighted_cluster_distribution_within_bounds():
    action = weighted(("a", 10), ("b", 30), ("c", 60), ("never", 0))
    rng = random.Random(42)
    n = 50_000
    counts: dict[str, int] = {}
    for _ in range(n):
        name = pick_weighted_cluster(action, rng).name
        counts[name] = counts.get(name, 0) + 1
    assert "never" not in counts
    for name, share in (("a", 0.1), ("b", 0.3), ("c", 0.6)):
        # 5 standard deviations of a binomial proportion
        sigma = (share * (1 - share) / n) ** 0.5
        assert abs(counts[name] / n - share) < 5 * sigma


def test_weighted_cluster_without_clusters_is_an_error():
    with pytest.raises(ValueError):
        pick_weighted_cluster(
            RouteAction(kind=RouteActionType.CLUSTER, cluster="x"), random.Random()
        )
