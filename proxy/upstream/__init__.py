"""Upstream side of the proxy: hosts, connection pools, clusters and the cluster manager."""
