"""The pymesh data plane: an Envoy-compatible HTTP/1.1 sidecar proxy on asyncio + uvloop."""
