"""Sans-I/O HTTP/1.1 on llhttp (httptools): bytes in, events out; calls in, bytes out.

``ServerConnection`` is the downstream side (parses requests, writes responses) and
``ClientConnection`` the upstream side (writes requests, parses responses). Neither touches a
socket. llhttp does the byte-level work and calls back once per message, URL, header and body
piece; the callbacks only append events to a queue that ``next_event()`` drains.

llhttp parses everything it is fed, so pipelined requests are parsed as soon as they arrive and
wait in the queue until ``start_next_cycle()``. A protocol error is reported in order: by
``receive_data()`` when nothing comes before it, else by ``next_event()`` once the events and
the exchange before it are done with. Errors carry the status Envoy answers with.
"""

from .client import ClientConnection
from .server import ServerConnection

__all__ = ["ClientConnection", "ServerConnection"]
