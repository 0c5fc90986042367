"""What pymesh implements, field by field: nothing in an Envoy config is silently ignored.

``SUPPORTED`` lists, per protobuf message type, the fields the runtime honours. ``IGNORED``
lists the few fields Envoy accepts that pymesh accepts and ignores because ignoring them
changes no behaviour (each with the reason). ``check_supported`` walks a message with
``ListFields()`` (set fields only): a set field on neither list raises ``UnsupportedError``
naming its full path and the message type; it also applies Envoy's PGV rules (``pgv``) to
every message it visits. ``Any`` payloads are not entered: the translator that unpacks one
checks it (``unpack``), so unknown extensions are reported by their type URL.

The list is the runtime's contract: HTTP/1.1 and HTTP/2 downstream (codec AUTO/HTTP1/HTTP2),
HTTP/1.1 or prior-knowledge HTTP/2 upstream, or the downstream's protocol
(``translate/http2.py`` refuses the choice by ALPN), plain TCP and TLS
transport sockets, the router / fault / local_ratelimit / cors HTTP filters, the HCM and TCP
proxy network filters, STATIC / STRICT_DNS / LOGICAL_DNS / EDS / ORIGINAL_DST clusters, file /
stdout / stderr / gRPC (ALS) access loggers, and ADS as the only config source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from udpa.type.v1 import typed_struct_pb2

from proxy.config.translate.pgv import check_message_rules
from pymesh.errors import UnsupportedError, ValidationError

__all__ = ["IGNORED", "OPAQUE", "SUPPORTED", "check_supported", "config_type_url", "unpack"]

_CORE = "envoy.config.core.v3."
_ROUTE = "envoy.config.route.v3."
_CLUSTER = "envoy.config.cluster.v3."
_ENDPOINT = "envoy.config.endpoint.v3."
_LISTENER = "envoy.config.listener.v3."
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3."
_TLS = "envoy.extensions.transport_sockets.tls.v3."
_LOG = "envoy.config.accesslog.v3."
_MATCHER = "envoy.type.matcher.v3."
_CORS_FIELDS = (
    "allow_origin_string_match allow_methods allow_headers expose_headers max_age "
    "allow_credentials filter_enabled shadow_enabled allow_private_network_access "
    "forward_not_matching_preflights"
)


def _table(spec: dict[str, str]) -> dict[str, frozenset[str]]:
    return {name: frozenset(fields.split()) for name, fields in spec.items()}


# Messages whose content is free-form or a scalar wrapper: entered by nobody, all accepted.
OPAQUE = frozenset(
    {
        "google.protobuf.Duration",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Empty",
        "google.protobuf.BoolValue",
        "google.protobuf.UInt32Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.Int64Value",
        "google.protobuf.DoubleValue",
        "google.protobuf.StringValue",
        "google.protobuf.Any",
    }
)

SUPPORTED: dict[str, frozenset[str]] = _table(
    {
        # bootstrap
        "envoy.config.bootstrap.v3.Bootstrap": "node static_resources dynamic_resources admin",
        "envoy.config.bootstrap.v3.Bootstrap.StaticResources": "listeners clusters secrets",
        "envoy.config.bootstrap.v3.Bootstrap.DynamicResources": "lds_config cds_config ads_config",
        "envoy.config.bootstrap.v3.Admin": "address access_log access_log_path",
        _CORE + "Node": "id cluster metadata locality user_agent_name",
        _CORE + "Locality": "region zone sub_zone",
        _CORE + "Metadata": "filter_metadata",
        _CORE + "Address": "socket_address pipe",
        _CORE + "SocketAddress": "protocol address port_value ipv4_compat",
        _CORE + "Pipe": "path mode",
        _CORE + "ConfigSource": "ads api_config_source initial_fetch_timeout resource_api_version",
        _CORE + "AggregatedConfigSource": "",
        _CORE + "ApiConfigSource": "api_type transport_api_version grpc_services "
        "set_node_on_first_message_only",
        _CORE + "GrpcService": "envoy_grpc timeout",
        _CORE + "GrpcService.EnvoyGrpc": "cluster_name authority",
        _CORE + "DataSource": "filename inline_bytes inline_string",
        _CORE + "HeaderValueOption": "header append append_action keep_empty_value",
        _CORE + "HeaderValue": "key value raw_value",
        _CORE + "RuntimeFractionalPercent": "default_value",
        _CORE + "RuntimeUInt32": "default_value",
        _CORE + "RuntimeDouble": "default_value",
        _CORE + "CidrRange": "address_prefix prefix_len",
        _CORE + "TransportSocket": "name typed_config",
        _CORE + "TypedExtensionConfig": "name typed_config",
        _CORE + "HttpProtocolOptions": "idle_timeout max_connection_duration max_headers_count "
        "max_stream_duration headers_with_underscores_action max_requests_per_connection",
        _CORE + "Http1ProtocolOptions": "allow_absolute_url accept_http_10 "
        "default_host_for_http_10 header_key_format enable_trailers allow_chunked_length",
        _CORE + "Http1ProtocolOptions.HeaderKeyFormat": "proper_case_words",
        _CORE + "Http1ProtocolOptions.HeaderKeyFormat.ProperCaseWords": "",
        _CORE + "UpstreamHttpProtocolOptions": "auto_sni auto_san_validation "
        "override_auto_sni_header",
        _CORE + "SubstitutionFormatString": "text_format json_format text_format_source "
        "omit_empty_values",
        _CORE + "HealthCheck": "timeout interval initial_jitter interval_jitter "
        "interval_jitter_percent unhealthy_threshold healthy_threshold reuse_connection "
        "http_health_check tcp_health_check no_traffic_interval unhealthy_interval "
        "unhealthy_edge_interval healthy_edge_interval always_log_health_check_failures",
        _CORE + "HealthCheck.HttpHealthCheck": "host path request_headers_to_add "
        "request_headers_to_remove expected_statuses",
        _CORE + "HealthCheck.TcpHealthCheck": "send receive",
        _CORE + "HealthCheck.Payload": "text binary",
        _CORE + "TcpKeepalive": "keepalive_probes keepalive_time keepalive_interval",
        "envoy.type.v3.FractionalPercent": "numerator denominator",
        "envoy.type.v3.Percent": "value",
        "envoy.type.v3.Int64Range": "start end",
        "envoy.type.v3.HttpStatus": "code",
        "envoy.type.v3.TokenBucket": "max_tokens tokens_per_fill fill_interval",
        _MATCHER + "StringMatcher": "exact prefix suffix safe_regex contains ignore_case",
        _MATCHER + "RegexMatcher": "regex",
        _MATCHER + "RegexMatchAndSubstitute": "pattern substitution",
        _MATCHER + "MetadataMatcher": "filter path value invert",
        _MATCHER + "MetadataMatcher.PathSegment": "key",
        _MATCHER + "ValueMatcher": "null_match double_match string_match bool_match "
        "present_match list_match or_match",
        _MATCHER + "ValueMatcher.NullMatch": "",
        _MATCHER + "ListMatcher": "one_of",
        _MATCHER + "OrMatcher": "value_matchers",
        _MATCHER + "DoubleMatcher": "range exact",
        "envoy.type.v3.DoubleRange": "start end",
        # listeners
        _LISTENER + "Listener": "name address stat_prefix filter_chains use_original_dst "
        "default_filter_chain per_connection_buffer_limit_bytes metadata drain_type "
        "listener_filters listener_filters_timeout continue_on_listener_filters_timeout "
        "traffic_direction bind_to_port",
        _LISTENER + "FilterChain": "filter_chain_match filters metadata transport_socket "
        "transport_socket_connect_timeout name",
        _LISTENER + "FilterChainMatch": "destination_port prefix_ranges "
        "direct_source_prefix_ranges source_type source_prefix_ranges source_ports "
        "server_names transport_protocol application_protocols",
        _LISTENER + "Filter": "name typed_config",
        _LISTENER + "ListenerFilter": "name typed_config filter_disabled",
        _LISTENER + "ListenerFilterChainMatchPredicate": "or_match and_match not_match "
        "any_match destination_port_range",
        _LISTENER + "ListenerFilterChainMatchPredicate.MatchSet": "rules",
        "envoy.type.v3.Int32Range": "start end",
        # access logs
        _LOG + "AccessLog": "name filter typed_config",
        _LOG + "AccessLogFilter": "status_code_filter duration_filter not_health_check_filter "
        "and_filter or_filter header_filter response_flag_filter",
        _LOG + "StatusCodeFilter": "comparison",
        _LOG + "DurationFilter": "comparison",
        _LOG + "ComparisonFilter": "op value",
        _LOG + "NotHealthCheckFilter": "",
        _LOG + "AndFilter": "filters",
        _LOG + "OrFilter": "filters",
        _LOG + "HeaderFilter": "header",
        _LOG + "ResponseFlagFilter": "flags",
        "envoy.extensions.access_loggers.file.v3.FileAccessLog": "path log_format",
        "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog": "log_format",
        "envoy.extensions.access_loggers.stream.v3.StderrAccessLog": "log_format",
        "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig": "common_config "
        "additional_request_headers_to_log additional_response_headers_to_log "
        "additional_response_trailers_to_log",
        "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig": "common_config",
        "envoy.extensions.access_loggers.grpc.v3.CommonGrpcAccessLogConfig": "log_name "
        "grpc_service transport_api_version buffer_flush_interval buffer_size_bytes "
        "filter_state_objects_to_log custom_tags",
        "envoy.type.tracing.v3.CustomTag": "tag literal environment request_header metadata",
        "envoy.type.tracing.v3.CustomTag.Literal": "value",
        "envoy.type.tracing.v3.CustomTag.Environment": "name default_value",
        "envoy.type.tracing.v3.CustomTag.Header": "name default_value",
        "envoy.type.tracing.v3.CustomTag.Metadata": "kind metadata_key default_value",
        "envoy.type.metadata.v3.MetadataKind": "request route cluster host",
        "envoy.type.metadata.v3.MetadataKind.Request": "",
        "envoy.type.metadata.v3.MetadataKind.Route": "",
        "envoy.type.metadata.v3.MetadataKind.Cluster": "",
        "envoy.type.metadata.v3.MetadataKind.Host": "",
        "envoy.type.metadata.v3.MetadataKey": "key path",
        "envoy.type.metadata.v3.MetadataKey.PathSegment": "key",
        # connection manager
        _HCM + "HttpConnectionManager": "codec_type stat_prefix rds route_config http_filters "
        "add_user_agent tracing common_http_protocol_options http_protocol_options "
        "http2_protocol_options "
        "server_name server_header_transformation max_request_headers_kb "
        "stream_idle_timeout request_timeout request_headers_timeout drain_timeout "
        "delayed_close_timeout access_log use_remote_address xff_num_trusted_hops "
        "internal_address_config skip_xff_append via generate_request_id "
        "preserve_external_request_id always_set_request_id_in_response "
        "forward_client_cert_details set_current_client_cert_details proxy_100_continue "
        "upgrade_configs normalize_path merge_slashes path_with_escaped_slashes_action "
        "strip_any_host_port strip_trailing_host_dot",
        _HCM + "Rds": "config_source route_config_name",
        _HCM + "HttpFilter": "name typed_config is_optional disabled",
        _HCM + "HttpConnectionManager.Tracing": "client_sampling random_sampling "
        "overall_sampling verbose max_path_tag_length provider spawn_upstream_span custom_tags",
        _HCM + "HttpConnectionManager.InternalAddressConfig": "unix_sockets cidr_ranges",
        _HCM + "HttpConnectionManager.SetCurrentClientCertDetails": "subject cert chain dns uri",
        _HCM + "HttpConnectionManager.UpgradeConfig": "upgrade_type enabled",
        "envoy.config.trace.v3.Tracing.Http": "name typed_config",
        "envoy.config.trace.v3.ZipkinConfig": "collector_cluster collector_endpoint "
        "trace_id_128bit shared_span_context collector_endpoint_version collector_hostname "
        "trace_context_option",
        # routes
        _ROUTE + "RouteConfiguration": "name virtual_hosts internal_only_headers "
        "response_headers_to_add response_headers_to_remove request_headers_to_add "
        "request_headers_to_remove most_specific_header_mutations_wins validate_clusters "
        "max_direct_response_body_size_bytes ignore_port_in_host_matching",
        _ROUTE + "VirtualHost": "name domains routes require_tls request_headers_to_add "
        "request_headers_to_remove response_headers_to_add response_headers_to_remove cors "
        "typed_per_filter_config include_request_attempt_count "
        "include_attempt_count_in_response retry_policy rate_limits",
        _ROUTE + "Route": "name match route redirect direct_response metadata decorator "
        "typed_per_filter_config request_headers_to_add request_headers_to_remove "
        "response_headers_to_add response_headers_to_remove",
        _ROUTE + "Decorator": "operation",
        _ROUTE + "RouteMatch": "prefix path safe_regex path_separated_prefix case_sensitive "
        "runtime_fraction headers query_parameters dynamic_metadata connect_matcher",
        _ROUTE + "RouteMatch.ConnectMatcher": "",
        _ROUTE + "HeaderMatcher": "name exact_match safe_regex_match range_match present_match "
        "prefix_match suffix_match contains_match string_match invert_match "
        "treat_missing_header_as_empty",
        _ROUTE + "QueryParameterMatcher": "name string_match present_match",
        _ROUTE + "RouteAction": "cluster cluster_header weighted_clusters "
        "cluster_not_found_response_code prefix_rewrite regex_rewrite host_rewrite_literal "
        "auto_host_rewrite host_rewrite_header append_x_forwarded_host timeout idle_timeout "
        "retry_policy request_mirror_policies priority hash_policy cors max_stream_duration "
        "rate_limits include_vh_rate_limits upgrade_configs",
        # connect_config without proxy_protocol_config or allow_post: CONNECT terminated into
        # a plain TCP stream.
        _ROUTE + "RouteAction.UpgradeConfig": "upgrade_type enabled connect_config",
        _ROUTE + "RouteAction.UpgradeConfig.ConnectConfig": "",
        _ROUTE + "RateLimit": "stage disable_key actions",
        _ROUTE + "RateLimit.Action": "source_cluster destination_cluster request_headers "
        "remote_address generic_key header_value_match",
        _ROUTE + "RateLimit.Action.SourceCluster": "",
        _ROUTE + "RateLimit.Action.DestinationCluster": "",
        _ROUTE + "RateLimit.Action.RemoteAddress": "",
        _ROUTE + "RateLimit.Action.RequestHeaders": "header_name descriptor_key skip_if_absent",
        _ROUTE + "RateLimit.Action.GenericKey": "descriptor_value descriptor_key",
        _ROUTE + "RateLimit.Action.HeaderValueMatch": "descriptor_key descriptor_value "
        "expect_match headers",
        _ROUTE + "WeightedCluster": "clusters",
        _ROUTE + "WeightedCluster.ClusterWeight": "name weight request_headers_to_add "
        "request_headers_to_remove response_headers_to_add response_headers_to_remove "
        "typed_per_filter_config host_rewrite_literal",
        _ROUTE + "RetryPolicy": "retry_on num_retries per_try_timeout per_try_idle_timeout "
        "retry_host_predicate host_selection_retry_max_attempts retriable_status_codes "
        "retry_back_off retriable_headers retriable_request_headers",
        _ROUTE + "RetryPolicy.RetryHostPredicate": "name typed_config",
        _ROUTE + "RetryPolicy.RetryBackOff": "base_interval max_interval",
        _ROUTE + "RouteAction.RequestMirrorPolicy": "cluster runtime_fraction trace_sampled "
        "disable_shadow_host_suffix_append",
        _ROUTE + "RouteAction.HashPolicy": "header cookie connection_properties "
        "query_parameter filter_state terminal",
        _ROUTE + "RouteAction.HashPolicy.Header": "header_name regex_rewrite",
        _ROUTE + "RouteAction.HashPolicy.Cookie": "name ttl path",
        _ROUTE + "RouteAction.HashPolicy.ConnectionProperties": "source_ip",
        _ROUTE + "RouteAction.HashPolicy.QueryParameter": "name",
        _ROUTE + "RouteAction.HashPolicy.FilterState": "key",
        _ROUTE + "RouteAction.MaxStreamDuration": "max_stream_duration grpc_timeout_header_max "
        "grpc_timeout_header_offset",
        _ROUTE + "CorsPolicy": _CORS_FIELDS,
        _ROUTE + "RedirectAction": "https_redirect scheme_redirect host_redirect port_redirect "
        "path_redirect prefix_rewrite regex_rewrite response_code strip_query",
        _ROUTE + "DirectResponseAction": "status body",
        _ROUTE + "FilterConfig": "config is_optional disabled",
        # http filters
        "envoy.extensions.filters.http.router.v3.Router": "dynamic_stats start_child_span "
        "suppress_envoy_headers strict_check_headers respect_expected_rq_timeout "
        "suppress_grpc_request_failure_code_stats",
        "envoy.extensions.filters.http.fault.v3.HTTPFault": "delay abort upstream_cluster "
        "headers downstream_nodes max_active_faults disable_downstream_cluster_stats",
        "envoy.extensions.filters.common.fault.v3.FaultDelay": "fixed_delay header_delay "
        "percentage",
        "envoy.extensions.filters.common.fault.v3.FaultDelay.HeaderDelay": "",
        "envoy.extensions.filters.http.fault.v3.FaultAbort": "http_status header_abort percentage",
        "envoy.extensions.filters.http.fault.v3.FaultAbort.HeaderAbort": "",
        "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit": "stat_prefix status "
        "token_bucket filter_enabled filter_enforced request_headers_to_add_when_not_enforced "
        "response_headers_to_add local_rate_limit_per_downstream_connection "
        "enable_x_ratelimit_headers descriptors stage vh_rate_limits "
        "always_consume_default_token_bucket",
        "envoy.extensions.common.ratelimit.v3.LocalRateLimitDescriptor": "entries token_bucket",
        "envoy.extensions.filters.http.ratelimit.v3.RateLimit": "domain stage request_type "
        "timeout failure_mode_deny rate_limited_as_resource_exhausted rate_limit_service "
        "enable_x_ratelimit_headers disable_x_envoy_ratelimited_header status_on_error",
        "envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute": "vh_rate_limits",
        "envoy.config.ratelimit.v3.RateLimitServiceConfig": "grpc_service transport_api_version",
        "envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry": "key value",
        "envoy.extensions.filters.http.cors.v3.Cors": "",
        "envoy.extensions.filters.http.cors.v3.CorsPolicy": _CORS_FIELDS,
        # network filters, listener filters, transport sockets, retry predicates
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy": "stat_prefix cluster "
        "weighted_clusters idle_timeout access_log max_connect_attempts "
        "max_downstream_connection_duration",
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster": "clusters",
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight": (
            "name weight"
        ),
        "envoy.extensions.filters.listener.original_dst.v3.OriginalDst": "",
        "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector": "",
        "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector": "",
        "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer": "",
        "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate": "",
        # tls
        _TLS + "DownstreamTlsContext": "common_tls_context require_client_certificate "
        "session_timeout disable_stateless_session_resumption",
        _TLS + "UpstreamTlsContext": "common_tls_context sni allow_renegotiation max_session_keys",
        _TLS + "CommonTlsContext": "tls_params tls_certificates "
        "tls_certificate_sds_secret_configs validation_context "
        "validation_context_sds_secret_config combined_validation_context alpn_protocols",
        _TLS + "CommonTlsContext.CombinedCertificateValidationContext": (
            "default_validation_context validation_context_sds_secret_config"
        ),
        _TLS + "TlsParameters": "tls_minimum_protocol_version tls_maximum_protocol_version "
        "cipher_suites ecdh_curves",
        _TLS + "TlsCertificate": "certificate_chain private_key",
        _TLS + "SdsSecretConfig": "name sds_config",
        _TLS + "CertificateValidationContext": "trusted_ca verify_certificate_spki "
        "verify_certificate_hash match_typed_subject_alt_names match_subject_alt_names "
        "allow_expired_certificate trust_chain_verification",
        _TLS + "SubjectAltNameMatcher": "san_type matcher",
        _TLS + "Secret": "name tls_certificate validation_context",
        # clusters and endpoints
        _CLUSTER + "Cluster": "name alt_stat_name type eds_cluster_config connect_timeout "
        "per_connection_buffer_limit_bytes lb_policy load_assignment health_checks "
        "max_requests_per_connection circuit_breakers typed_extension_protocol_options "
        "dns_refresh_rate respect_dns_ttl dns_lookup_family "
        "outlier_detection cleanup_interval ring_hash_lb_config maglev_lb_config "
        "original_dst_lb_config least_request_lb_config common_lb_config transport_socket "
        "transport_socket_matches metadata upstream_connection_options "
        "close_connections_on_host_health_failure ignore_health_on_host_removal "
        "upstream_bind_config",
        _CORE + "BindConfig": "source_address",
        _CLUSTER + "Cluster.TransportSocketMatch": "name match transport_socket",
        _CLUSTER + "Cluster.EdsClusterConfig": "eds_config service_name",
        _CLUSTER + "Cluster.RingHashLbConfig": "minimum_ring_size hash_function maximum_ring_size",
        _CLUSTER + "Cluster.MaglevLbConfig": "table_size",
        _CLUSTER + "Cluster.OriginalDstLbConfig": "use_http_header http_header_name "
        "upstream_port_override",
        _CLUSTER + "Cluster.LeastRequestLbConfig": "choice_count active_request_bias",
        _CLUSTER + "Cluster.CommonLbConfig": "healthy_panic_threshold "
        "ignore_new_hosts_until_first_hc close_connections_on_host_set_change "
        "consistent_hashing_lb_config",
        _CLUSTER + "Cluster.CommonLbConfig.ConsistentHashingLbConfig": "use_hostname_for_hashing "
        "hash_balance_factor",
        _CLUSTER + "CircuitBreakers": "thresholds",
        _CLUSTER + "CircuitBreakers.Thresholds": "priority max_connections max_pending_requests "
        "max_requests max_retries retry_budget track_remaining max_connection_pools",
        _CLUSTER + "CircuitBreakers.Thresholds.RetryBudget": "budget_percent min_retry_concurrency",
        _CLUSTER + "OutlierDetection": "consecutive_5xx interval base_ejection_time "
        "max_ejection_percent enforcing_consecutive_5xx enforcing_success_rate "
        "success_rate_minimum_hosts success_rate_request_volume success_rate_stdev_factor "
        "consecutive_gateway_failure enforcing_consecutive_gateway_failure "
        "split_external_local_origin_errors consecutive_local_origin_failure "
        "enforcing_consecutive_local_origin_failure enforcing_local_origin_success_rate "
        "failure_percentage_threshold enforcing_failure_percentage "
        "enforcing_failure_percentage_local_origin failure_percentage_minimum_hosts "
        "failure_percentage_request_volume max_ejection_time max_ejection_time_jitter "
        "successful_active_health_check_uneject_host",
        _CLUSTER + "UpstreamConnectionOptions": "tcp_keepalive",
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": "common_http_protocol_options "
        "upstream_http_protocol_options explicit_http_config use_downstream_protocol_config "
        "auto_config",
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig": (
            "http_protocol_options http2_protocol_options"
        ),
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig": (
            "http_protocol_options http2_protocol_options"
        ),
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.AutoHttpConfig": (
            "http_protocol_options http2_protocol_options"
        ),
        # Translated by translate/http2.py into the codec's H2Settings.
        _CORE + "Http2ProtocolOptions": "hpack_table_size max_concurrent_streams "
        "initial_stream_window_size initial_connection_window_size allow_connect "
        "max_outbound_frames max_outbound_control_frames "
        "max_consecutive_inbound_frames_with_empty_payload stream_error_on_invalid_http_messaging "
        "override_stream_error_on_invalid_http_message connection_keepalive",
        _CORE + "KeepaliveSettings": "interval timeout interval_jitter connection_idle_interval",
        _ENDPOINT + "ClusterLoadAssignment": "cluster_name endpoints policy",
        _ENDPOINT + "ClusterLoadAssignment.Policy": "overprovisioning_factor "
        "endpoint_stale_after weighted_priority_health",
        _ENDPOINT + "LocalityLbEndpoints": "locality lb_endpoints load_balancing_weight priority",
        _ENDPOINT + "LbEndpoint": "endpoint health_status metadata load_balancing_weight",
        _ENDPOINT + "Endpoint": "address health_check_config hostname",
        _ENDPOINT + "Endpoint.HealthCheckConfig": "port_value hostname",
    }
)

# Accepted and ignored: each changes nothing pymesh does.
IGNORED: dict[str, dict[str, str]] = {
    _CORE + "Node": {
        "user_agent_version": "informational, only reported to the control plane",
        "user_agent_build_version": "informational, only reported to the control plane",
    },
    "envoy.config.bootstrap.v3.Admin": {
        "profile_path": "pymesh's admin has no CPU profiler endpoint that would write there",
    },
    _CORE + "RuntimeFractionalPercent": {
        "runtime_key": "pymesh has no runtime layers, so Envoy too would use default_value",
    },
    _CORE + "RuntimeUInt32": {
        "runtime_key": "pymesh has no runtime layers, so Envoy too would use default_value",
    },
    _CORE + "RuntimeDouble": {
        "runtime_key": "pymesh has no runtime layers, so Envoy too would use default_value",
    },
    _MATCHER + "RegexMatcher": {
        "google_re2": "deprecated engine selector; RE2 is Envoy's only engine and its "
        "max_program_size is no longer enforced by Envoy",
    },
    "envoy.extensions.filters.http.fault.v3.HTTPFault": {
        name: "runtime key override; with no runtime layers Envoy uses the configured value"
        for name in (
            "delay_percent_runtime",
            "abort_percent_runtime",
            "delay_duration_runtime",
            "abort_http_status_runtime",
            "max_active_faults_runtime",
            "response_rate_limit_percent_runtime",
            "abort_grpc_status_runtime",
        )
    },
    _ROUTE + "WeightedCluster": {
        "total_weight": "deprecated; Envoy ignores it and uses the sum of the weights",
    },
    _CORE + "Http2ProtocolOptions": {
        "use_oghttp2_codec": "picks one of Envoy's two HTTP/2 codec implementations; pymesh has "
        "one, and both behave alike on the wire",
    },
    _CORE + "SubstitutionFormatString": {
        "content_type": "only used for local reply bodies, which never use this format here",
    },
}


def _path(base: str, name: str) -> str:
    return f"{base}.{name}" if base else name


def check_supported(
    message: Message, path: str, extra: Mapping[str, frozenset[str]] | None = None
) -> None:
    """Refuse any set field pymesh does not implement, and any PGV violation, in ``message``
    and every sub-message (``Any`` payloads excepted). ``extra`` adds allowlist entries (a
    user filter's own message types)."""
    descriptor = message.DESCRIPTOR
    type_name = descriptor.full_name
    if type_name in OPAQUE:
        return
    allowed = SUPPORTED.get(type_name)
    if extra is not None and type_name in extra:
        allowed = extra[type_name] | (allowed or frozenset())
    ignored = IGNORED.get(type_name, {})
    check_message_rules(message, path)
    for field, value in message.ListFields():
        field_path = _path(path, field.name)
        if allowed is None or (field.name not in allowed and field.name not in ignored):
            what = "message type" if allowed is None else "field"
            raise UnsupportedError(
                f"field '{field.name}' of {type_name} is not supported by pymesh"
                + (f" ({what} not implemented)" if allowed is None else ""),
                path=field_path,
            )
        if field.name in ignored or field.message_type is None:
            continue
        _check_children(field, value, field_path, extra)


def _check_children(
    field: FieldDescriptor, value: Any, path: str, extra: Mapping[str, frozenset[str]] | None
) -> None:
    if field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        if value_field.message_type is None:
            return
        for key in value:
            check_supported(value[key], f"{path}[{key}]", extra)
    elif field.is_repeated:
        for index, item in enumerate(value):
            check_supported(item, f"{path}[{index}]", extra)
    else:
        check_supported(value, path, extra)


_TYPED_STRUCTS = frozenset(
    {
        "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type.googleapis.com/xds.type.v3.TypedStruct",
    }
)


def config_type_url(any_message: Any) -> str:
    """The type a typed config holds: an ``Any``'s own, or the one a ``TypedStruct`` names."""
    if any_message.type_url in _TYPED_STRUCTS:
        typed_struct = typed_struct_pb2.TypedStruct()
        any_message.Unpack(typed_struct)
        return str(typed_struct.type_url)
    return str(any_message.type_url)


def unpack(
    any_message: Any,
    message_class: type[Message],
    path: str,
    extra: Mapping[str, frozenset[str]] | None = None,
) -> Any:
    """Unpack an ``Any`` into ``message_class`` and check it like any other message. A
    ``TypedStruct`` (Istio's EnvoyFilters use them) holds the message as JSON: it is parsed
    into ``message_class`` as Envoy does."""
    target = message_class()
    if any_message.type_url in _TYPED_STRUCTS:
        typed_struct = typed_struct_pb2.TypedStruct()
        any_message.Unpack(typed_struct)
        if typed_struct.type_url.rpartition("/")[2] != target.DESCRIPTOR.full_name:
            raise ValidationError(
                f"expected {target.DESCRIPTOR.full_name}, got {typed_struct.type_url}",
                path=f"{path}.type_url",
            )
        try:
            json_format.ParseDict(json_format.MessageToDict(typed_struct.value), target)
        except json_format.ParseError as exc:
            raise ValidationError(
                f"invalid TypedStruct value: {exc}", path=f"{path}.value"
            ) from None
        check_supported(target, f"{path}.value", extra)
        return target
    if not any_message.Unpack(target):
        raise ValidationError(
            f"expected {target.DESCRIPTOR.full_name}, got {any_message.type_url}", path=path
        )
    check_supported(target, path, extra)
    return target
