from dataclasses import replace

from pymesh.demo.pilot_api import SyncState, sync_states
from pymesh.demo.state import DemoState, PodState, ProcessState, read_state, write_state


def pod(name, sync="SYNCED", app_ready=True, role="app", port=9080):
    return PodState(
        name=name,
        namespace="default",
        ip="127.0.4.10",
        role=role,
        node_id=f"sidecar~{name}",
        port=port,
        app=ProcessState(10, "/l"),
        proxy=ProcessState(11, "/p"),
        app_ready=app_ready,
        sync=sync,
    )


def test_round_trip_and_readiness(tmp_path):
    state = DemoState(
        run_dir=str(tmp_path),
        supervisor_pid=1,
        phase="running",
        control_address="127.0.4.1",
        pilot_xds="127.0.4.1:15010",
        pilot_api="http://127.0.4.1:15080",
        pilot_ready=True,
        pods=(pod("a"), pod("sleep", role="client", port=None, app_ready=False)),
    )
    path = tmp_path / "state.json"
    write_state(path, state)
    assert read_state(path) == state
    assert state.ready
    assert state.pod("sleep") is state.pods[1]
    assert state.pod("sleep.default") is state.pods[1]
    assert state.pod("nope") is None
    assert not replace(state, pods=(pod("a", app_ready=False),)).ready
    assert not replace(state, pods=(pod("a", sync="STALE"),)).ready
    assert not replace(state, pilot_ready=False).ready


def test_read_state_tolerates_garbage(tmp_path):
    (tmp_path / "s.json").write_text("{not json")
    assert read_state(tmp_path / "s.json") is None
    assert read_state(tmp_path / "missing.json") is None


def test_sync_states_from_proxy_status():
    body = {
        "proxies": [
            {
                "id": "a",
                "types": {
                    "CDS": {"status": "SYNCED"},
                    "LDS": {"status": "SYNCED"},
                    "EDS": {"status": "SYNCED"},
                    "RDS": {"status": "NOT SENT"},
                },
            },
            {"id": "b", "types": {"CDS": {"status": "SYNCED"}, "LDS": {"status": "STALE"}}},
            {
                "id": "c",
                "types": {"CDS": {"status": "SYNCED"}, "LDS": {"status": "SYNCED"}},
                "errors": {"RDS": "bad route"},
            },
            {"id": "d", "types": {"CDS": {"status": "SYNCED"}, "LDS": {"status": "NOT SENT"}}},
        ]
    }
    states = sync_states(body)
    assert states["a"] == SyncState("SYNCED")
    with_age = sync_states({"proxies": [{**body["proxies"][0], "connected_seconds": 3.5}]})
    assert with_age["a"].connected_seconds == 3.5
    assert states["b"].status == "STALE" and "LDS" in states["b"].detail
    assert states["c"] == SyncState("NACK", "RDS: bad route")
    assert states["d"].status == "STALE"
