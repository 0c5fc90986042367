"""The proxy's only I/O layer: asyncio protocols, flow control, TLS."""
