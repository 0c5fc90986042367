"""What Istio's own proxy filters add to Envoy: peer metadata exchange and Istio's standard
metrics computed in the proxy (``istio_requests_total`` and the rest)."""
