"""Pure security decisions of the proxy, apart from I/O: Envoy's RBAC engine (``rbac``), JWT
verification (``jwt``) and the JWKS cache (``jwks``). The filters that run them on requests and
connections live with the other filters; these modules only take values and return verdicts.
"""
