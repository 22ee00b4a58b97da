"""WebSocket handshake failures, in-process (Starlette's TestClient on the embedded store)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.exceptions
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


def test_a_store_error_while_a_socket_closes_does_not_escape() -> None:
    """Redis answering the presence removal with an error it does not map (here CLUSTERDOWN, as during a
    shard's failover) is logged; the socket's close completes and no traceback reaches the server."""
    app = create_app(Settings.from_environ({"RELAY_DEV_MODE": "true"}))
    alice = token("alice")
    with TestClient(app) as client:
        code = client.post("/api/create-room", headers=auth(alice), json={}).json()["room_code"]

        async def presence_remove_fails(*args: Any, **kwargs: Any) -> Any:
            raise redis.exceptions.ResponseError("CLUSTERDOWN The cluster is down")

        app.state.services.rooms.presence_remove = presence_remove_fails
        with client.websocket_connect(f"/ws/{code}?token={alice}") as ws:
            assert ws.receive_json()["type"] == "room_state"
            ws.send_json({"type": "editor_update", "content": "x"})
            assert ws.receive_json()["type"] == "ack"
            ws.close()
        # The endpoint returned normally: the REST side of the same app still answers.
        assert client.get(f"/api/room/{code}", headers=auth(alice)).status_code == 200
