"""``pymesh proxy --concurrency N``: N worker processes behind one admin view.

Envoy runs N worker threads in one process; CPython's GIL lets one thread run Python at a
time, so pymesh runs N processes instead. Each worker is a complete proxy (its own runtime,
connection pools and xDS stream) that binds every listener with ``SO_REUSEPORT``, and the
kernel spreads new connections over them. The main process owns the admin port: it sums the
workers' stats, fans health and drain commands out to all of them, and exits loudly when one
dies, as Envoy's process does when a worker thread crashes.
"""
