import socket

import pytest

from pymesh.demo.ports import busy, listening

ADDRESS = "127.0.4.250"  # the demo area's "anything else" range


@pytest.fixture
def server():
    sock = socket.socket()
    sock.bind((ADDRESS, 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_listening_sees_a_listener_and_its_absence(server):
    assert (ADDRESS, server) in listening([ADDRESS])
    assert listening([ADDRESS], [server]) == [(ADDRESS, server)]
    assert listening(["127.0.4.251"]) == []


def test_busy(server):
    assert busy([(ADDRESS, server), ("127.0.4.251", server)]) == [(ADDRESS, server)]


def test_closed_listener_is_gone():
    sock = socket.socket()
    sock.bind((ADDRESS, 0))
    sock.listen()
    port = sock.getsockname()[1]
    sock.close()
    assert listening([ADDRESS], [port]) == []
