"""Tracing as Envoy's ``envoy.tracers.zipkin`` does it: the trace context on the wire
(:mod:`.context`), the sampling decision (:mod:`.decision`), a span per request
(:mod:`.span`, :mod:`.tracer`) and its report to a Zipkin collector (:mod:`.reporter`)."""
