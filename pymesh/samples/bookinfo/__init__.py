"""Istio's Bookinfo, rebuilt: productpage, details, reviews (v1/v2/v3) and ratings.

Run each with ``python -m pymesh.samples.bookinfo.<name> --host 127.0.0.N --port 9080``.
"""

__all__: list[str] = []
