"""mixer: telemetry (Istio metrics, access logs, traces, dependency graph) and policy."""
