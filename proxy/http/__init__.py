"""The HTTP connection manager: downstream connections, streams, filters and the router."""
