"""Read-disable is counted: independent reasons never resume each other."""

from __future__ import annotations

from proxy.transport.flow_control import FlowControl
from tests.proxy.fakes import FakeTransport


def test_four_reasons_resume_only_when_all_are_gone() -> None:
    transport = FakeTransport()
    flow = FlowControl(transport)  # type: ignore[arg-type]
    for _ in range(4):
        flow.read_disable(True)
    assert transport.pauses == 1 and flow.read_paused
    for left in (3, 2, 1):
        flow.read_disable(False)
        assert not transport.reading and flow.disabled == left
    flow.read_disable(False)
    assert transport.reading and not flow.read_paused
    flow.read_disable(False)  # an extra enable is ignored, never negative
    assert flow.disabled == 0 and transport.reading


def test_clear_drops_every_reason_at_once() -> None:
    transport = FakeTransport()
    flow = FlowControl(transport)  # type: ignore[arg-type]
    flow.read_disable(True)
    flow.read_disable(True)
    flow.clear()
    assert transport.reading and flow.disabled == 0


def test_a_closing_transport_is_not_touched() -> None:
    transport = FakeTransport()
    flow = FlowControl(transport)  # type: ignore[arg-type]
    transport.close()
    flow.read_disable(True)
    assert transport.reading and flow.read_paused  # counted, but nothing asked of it
