"""The proxy's gRPC access-log client (Envoy's ``envoy.access_loggers.http_grpc`` and
``tcp_grpc``): entries built from a finished request or connection (:mod:`.entry`), batched
and streamed to an Access Log Service over ``StreamAccessLogs`` (:mod:`.stream`), by the
loggers of :mod:`.logger`. Nothing is imported here: a proxy that logs to no service never
loads gRPC or Envoy's protobuf descriptors (see ``proxy.config.isolated``)."""
