"""The fast tier's relay: the app in this process on the embedded store (fakeredis), through Starlette's
TestClient. No redis-server, no uvicorn, no sockets: behaviour at the HTTP and WebSocket boundary only.

`with relay_client()` runs the app's lifespan (the hub and presence loops), as uvicorn would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from relay.app import create_app
from relay.config import Settings
from tests.support import auth, token


@contextlib.contextmanager
def relay_client(**env: str) -> Iterator[TestClient]:
    """relay in development mode with these RELAY_* settings and nothing from the environment."""
    settings = Settings.from_environ({"RELAY_DEV_MODE": "true", **env})
    assert settings.is_embedded
    with TestClient(create_app(settings)) as client:
        yield client


def create_room(client: TestClient, user_token: str) -> str:
    response = client.post("/api/create-room", headers=auth(user_token), json={})
    assert response.status_code == 200, response.text
    return str(response.json()["room_code"])


def join_room(client: TestClient, user_token: str, code: str) -> dict[str, Any]:
    response = client.post("/api/join-room", headers=auth(user_token), json={"room_code": code})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def room_of_two(client: TestClient) -> str:
    """A room created by alice (interviewer) and joined by bob (candidate)."""
    code = create_room(client, token("alice"))
    join_room(client, token("bob"), code)
    return code


@contextlib.contextmanager
def connected(client: TestClient, code: str, user_token: str) -> Iterator[WebSocketTestSession]:
    """This user's socket in the room, past its room_state."""
    with client.websocket_connect(f"/ws/{code}?token={user_token}") as ws:
        recv_type(ws, "room_state")
        yield ws


def recv(ws: WebSocketTestSession) -> dict[str, Any]:
    frame: dict[str, Any] = ws.receive_json()
    return frame


def recv_type(ws: WebSocketTestSession, kind: str) -> dict[str, Any]:
    """The next frame of this type; frames of other types before it are skipped."""
    while True:
        frame = recv(ws)
        if frame["type"] == kind:
            return frame


def frames_until(ws: WebSocketTestSession, kind: str) -> list[dict[str, Any]]:
    """Every frame up to and including the next one of this type."""
    frames = [recv(ws)]
    while frames[-1]["type"] != kind:
        frames.append(recv(ws))
    return frames


def closed(ws: WebSocketTestSession) -> tuple[list[dict[str, Any]], int, str]:
    """Read until the server closes the socket: (the frames before the close, close code, reason)."""
    frames = []
    try:
        while True:
            frames.append(recv(ws))
    except WebSocketDisconnect as close:
        return frames, close.code, str(close.reason)


def refused(client: TestClient, path: str, **kwargs: Any) -> tuple[dict[str, Any], int, str]:
    """Open a socket the server refuses after accepting it: (its error frame, close code, reason)."""
    with client.websocket_connect(path, **kwargs) as ws:
        frames, code, reason = closed(ws)
    assert [f["type"] for f in frames] == ["error"], frames
    return frames[0], code, reason
