"""Sample workloads for the mesh: Bookinfo stand-ins, httpbin, and the curl-like sleep client.

Every app reaches other services through the pod's sidecar given by ``HTTP_PROXY`` (or
directly without one), so Istio's Bookinfo tasks replay on them unchanged.
"""

__all__: list[str] = []
