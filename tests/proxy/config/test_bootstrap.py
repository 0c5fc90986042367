"""Bootstrap loading: golden translations of realistic bootstraps, and the verdict on broken
or unsupported ones, each checked against the real Envoy in validate mode."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config.bootstrap import bootstrap_from_dict, load_bootstrap
from proxy.config.model import HttpConnectionManager, UpstreamProtocol
from pymesh.errors import UnsupportedError, ValidationError
from tests.proxy.config.envoy_validate import envoy_validate, needs_envoy
from tests.proxy.config.golden import check_golden

DATA = Path(__file__).parent / "data"
UPDATE = os.environ.get("PYMESH_UPDATE_GOLDEN") == "1"
BOOTSTRAPS = ["front_proxy.yaml", "sidecar.yaml", "ads.yaml", "tls.yaml"]


@pytest.fixture
def in_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # tls.yaml names its certificate files relative to the data directory, as Envoy reads them.
    monkeypatch.chdir(DATA)


@pytest.mark.parametrize("name", BOOTSTRAPS)
def test_golden_translation(name: str, in_data_dir: None) -> None:
    bootstrap = load_bootstrap(name)
    check_golden(bootstrap, DATA / name.replace(".yaml", ".golden.json"), UPDATE)


@pytest.mark.envoy
@needs_envoy
@pytest.mark.parametrize("name", BOOTSTRAPS)
def test_envoy_accepts_the_golden_bootstraps(name: str) -> None:
    accepted, output = envoy_validate(DATA / name, cwd=DATA)
    assert accepted, output


def test_json_and_yaml_give_the_same_model(tmp_path: Path) -> None:
    data = yaml.safe_load((DATA / "front_proxy.yaml").read_text())
    target = tmp_path / "front_proxy.json"
    target.write_text(json.dumps(data))
    from_json = load_bootstrap(target)
    from_yaml = load_bootstrap(DATA / "front_proxy.yaml")
    assert from_json.static_resources == from_yaml.static_resources
    assert from_json.source == str(target)


def test_json_content_is_sniffed_without_extension(tmp_path: Path) -> None:
    target = tmp_path / "bootstrap"
    target.write_text(json.dumps(yaml.safe_load((DATA / "front_proxy.yaml").read_text())))
    assert load_bootstrap(target).static_resources.clusters[0].name == "productpage"


def test_unreadable_and_malformed_files_name_the_source(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read bootstrap") as missing:
        load_bootstrap(tmp_path / "absent.yaml")
    assert missing.value.source == str(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("static_resources: [unclosed\n")
    with pytest.raises(ValidationError, match="cannot parse bootstrap"):
        load_bootstrap(broken)


def test_translated_defaults_are_envoys(in_data_dir: None) -> None:
    bootstrap = load_bootstrap("front_proxy.yaml")
    hcm = bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].config
    assert isinstance(hcm, HttpConnectionManager)
    assert hcm.server_name == b"envoy"
    assert hcm.generate_request_id is True
    assert hcm.stream_idle_timeout == 300.0
    assert hcm.max_request_headers_kb == 60
    assert hcm.common_http_protocol_options.idle_timeout == 3600.0
    assert hcm.common_http_protocol_options.max_headers_count == 100
    assert hcm.route_config is not None
    route = hcm.route_config.virtual_hosts[0].routes[0]
    assert route.action.timeout == 15.0  # type: ignore[union-attr]
    cluster = bootstrap.static_resources.clusters[1]
    assert cluster.connect_timeout == 5.0
    assert cluster.circuit_breakers.default.max_requests == 1024
    assert cluster.circuit_breakers.default.max_retries == 3
    assert cluster.per_connection_buffer_limit_bytes == 1024 * 1024
    assert cluster.common_lb_config.healthy_panic_threshold == 0.5
    assert bootstrap.static_resources.listeners[0].per_connection_buffer_limit_bytes == 1 << 20


# --- rejections ----------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _hcm(data: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = data["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][
        0
    ]["typed_config"]
    return typed


def _routes(data: dict[str, Any]) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = _hcm(data)["route_config"]["virtual_hosts"][0]["routes"]
    return routes


_FAULT = {
    "name": "fault",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    },
}
_HCM_PATH = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
_AGGREGATE = {
    "name": "aggregate",
    "connect_timeout": "1s",
    "lb_policy": "CLUSTER_PROVIDED",
    "cluster_type": {
        "name": "envoy.clusters.aggregate",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
            "clusters": ["productpage", "details"],
        },
    },
}
_UNSUPPORTED_FILTER = {
    "name": "envoy.filters.http.buffer",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 1024,
    },
}

# name: (mutation, error class, text the message must contain, Envoy accepts it?)
REJECTIONS: dict[str, tuple[Mutation, type[ValidationError], str, bool]] = {
    "unknown field": (
        lambda d: d["static_resources"]["listeners"][0].update(bogus=1),
        ValidationError,
        'static_resources.listeners[0].bogus: Message type "envoy.config.listener.v3.Listener" '
        'has no field named "bogus"',
        False,
    ),
    "unknown field inside typed_config": (
        lambda d: _hcm(d).update(stat_prefx="typo"),
        ValidationError,
        f"{_HCM_PATH}.stat_prefx:",
        False,
    ),
    "wrong type: duration": (
        lambda d: d["static_resources"]["clusters"][0].update(connect_timeout="soon"),
        ValidationError,
        "static_resources.clusters[0].connect_timeout: Duration must end with letter",
        False,
    ),
    "wrong type: list for a string": (
        lambda d: d["static_resources"]["clusters"][1].update(name=["details"]),
        ValidationError,
        "static_resources.clusters[1].name:",
        False,
    ),
    "wrong type: text for a port": (
        lambda d: d["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0][
            "lb_endpoints"
        ][0]["endpoint"]["address"]["socket_address"].update(port_value="http"),
        ValidationError,
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint"
        ".address.socket_address.port_value:",
        False,
    ),
    "unsupported http filter": (
        lambda d: _hcm(d)["http_filters"].insert(0, copy.deepcopy(_UNSUPPORTED_FILTER)),
        UnsupportedError,
        f"{_HCM_PATH}.http_filters[0]: filter 'envoy.filters.http.buffer' "
        "(type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer) is not "
        "supported by pymesh",
        True,
    ),
    "unsupported cluster type extension": (
        lambda d: d["static_resources"]["clusters"].append(copy.deepcopy(_AGGREGATE)),
        UnsupportedError,
        "static_resources.clusters[2].cluster_type: cluster type extension "
        "'envoy.clusters.aggregate'",
        True,
    ),
    "unsupported field": (
        lambda d: _hcm(d).update(http2_protocol_options={"allow_metadata": True}),
        UnsupportedError,
        f"{_HCM_PATH}.http2_protocol_options.allow_metadata: field 'allow_metadata' of "
        "envoy.config.core.v3.Http2ProtocolOptions is not supported by pymesh",
        True,
    ),
    "unsupported listener field": (
        lambda d: d["static_resources"]["listeners"][0].update(freebind=True),
        UnsupportedError,
        "static_resources.listeners[0].freebind: field 'freebind'",
        True,
    ),
    "unsupported HTTP/2 option": (
        lambda d: _hcm(d).update(http2_protocol_options={"allow_metadata": True}),
        UnsupportedError,
        f"{_HCM_PATH}.http2_protocol_options.allow_metadata: field 'allow_metadata'",
        True,
    ),
    "empty cluster name (PGV)": (
        lambda d: d["static_resources"]["clusters"][1].update(name=""),
        ValidationError,
        "static_resources.clusters[1].name: value length must be at least 1",
        False,
    ),
    "route without action (PGV oneof)": (
        lambda d: _routes(d).append({"match": {"prefix": "/x"}}),
        ValidationError,
        f"{_HCM_PATH}.route_config.virtual_hosts[0].routes[3].action: one of [route,",
        False,
    ),
    "direct response status out of range (PGV)": (
        lambda d: _routes(d)[1]["direct_response"].update(status=99),
        ValidationError,
        f"{_HCM_PATH}.route_config.virtual_hosts[0].routes[1].direct_response.status:",
        False,
    ),
    "weights summing to zero": (
        lambda d: _routes(d).insert(
            0,
            {
                "match": {"prefix": "/w"},
                "route": {
                    "weighted_clusters": {"clusters": [{"name": "productpage", "weight": 0}]}
                },
            },
        ),
        ValidationError,
        "routes[0].route.weighted_clusters: Sum of weights in the weighted_cluster must be "
        "greater than 0",
        False,
    ),
    "route to an unknown cluster": (
        lambda d: _routes(d).insert(0, {"match": {"prefix": "/u"}, "route": {"cluster": "nope"}}),
        ValidationError,
        f"{_HCM_PATH}.route_config: route: unknown cluster 'nope'",
        False,
    ),
    "duplicate cluster": (
        lambda d: d["static_resources"]["clusters"].append(
            copy.deepcopy(d["static_resources"]["clusters"][0])
        ),
        ValidationError,
        "static_resources.clusters[2]: cluster manager: duplicate cluster 'productpage'",
        False,
    ),
    "router not last": (
        lambda d: _hcm(d)["http_filters"].append(copy.deepcopy(_FAULT)),
        ValidationError,
        f"{_HCM_PATH}.http_filters[0]: Error: terminal filter named envoy.filters.http.router",
        False,
    ),
    "non-terminal filter last": (
        lambda d: _hcm(d).update(http_filters=[copy.deepcopy(_FAULT)]),
        ValidationError,
        f"{_HCM_PATH}.http_filters[0]: Error: non-terminal filter named fault of type "
        "envoy.extensions.filters.http.fault.v3.HTTPFault is the last filter",
        False,
    ),
    "regex RE2 refuses": (
        lambda d: _routes(d).insert(
            0, {"match": {"safe_regex": {"regex": "/(?=a)b"}}, "route": {"cluster": "productpage"}}
        ),
        ValidationError,
        "routes[0].match.safe_regex.regex: invalid regex",
        False,
    ),
    "static cluster with a host name": (
        lambda d: d["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0][
            "lb_endpoints"
        ][0]["endpoint"]["address"]["socket_address"].update(address="example.com"),
        ValidationError,
        "socket_address.address: malformed IP address: example.com",
        False,
    ),
    "duplicate domain": (
        lambda d: _hcm(d)["route_config"]["virtual_hosts"][1]["domains"].append("bookinfo.local"),
        ValidationError,
        "virtual_hosts[1].domains[1]: Only unique values for domains are permitted",
        False,
    ),
    "host header mutation": (
        lambda d: _hcm(d)["route_config"].update(
            request_headers_to_add=[{"header": {"key": "Host", "value": "x"}}]
        ),
        ValidationError,
        "route_config.request_headers_to_add[0].header.key:",
        False,
    ),
}


def _mutated(mutation: Mutation) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DATA / "front_proxy.yaml").read_text())
    mutation(data)
    return data


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_rejections_name_the_field_path(case: str) -> None:
    mutation, error, text, _ = REJECTIONS[case]
    with pytest.raises(error) as caught:
        bootstrap_from_dict(_mutated(mutation), "bootstrap.yaml")
    assert type(caught.value) is error
    assert caught.value.source == "bootstrap.yaml"
    assert text in str(caught.value)


@pytest.mark.envoy
@needs_envoy
@pytest.mark.parametrize("case", list(REJECTIONS))
def test_envoy_agrees_on_invalid_and_accepts_unsupported(case: str, tmp_path: Path) -> None:
    """Invalid configs are refused by Envoy too; unsupported ones are valid Envoy configs."""
    mutation, error, _, envoy_accepts = REJECTIONS[case]
    assert envoy_accepts == (error is UnsupportedError)
    target = tmp_path / "bootstrap.json"
    target.write_text(json.dumps(_mutated(mutation)))
    accepted, output = envoy_validate(target)
    assert accepted == envoy_accepts, output


def test_ads_cluster_must_be_static() -> None:
    data = yaml.safe_load((DATA / "ads.yaml").read_text())
    data["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] = (
        "pilot"
    )
    del data["static_resources"]["clusters"][0]["typed_extension_protocol_options"]
    with pytest.raises(ValidationError, match="statically defined non-EDS cluster") as caught:
        bootstrap_from_dict(data)
    assert caught.value.path == (
        "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name"
    )


def test_http2_and_use_downstream_clusters_are_served() -> None:
    data = yaml.safe_load((DATA / "ads.yaml").read_text())
    data["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] = (
        "other"
    )
    other = copy.deepcopy(data["static_resources"]["clusters"][0])
    other["name"] = "other"
    data["static_resources"]["clusters"].append(other)
    # An explicit HTTP/2 cluster is served by the HTTP/2 pool, whoever uses it.
    boot = bootstrap_from_dict(copy.deepcopy(data))
    assert all(c.http_protocol_options.http2 for c in boot.static_resources.clusters)
    options = data["static_resources"]["clusters"][0]["typed_extension_protocol_options"]
    key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    del options[key]["explicit_http_config"]
    options[key]["use_downstream_protocol_config"] = {"http2_protocol_options": {}}
    # The downstream's protocol picks the pool per request.
    boot = bootstrap_from_dict(data)
    chosen = boot.static_resources.clusters[0].http_protocol_options.protocol
    assert chosen is UpstreamProtocol.USE_DOWNSTREAM


def test_missing_static_secret_is_refused(in_data_dir: None) -> None:
    data = yaml.safe_load(Path("tls.yaml").read_text())
    data["static_resources"]["secrets"] = data["static_resources"]["secrets"][1:]
    with pytest.raises(ValidationError, match="Unknown static secret: default") as caught:
        bootstrap_from_dict(data)
    assert caught.value.path == "static_resources.clusters[1].transport_socket"


def test_missing_certificate_file_is_refused(in_data_dir: None) -> None:
    text = Path("tls.yaml").read_text().replace("certs/workload.pem", "certs/absent.pem")
    with pytest.raises(ValidationError, match=r"Invalid path: certs/absent\.pem") as caught:
        bootstrap_from_dict(yaml.safe_load(text))
    assert caught.value.path is not None
    assert caught.value.path.endswith("tls_certificates[0].certificate_chain.filename")


def test_is_optional_unknown_filter_is_skipped_like_envoy() -> None:
    def mutation(data: dict[str, Any]) -> None:
        optional = dict(copy.deepcopy(_UNSUPPORTED_FILTER), is_optional=True)
        _hcm(data)["http_filters"].insert(0, optional)

    bootstrap = bootstrap_from_dict(_mutated(mutation))
    hcm = bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].config
    assert isinstance(hcm, HttpConnectionManager)
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]


def test_empty_http_filters_get_envoys_default_router() -> None:
    bootstrap = bootstrap_from_dict(_mutated(lambda d: _hcm(d).pop("http_filters")))
    hcm = bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].config
    assert isinstance(hcm, HttpConnectionManager)
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]


@pytest.mark.envoy
@needs_envoy
def test_server_tls_needs_a_certificate_like_envoy(in_data_dir: None, tmp_path: Path) -> None:
    data = yaml.safe_load(Path("tls.yaml").read_text())
    chain = data["static_resources"]["listeners"][0]["filter_chains"][0]
    del chain["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"]
    with pytest.raises(ValidationError, match="No TLS certificates found") as caught:
        bootstrap_from_dict(data)
    assert caught.value.path == (
        "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config"
        ".common_tls_context"
    )
    target = tmp_path / "tls.json"
    target.write_text(json.dumps(data))
    accepted, output = envoy_validate(target, cwd=DATA)
    assert not accepted
    assert "No TLS certificates found" in output
