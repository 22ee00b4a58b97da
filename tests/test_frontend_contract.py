"""The existing frontend's contract, played against two real replicas in production mode.

The old "Safe Interviews" frontend (React + Vite, Supabase auth) talks to relay with only the two
changes security forces: the token on the WebSocket URL and `Authorization` on `GET /api/room/{code}`.
This test plays its exact sequence (create, join, room info, socket with token, whole-document edits
carrying their own `user_id` / `user_name`, the candidate page's monitoring frames, the interviewer's
alerts and monitoring panel, close) and asserts every field the frontend reads, with the type it
expects; the interviewer's page is on one replica and the candidate's on the other.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import jwt
import pytest

from tests.security_support import checkout_replica
from tests.support import Client, RedisServer, Replica

SECRET = "contract-test-supabase-jwt-secret-0123456789"
FRONTEND_ORIGIN = "http://localhost:5173"  # Vite's dev server, where the frontend runs
WELCOME = "# Welcome to the interview!\n# Write your solution below."


def supabase_token(user_id: str, name: str, email: str, **metadata: Any) -> str:
    """An access token shaped like Supabase's (HS256, legacy JWT secret)."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + 3600,
        "email": email,
        # The frontend's sign-up form stores the chosen role here, where every user can edit it.
        "user_metadata": {"name": name, **metadata},
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


