"""The TLS inspector's ClientHello reading, on ClientHellos made by OpenSSL itself."""

from __future__ import annotations

import ssl

import pytest

from proxy.transport.tls_inspector import NEED_DATA, Inspection, inspect


def _client_hello(server_name: str | None, alpn: list[str]) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_sni_and_alpn_of_a_client_hello_fed_byte_by_byte() -> None:
    hello = _client_hello("outbound_.8000_._.httpbin.foo.svc.cluster.local", ["istio", "h2"])
    for end in range(len(hello)):
        assert inspect(hello[:end]) is NEED_DATA, end
    found = inspect(hello)
    assert found == Inspection(
        "tls", "outbound_.8000_._.httpbin.foo.svc.cluster.local", ("istio", "h2")
    )
    # What follows the ClientHello does not change the verdict.
    assert inspect(hello + b"\x17\x03\x03") == found


def test_a_client_hello_without_sni_or_alpn() -> None:
    assert inspect(_client_hello(None, [])) == Inspection("tls")


@pytest.mark.parametrize(
    "opening",
    [b"G", b"GET / HTTP/1.1\r\n", b"PRI * HTTP/2.0", b"\x16\x01", b"\x16\x03\x01\x00\x05\x02"],
)
def test_anything_else_is_raw_buffer(opening: bytes) -> None:
    assert inspect(opening) == Inspection("raw_buffer")


def test_a_garbled_client_hello_is_still_tls() -> None:
    hello = bytearray(_client_hello("a.example", []))
    hello[9 + 2 + 32] = 0xFF  # a session id longer than the message
    assert inspect(bytes(hello)) == Inspection("tls")
