"""Drivers for the HTTP/2 codec tests: pump bytes between two connections, drain events, and
a raw peer that writes frames by hand (hyperframe + hpack) to send what a codec never would."""

from __future__ import annotations

from typing import Any

import hpack
import hyperframe.frame as hf

from proxy.codec import NEED_DATA
from proxy.codec.h2 import H2_PREFACE, H2ClientConnection, H2ServerConnection
from proxy.codec.h2_events import H2ConnectionError

__all__ = ["REQ", "RawPeer", "drain", "pair", "parse_frames", "pump"]

REQ = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]


def drain(conn: Any) -> list[Any]:
    out = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def pump(client: Any, server: Any) -> tuple[list[Any], list[Any]]:
    """Move bytes both ways until both are quiet; the events each side saw."""
    seen_client: list[Any] = []
    seen_server: list[Any] = []
    while True:
        out = client.data_to_send()
        back = server.data_to_send()
        if not out and not back:
            seen_client += drain(client)
            seen_server += drain(server)
            return seen_client, seen_server
        if out:
            server.receive_data(out)
        if back:
            client.receive_data(back)
        seen_client += drain(client)
        seen_server += drain(server)


def pair(client_settings: Any = None, server_settings: Any = None) -> tuple[Any, Any]:
    client = H2ClientConnection(client_settings)
    server = H2ServerConnection(server_settings)
    pump(client, server)
    return client, server


def parse_frames(data: bytes) -> list[hf.Frame]:
    frames = []
    while len(data) >= 9:
        frame, length = hf.Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    assert not data, "trailing partial frame"
    return frames


class RawPeer:
    """A client that writes frames itself, against an :class:`H2ServerConnection`."""

    def __init__(self, server: H2ServerConnection | None = None) -> None:
        self.server = server or H2ServerConnection()
        self.encoder = hpack.Encoder()
        self.error: H2ConnectionError | None = None
        self.server.data_to_send()
        self.send(H2_PREFACE, hf.SettingsFrame(0))

    def headers(
        self, sid: int, fields: list[tuple[bytes, bytes]], *, end_stream: bool = True
    ) -> hf.HeadersFrame:
        frame = hf.HeadersFrame(sid)
        frame.data = self.encoder.encode(fields)
        frame.flags.add("END_HEADERS")
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame

    def data(self, sid: int, payload: bytes, *, end_stream: bool = False) -> hf.DataFrame:
        frame = hf.DataFrame(sid)
        frame.data = payload
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame

    def send(self, *frames: Any) -> list[Any]:
        """Feed the frames (or raw bytes); the events they gave. A connection error is kept
        in ``error``."""
        raw = b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames)
        try:
            self.server.receive_data(raw)
        except H2ConnectionError as exc:
            self.error = exc
        return drain(self.server)

    def answer(self) -> list[hf.Frame]:
        """Frames the server wrote since the last call (SETTINGS ACKs and window updates
        left out)."""
        frames = parse_frames(self.server.data_to_send())
        return [
            f
            for f in frames
            if not isinstance(f, hf.WindowUpdateFrame)
            and not (isinstance(f, hf.SettingsFrame) and "ACK" in f.flags)
        ]
