"""pilot: Istio configuration and the service registry in, xDS v3 out."""
