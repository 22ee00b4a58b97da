"""The WebSocket protocol in process (fast tier): handshake refusals and their close codes, the edit
round trip with its ack, cursors, ping/pong, resume, and bad frames answered with error frames while
the socket stays open (README, "WebSocket protocol").

Run the tier alone with `python -m pytest -m fast`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from tests.inprocess import (
    closed,
    connected,
    frames_until,
    join_room,
    recv,
    recv_type,
    refused,
    relay_client,
    room_of_two,
)
from tests.support import auth, token

# A frame that never comes would block forever: the timeout turns that into a failure.
pytestmark = [pytest.mark.fast, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # alice creates a room per test: past the hourly limit of 20 she would be refused. Some tests add a
    # second candidate (carl) to a room.
    with relay_client(RELAY_CREATE_LIMIT="1000", RELAY_MAX_CANDIDATES="3") as test_client:
        yield test_client


def still_open(ws: WebSocketTestSession) -> None:
    """The socket still answers: a ping gets its pong (frames queued before it are skipped)."""
    ws.send_json({"type": "ping"})
    recv_type(ws, "pong")


# ------------------------------------------------------------------------------------------ handshake


def test_first_frame_is_the_room_state(client: TestClient) -> None:
    code = room_of_two(client)
    with client.websocket_connect(f"/ws/{code}?token={token('bob', name='Bob')}") as ws:
        state = recv(ws)
    assert state["type"] == "room_state" and state["room_code"] == code and state["seq"] == 0
    assert state["resumed"] is False and state["content"] == ""
    assert state["you"]["user_id"] == "bob" and state["you"]["user_name"] == "Bob"
    assert state["you"]["role"] == "candidate" and state["you"]["connection_id"]
    assert {m["user_id"]: m["role"] for m in state["members"]} == {"alice": "interviewer", "bob": "candidate"}
    assert state["cursors"] == {}
    # The old frontend's room object, on full room_state frames.
    assert state["room_info"]["candidate"]["id"] == "bob" and state["room_info"]["status"] == "active"


def test_the_token_may_come_in_the_authorization_header(client: TestClient) -> None:
    code = room_of_two(client)
    with client.websocket_connect(f"/ws/{code}", headers=auth(token("alice"))) as ws:
        assert recv(ws)["type"] == "room_state"


@pytest.mark.parametrize(
    ("query", "close_code", "error_code"),
    [
        ("", 4401, "unauthorized"),
        ("?token=not-a-jwt", 4401, "unauthorized"),
        (f"?token={token('bob', exp=int(time.time()) - 60)}", 4401, "token_expired"),
        (f"?token={token('bob', secret='another-secret-of-at-least-32-bytes!')}", 4401, "unauthorized"),
        (f"?token={token('mallory')}", 4403, "not_member"),
        (f"?token={token('bob')}&last_seq=-1", 4400, "bad_request"),
        (f"?token={token('bob')}&last_seq=abc", 4400, "bad_request"),
    ],
    ids=["no token", "malformed token", "expired token", "bad signature", "not a member", "negative", "nan"],
)
def test_handshake_refusals_send_an_error_frame_then_close_with_the_code(
    client: TestClient, query: str, close_code: int, error_code: str
) -> None:
    code = room_of_two(client)
    error, got_code, reason = refused(client, f"/ws/{code}{query}")
    assert (got_code, error["code"]) == (close_code, error_code), error
    assert error["message"] and reason and reason in error["message"]


def test_room_code_refusals(client: TestClient) -> None:
    error, code, _ = refused(client, f"/ws/nope?token={token('bob')}")
    assert (code, error["code"]) == (4400, "bad_request")
    error, code, _ = refused(client, f"/ws/ZZZZZZ?token={token('bob')}")
    assert (code, error["code"]) == (4404, "room_not_found")


def test_closed_room_and_removed_member_are_refused(client: TestClient) -> None:
    """Like every handshake refusal, an error frame first (these two once closed without one)."""
    code = room_of_two(client)
    join_room(client, token("carl"), code)
    assert client.delete(f"/api/room/{code}/members/carl", headers=auth(token("alice"))).status_code == 200
    error, close_code, _ = refused(client, f"/ws/{code}?token={token('carl')}")
    assert (close_code, error["code"]) == (4403, "member_removed")
    assert client.delete(f"/api/room/{code}", headers=auth(token("alice"))).status_code == 200
    error, close_code, _ = refused(client, f"/ws/{code}?token={token('bob')}")
    assert (close_code, error["code"]) == (4410, "room_closed")


def test_too_many_sockets_of_one_user_are_refused_with_4429() -> None:
    with relay_client(RELAY_MAX_CONNECTIONS_PER_USER="1") as client:
        code = room_of_two(client)
        with connected(client, code, token("bob")) as first:
            error, close_code, _ = refused(client, f"/ws/{code}?token={token('bob')}")
            assert (close_code, error["code"]) == (4429, "rate_limited")
            still_open(first)


def test_a_refused_origin_gets_http_403_before_the_upgrade() -> None:
    with relay_client(RELAY_ALLOWED_ORIGINS="https://app.example.com") as client:
        code = room_of_two(client)
        path = f"/ws/{code}?token={token('bob')}"
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            client.websocket_connect(path, headers={"Origin": "https://evil.example.com"}),
        ):
            pass
        assert denied.value.status_code == 403
        assert denied.value.json()["code"] == "origin_not_allowed"
        with client.websocket_connect(path, headers={"Origin": "https://app.example.com"}) as ws:
            assert recv(ws)["type"] == "room_state"


# ------------------------------------------------------------------------------------ edits, cursors


def test_an_edit_is_acknowledged_to_its_sender_and_relayed_to_the_others(client: TestClient) -> None:
    code = room_of_two(client)
    with (
        connected(client, code, token("alice", name="Alice")) as alice,
        connected(client, code, token("bob")) as bob,
    ):
        alice.send_json(
            {
                "type": "editor_update",
                "content": "print('hi')",
                "cursor_position": {"lineNumber": 1, "column": 12},
                "client_msg_id": "m-1",
                "user_id": "mallory",  # ignored: identity comes from the token
                "user_name": "Mallory",
            }
        )
        ack = recv_type(alice, "ack")
        assert ack == {"type": "ack", "seq": 1, "client_msg_id": "m-1"}
        event = recv_type(bob, "editor_update")
        assert event["seq"] == 1 and event["content"] == "print('hi')"
        assert (event["user_id"], event["user_name"]) == ("alice", "Alice")
        assert event["cursor_position"] == {"lineNumber": 1, "column": 12}
        assert event["client_msg_id"] == "m-1" and isinstance(event["ts"], int)

        # Resending an accepted edit is confirmed, not applied twice.
        alice.send_json({"type": "editor_update", "content": "print('hi')", "client_msg_id": "m-1"})
        assert recv_type(alice, "ack") == {"type": "ack", "seq": 1, "client_msg_id": "m-1", "duplicate": True}

        # The sender never gets its own edit back: bob's next edit reaches alice as the first
        # editor_update she sees.
        bob.send_json({"type": "editor_update", "content": "print('bye')"})
        assert recv_type(bob, "ack")["seq"] == 2
        event = recv_type(alice, "editor_update")
        assert (event["seq"], event["user_id"]) == (2, "bob")

    state = client.get(f"/api/room/{code}", headers=auth(token("alice"))).json()
    assert state["seq"] == 2


def test_cursors_reach_the_others_unsequenced_and_late_joiners_see_the_latest(client: TestClient) -> None:
    code = room_of_two(client)
    with (
        connected(client, code, token("alice")) as alice,
        connected(client, code, token("bob")) as bob,
    ):
        alice.send_json({"type": "cursor_update", "cursor_position": {"lineNumber": 3, "column": 1}})
        cursor = recv_type(bob, "cursor_update")
        assert cursor["user_id"] == "alice" and cursor["cursor_position"] == {"lineNumber": 3, "column": 1}
        assert "seq" not in cursor
        alice.send_json({"type": "cursor_update", "cursor_position": {"lineNumber": 4, "column": 2}})
        recv_type(bob, "cursor_update")
        # One channel, one order: bob's edit published after alice's cursors reaches alice after any
        # echo of them would have; none came.
        bob.send_json({"type": "editor_update", "content": "x"})
        before_edit = frames_until(alice, "editor_update")
        assert not [f for f in before_edit if f["type"] == "cursor_update"], before_edit
        join_room(client, token("carl"), code)
        with client.websocket_connect(f"/ws/{code}?token={token('carl')}") as carl:
            state = recv_type(carl, "room_state")
        assert state["cursors"] == {"alice": {"lineNumber": 4, "column": 2}}


def test_member_joined_and_left_follow_the_first_and_last_socket(client: TestClient) -> None:
    code = room_of_two(client)
    with connected(client, code, token("alice")) as alice:
        with connected(client, code, token("bob")) as bob:
            joined = recv_type(alice, "member_joined")
            assert (joined["user_id"], joined["role"]) == ("bob", "candidate")
            # Closed from the client side while the session lives: leaving the `with` block would also
            # cancel the server's handler (TestClient does), which uvicorn never does to a closed socket.
            bob.close()
            left = recv_type(alice, "member_left")
        assert left["user_id"] == "bob"


def test_a_candidates_focus_loss_alerts_the_interviewer_and_an_interviewers_is_refused(
    client: TestClient,
) -> None:
    code = room_of_two(client)
    with connected(client, code, token("alice")) as alice, connected(client, code, token("bob")) as bob:
        bob.send_json({"type": "window_focus_lost", "duration": 4})
        alert = recv_type(alice, "candidate_monitoring_alert")
        assert (alert["alert_type"], alert["user_id"], alert["duration"]) == ("window_focus_lost", "bob", 4)
        alice.send_json({"type": "window_focus_lost", "duration": 1})
        refused = recv_type(alice, "error")
        assert refused["code"] == "forbidden" and "candidate" in refused["message"]
        still_open(alice)
        bob.send_json({"type": "window_focus_lost", "duration": "long"})
        assert recv_type(bob, "error")["code"] == "bad_frame"
        still_open(bob)
    report = client.get(f"/api/room/{code}/monitoring", headers=auth(token("alice"))).json()
    assert [(i["user_id"], i["duration"]) for i in report["monitoring_incidents"]] == [("bob", 4)]


def test_ping_gets_pong(client: TestClient) -> None:
    code = room_of_two(client)
    with connected(client, code, token("bob")) as ws:
        ws.send_json({"type": "ping"})
        assert recv_type(ws, "pong") == {"type": "pong"}


def test_refresh_token_extends_the_socket_and_another_users_token_closes_it(client: TestClient) -> None:
    code = room_of_two(client)
    with connected(client, code, token("bob")) as ws:
        expires_at = int(time.time()) + 7200
        ws.send_json({"type": "refresh_token", "token": token("bob", exp=expires_at)})
        assert recv_type(ws, "token_refreshed")["expires_at"] == expires_at
        ws.send_json({"type": "refresh_token", "token": token("alice")})
        frames, close_code, _ = closed(ws)
    assert close_code == 4401
    assert [f["code"] for f in frames if f["type"] == "error"] == ["unauthorized"]


# ------------------------------------------------------------------------------------------ bad frames


@pytest.mark.parametrize(
    ("frame", "code", "part"),
    [
        ("{not json", "bad_frame", "not valid JSON"),
        ("[1, 2]", "bad_frame", "JSON object"),
        ('{"content": "x"}', "bad_frame", "type"),
        ('{"type": "shout"}', "bad_frame", "unknown frame type"),
        ('{"type": "editor_update"}', "bad_frame", "content"),
        ('{"type": "editor_update", "content": "x", "client_msg_id": "no spaces"}', "bad_frame", ""),
        ('{"type": "cursor_update"}', "bad_frame", "cursor_position"),
        ('{"type": "cursor_update", "cursor_position": "here"}', "bad_frame", "cursor_position"),
        ('{"type": "refresh_token", "token": ""}', "bad_frame", "token"),
    ],
    ids=[
        "not json",
        "array",
        "no type",
        "unknown type",
        "edit without content",
        "bad client_msg_id",
        "cursor without position",
        "cursor a string",
        "empty refresh token",
    ],
)
def test_a_bad_frame_gets_an_error_frame_and_the_socket_stays_open(
    client: TestClient, frame: str, code: str, part: str
) -> None:
    room = room_of_two(client)
    with connected(client, room, token("bob")) as ws:
        ws.send_text(frame)
        error = recv_type(ws, "error")
        assert error["code"] == code and part in error["message"], error
        still_open(ws)
        ws.send_json({"type": "editor_update", "content": "still here", "client_msg_id": "after"})
        assert recv_type(ws, "ack")["client_msg_id"] == "after"


def test_a_binary_frame_gets_an_error_frame_and_the_socket_stays_open(client: TestClient) -> None:
    room = room_of_two(client)
    with connected(client, room, token("bob")) as ws:
        ws.send_bytes(b'{"type": "ping"}')
        error = recv_type(ws, "error")
        assert error["code"] == "bad_frame" and "text" in error["message"]
        still_open(ws)


def test_a_document_over_the_limit_is_refused_and_the_socket_stays_open() -> None:
    with relay_client(RELAY_MAX_DOCUMENT_BYTES="100") as client:
        room = room_of_two(client)
        with connected(client, room, token("bob")) as ws:
            ws.send_json({"type": "editor_update", "content": "x" * 101, "client_msg_id": "big"})
            error = recv_type(ws, "error")
            assert error["code"] == "too_large" and "100" in error["message"]
            still_open(ws)


def test_a_frame_over_the_frame_limit_closes_with_1009() -> None:
    with relay_client(RELAY_MAX_FRAME_BYTES="1024", RELAY_MAX_DOCUMENT_BYTES="500") as client:
        room = room_of_two(client)
        with connected(client, room, token("bob")) as ws:
            ws.send_json({"type": "editor_update", "content": "x" * 2000})
            frames, close_code, _ = closed(ws)
        assert close_code == 1009
        assert [f["code"] for f in frames if f["type"] == "error"] == ["too_large"]


# ---------------------------------------------------------------------------------- resume, closing


def test_resume_with_last_seq_replays_exactly_what_was_missed(client: TestClient) -> None:
    code = room_of_two(client)
    with connected(client, code, token("alice")) as alice:
        for n in range(1, 5):
            alice.send_json({"type": "editor_update", "content": f"v{n}"})
            assert recv_type(alice, "ack")["seq"] == n
    with client.websocket_connect(f"/ws/{code}?token={token('bob')}&last_seq=2") as bob:
        state = recv(bob)
        assert state["type"] == "room_state" and state["resumed"] is True and state["replayed"] == 2
        assert "content" not in state
        replayed = [recv(bob), recv(bob)]
        assert [(f["type"], f["seq"], f["content"]) for f in replayed] == [
            ("editor_update", 3, "v3"),
            ("editor_update", 4, "v4"),
        ]
    with client.websocket_connect(f"/ws/{code}?token={token('bob')}&last_seq=99") as bob:
        error = recv(bob)
        assert (error["type"], error["code"]) == ("error", "resume_invalid")
        state = recv(bob)
        assert state["type"] == "room_state" and state["resumed"] is False
        assert state["reason"] == "resume_invalid" and state["content"] == "v4" and state["seq"] == 4


def test_closing_the_room_sends_room_closed_then_4410(client: TestClient) -> None:
    code = room_of_two(client)
    with connected(client, code, token("bob")) as bob:
        assert client.delete(f"/api/room/{code}", headers=auth(token("alice"))).status_code == 200
        frames, close_code, _ = closed(bob)
    assert close_code == 4410
    closing = [f for f in frames if f["type"] == "room_closed"]
    assert len(closing) == 1 and closing[0]["room_code"] == code and closing[0]["seq"] == 1


def test_removing_a_member_sends_member_removed_then_4403(client: TestClient) -> None:
    code = room_of_two(client)
    with connected(client, code, token("bob")) as bob:
        response = client.delete(f"/api/room/{code}/members/bob", headers=auth(token("alice")))
        assert response.status_code == 200
        frames, close_code, _ = closed(bob)
    assert close_code == 4403
    assert [f["user_id"] for f in frames if f["type"] == "member_removed"] == ["bob"]


def test_a_websocket_elsewhere_than_ws_room_is_closed_before_the_upgrade(client: TestClient) -> None:
    """Closed before it is accepted (uvicorn answers that with a plain HTTP 403)."""
    with pytest.raises(WebSocketDisconnect), client.websocket_connect(f"/elsewhere?token={token('alice')}"):
        pass
