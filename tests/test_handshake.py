"""WebSocket handshake failures, in-process (Starlette's TestClient on the embedded store)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from relay.app import create_app
from relay.config import Settings
from relay.errors import Unavailable
from tests.support import auth, token


def test_a_failed_snapshot_takes_the_presence_entry_back() -> None:
    """presence_add succeeded, then the snapshot failed: the socket is refused (1013) and the room does
    not go on showing the user as connected until the entry would have expired."""
    app = create_app(Settings.from_environ({"RELAY_DEV_MODE": "true", "RELAY_PRESENCE_TTL": "600"}))
    alice, bob = token("alice"), token("bob")
    with TestClient(app) as client:
        code = client.post("/api/create-room", headers=auth(alice), json={}).json()["room_code"]
        client.post("/api/join-room", headers=auth(bob), json={"room_code": code})

        async def snapshot_fails(*args: Any, **kwargs: Any) -> Any:
            raise Unavailable("room storage is unavailable; retry shortly")

        rooms = app.state.services.rooms
        rooms.snapshot, working_snapshot = snapshot_fails, rooms.snapshot
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect(f"/ws/{code}?token={bob}") as ws,
        ):
            ws.receive_json()
            ws.receive_json()
        assert refused.value.code == 1013
        rooms.snapshot = working_snapshot  # GET /api/room reads a snapshot too
        members = client.get(f"/api/room/{code}", headers=auth(alice)).json()["members"]
        assert {m["user_id"]: m["connected"] for m in members} == {"alice": False, "bob": False}
