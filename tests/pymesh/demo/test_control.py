import asyncio

import pytest

from pymesh.demo.control import ControlClient, ControlError, ControlServer


async def test_round_trip_and_errors(tmp_path):
    seen = []

    async def handler(op, body):
        seen.append((op, body))
        if body.get("target") == "nope":
            raise ControlError("pod 'nope' does not exist", 404)
        return {"ok": True, "op": op}

    server = ControlServer(tmp_path / "c.sock", handler)
    await server.start()
    try:
        client = ControlClient(tmp_path / "c.sock", timeout=5)
        answer = await asyncio.to_thread(client.call, "POST", "/restart", {"target": "a"})
        assert answer == {"ok": True, "op": "restart"}
        assert await asyncio.to_thread(client.call, "GET", "/state") == {"ok": True, "op": "state"}
        with pytest.raises(ControlError, match="does not exist") as info:
            await asyncio.to_thread(client.call, "POST", "/restart", {"target": "nope"})
        assert info.value.status == 404
        assert (tmp_path / "c.sock").stat().st_mode & 0o777 == 0o600
    finally:
        await server.stop()
    assert seen[0] == ("restart", {"target": "a"})
    assert not (tmp_path / "c.sock").exists()


def test_unreachable(tmp_path):
    with pytest.raises(ControlError, match="cannot reach"):
        ControlClient(tmp_path / "none.sock", timeout=1).call("GET", "/state")