class Page:
    """One browser tab of the frontend: its REST calls and its socket, with the headers a browser sends."""

    def __init__(self, replica: Replica, access_token: str) -> None:
        self.replica = replica
        self.token = access_token
        self.http = httpx.Client(base_url=replica.http, timeout=10, headers={"Origin": FRONTEND_ORIGIN})
        self.socket: Client | None = None

    def authorized(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def create_room(self) -> httpx.Response:
        return self.http.post("/api/create-room", headers=self.authorized(), json={})

    def join_room(self, code: str) -> httpx.Response:
        return self.http.post(
            "/api/join-room", headers=self.authorized(), json={"room_code": code.strip().upper()}
        )

    def room(self, code: str) -> httpx.Response:
        # Change 2 of 2: the frontend sends Authorization here (the old backend had no auth on it).
        return self.http.get(f"/api/room/{code}", headers=self.authorized())

    def close_room(self, code: str) -> httpx.Response:
        return self.http.delete(f"/api/room/{code}", headers=self.authorized())

    def monitoring(self, code: str) -> httpx.Response:
        return self.http.get(f"/api/room/{code}/monitoring", headers=self.authorized())

    def connect(self, code: str) -> dict[str, Any]:
        """Open the socket (change 1 of 2: ?token=) and return its first frame."""
        if self.socket is not None:
            self.socket.close()
        self.socket = Client(self.replica.ws, code, self.token, headers={"Origin": FRONTEND_ORIGIN})
        return self.socket.recv()

    @property
    def ws(self) -> Client:
        assert self.socket is not None
        return self.socket

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
        self.http.close()


def check(value: Any, shape: Any, where: str = "$") -> None:
    """`value` has `shape`: a type, a tuple of types, or a dict of field -> shape (extra fields allowed)."""
    if isinstance(shape, dict):
        assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
        for name, inner in shape.items():
            assert name in value, f"{where}: no field {name!r} in {sorted(value)}"
            check(value[name], inner, f"{where}.{name}")
        return
    assert isinstance(value, shape), f"{where}: expected {shape}, got {value!r}"
    assert not isinstance(value, bool) or shape is bool or (isinstance(shape, tuple) and bool in shape), where


PERSON = {"id": str, "name": str, "email": str}
ROOM = {"interviewer": PERSON, "candidate": (dict, type(None)), "status": str, "editor_content": str}


def browser_date(text: str) -> datetime:
    """What `new Date(text)` gives: ISO 8601 read as UTC only when it says so (the old backend did not)."""
    assert text.endswith("Z"), f"{text!r} has no zone: browsers would read it as local time"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def frames_until_pong(client: Client) -> list[dict[str, Any]]:
    client.send({"type": "ping"})
    got = []
    while (frame := client.recv()) != {"type": "pong"}:
        got.append(frame)
    return got


def error_detail(response: httpx.Response) -> str:
    """What the frontend shows on a non-2xx answer: the body's `detail`, a string."""
    assert response.status_code >= 400
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    return detail


@pytest.fixture(scope="module")
def pages_replicas(redis_server: RedisServer) -> Iterator[tuple[Replica, Replica]]:
    env = {
        "RELAY_DEV_MODE": "false",
        "REDIS_URL": redis_server.url,
        "SUPABASE_JWT_SECRET": SECRET,
        "RELAY_ALLOWED_ORIGINS": FRONTEND_ORIGIN,
        "RELAY_WELCOME_TEXT": WELCOME.replace("\n", "\\n"),
        "RELAY_TOKEN_GRACE": "3600",
    }
    a = checkout_replica(env, "contract-a").start()
    try:
        b = checkout_replica(env, "contract-b").start()
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


def test_the_frontend_sequence(pages_replicas: tuple[Replica, Replica]) -> None:
    """Every call and frame of the frontend, with every field it reads, across two replicas."""
    a, b = pages_replicas
    ivy_id, cam_id = str(uuid.uuid4()), str(uuid.uuid4())
    interviewer = Page(a, supabase_token(ivy_id, "Ivy", "ivy@example.test", role="interviewer"))
    # The candidate claims to be an interviewer in the metadata every user can edit: relay ignores it.
    candidate = Page(b, supabase_token(cam_id, "Cam", "cam@example.test", role="interviewer"))
    try:
        # A browser asks before sending Authorization cross-origin.
        preflight = interviewer.http.options(
            "/api/room/ABCDEF",
            headers={
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == FRONTEND_ORIGIN

        # Create: reads room_code.
        created = interviewer.create_room()
        assert created.status_code == 200
        check(created.json(), {"room_code": str})
        code = created.json()["room_code"]

        # The interviewer's room page: GET /api/room/{code}, then the socket.
        info = interviewer.room(code)
        assert info.status_code == 200
        room = info.json()
        check(room, ROOM)
        assert room["interviewer"] == {"id": ivy_id, "name": "Ivy", "email": "ivy@example.test"}
        assert room["candidate"] is None and room["status"] == "waiting_for_candidate"
        assert room["editor_content"] == WELCOME
        state = interviewer.connect(code)
        assert state["type"] == "room_state"
        check(state, {"room_info": ROOM})
        assert state["room_info"]["editor_content"] == WELCOME
        assert state["room_info"]["status"] == "waiting_for_candidate"

        # Join (the code as typed, lower case and padded: the frontend trims and upper-cases it).
        joined = candidate.join_room(f"  {code.lower()} ")
        assert joined.status_code == 200
        check(
            joined.json(), {"room_info": {"interviewer": PERSON, "candidate": PERSON, "editor_content": str}}
        )
        assert joined.json()["role"] == "candidate"

        # The candidate's room page, on the other replica.
        room = candidate.room(code).json()
        check(room, {**ROOM, "candidate": PERSON})
        assert room["candidate"] == {"id": cam_id, "name": "Cam", "email": "cam@example.test"}
        assert room["status"] == "active"
        state = candidate.connect(code)
        assert state["type"] == "room_state"
        check(state, {"room_info": {**ROOM, "candidate": PERSON}})

        # A whole-document edit carrying the sender's own user_id / user_name (forged here: relay stamps
        # the token's identity), as the frontend sends it on every change.
        document = "def solve(xs):\n    return sorted(xs)\n"
        candidate.ws.send(
            {
                "type": "editor_update",
                "content": document,
                "user_id": ivy_id,
                "user_name": "Not Cam",
                "cursor_position": 12,
            }
        )
        update = interviewer.ws.recv_type("editor_update")
        check(update, {"user_id": str, "content": str})
        assert update["user_id"] == cam_id and update["user_name"] == "Cam" and update["content"] == document
        assert candidate.ws.recv_type("ack")["seq"] == update["seq"]

        # cursor_update: user_id, user_name, cursor_position.
        interviewer.ws.send(
            {"type": "cursor_update", "user_id": ivy_id, "user_name": "Ivy", "cursor_position": 3}
        )
        cursor = candidate.ws.recv_type("cursor_update")
        check(cursor, {"user_id": str, "user_name": str, "cursor_position": int})
        assert cursor["user_id"] == ivy_id and cursor["cursor_position"] == 3

        # The frontend reopens its socket after every edit and repeats GET /api/room/{code}: both carry
        # the current document.
        assert interviewer.room(code).json()["editor_content"] == document
        state = interviewer.connect(code)
        check(state, {"room_info": ROOM})
        assert state["room_info"]["editor_content"] == document and state["room_info"]["status"] == "active"

        # The candidate page's monitoring: a focus loss on refocus, and every key press (debounced), each
        # with the page's own user_id / user_name; relay stamps the token's.
        candidate.ws.send(
            {"type": "window_focus_lost", "user_id": cam_id, "user_name": "Cam", "duration": 3.2}
        )
        for key, combination, suspicious in (("d", "d", False), ("v", "Ctrl+V", True), ("e", "e", False)):
            candidate.ws.send(
                {
                    "type": "keystroke_monitoring",
                    "user_id": cam_id,
                    "user_name": "Cam",
                    "key": key,
                    "key_combination": combination,
                    "is_suspicious": suspicious,
                }
            )
        alert_shape = {"alert_type": str, "message": str, "timestamp": str}
        focus = interviewer.ws.recv_type("candidate_monitoring_alert")
        check(focus, alert_shape)
        assert focus["alert_type"] == "window_focus_lost" and focus["user_id"] == cam_id
        suspicious_alert = interviewer.ws.recv_type("candidate_monitoring_alert")
        check(suspicious_alert, alert_shape)
        assert suspicious_alert["alert_type"] == "suspicious_keystroke"
        assert suspicious_alert["key_combination"] == "Ctrl+V"
        assert browser_date(focus["timestamp"]) <= browser_date(suspicious_alert["timestamp"])
        # The candidate's page never gets one (its queue is in order: the pong comes after any alert).
        assert all(f["type"] != "candidate_monitoring_alert" for f in frames_until_pong(candidate.ws))
        # The interviewer's monitoring panel.
        assert candidate.monitoring(code).status_code == 403
        panel = interviewer.monitoring(code)
        assert panel.status_code == 200
        check(panel.json(), {"monitoring_incidents": list, "total_keystrokes": int, "keystroke_logs": list})
        (incident,) = panel.json()["monitoring_incidents"]
        check(incident, {"type": str, "timestamp": str, "duration": (int, float)})
        browser_date(incident["timestamp"])
        assert incident["duration"] == 3.2
        assert panel.json()["total_keystrokes"] == 3
        (logged,) = panel.json()["keystroke_logs"]
        check(logged, {"is_suspicious": bool})
        assert logged["is_suspicious"] is True and logged["key_combination"] == "Ctrl+V"

        # A second candidate is refused with a detail the join page can show.
        third = Page(a, supabase_token(str(uuid.uuid4()), "Dee", "dee@example.test"))
        try:
            refused = third.join_room(code)
            assert refused.status_code == 409
            assert error_detail(refused).startswith("Room already has a candidate")
            # Someone who is not a member gets a detail too (and no emails).
            outsider = third.room(code)
            assert outsider.status_code == 403 and "example.test" not in outsider.text
            error_detail(outsider)
        finally:
            third.close()

        # Only the interviewer closes the room; every socket gets room_closed.
        assert candidate.close_room(code).status_code == 403
        assert interviewer.close_room(code).status_code == 200
        for page in (interviewer, candidate):
            assert page.ws.recv_type("room_closed")["type"] == "room_closed"
            assert page.ws.wait_closed()[0] == 4410
    finally:
        interviewer.close()
        candidate.close()
