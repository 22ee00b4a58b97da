"""Two relay replicas as separate uvicorn processes sharing one real redis-server."""

from __future__ import annotations

import httpx

from tests.support import Client, Replica, auth, create_room, join_room, open_refused, token


def _room_with_two(replicas: list[Replica]) -> tuple[str, str, str]:
    alice, bob = token("alice", name="Alice"), token("bob", name="Bob")
    code = create_room(replicas[0].http, alice)
    join_room(replicas[1].http, bob, code)
    return code, alice, bob


def test_edit_on_one_replica_reaches_member_on_the_other(two_replicas: list[Replica]) -> None:
    """An edit sent through replica B reaches A attributed from the token, not from the frame."""
    a, b = two_replicas
    code, alice, bob = _room_with_two(two_replicas)
    interviewer = Client(a.ws, code, alice)
    state = interviewer.recv_type("room_state")
    assert state["content"] == "" and state["seq"] == 0
    candidate = Client(b.ws, code, bob)
    candidate.recv_type("room_state")

    candidate.send(
        {
            "type": "editor_update",
            "content": "print('hi')",
            "cursor_position": {"lineNumber": 1},
            "user_id": "alice",
            "user_name": "Mallory",
            "client_msg_id": "m1",
        }
    )
    ack = candidate.recv_type("ack")
    assert ack == {"type": "ack", "seq": 1, "client_msg_id": "m1"}
    edit = interviewer.recv_type("editor_update")
    assert edit["seq"] == 1
    assert edit["user_id"] == "bob" and edit["user_name"] == "Bob"
    assert edit["content"] == "print('hi')" and edit["cursor_position"] == {"lineNumber": 1}

    interviewer.send({"type": "cursor_update", "cursor_position": {"lineNumber": 3, "column": 7}})
    cursor = candidate.recv_type("cursor_update")
    assert cursor["user_id"] == "alice" and cursor["cursor_position"] == {"lineNumber": 3, "column": 7}
    assert "seq" not in cursor
    interviewer.close()
    candidate.close()


def test_sender_gets_ack_not_echo_and_other_tabs_get_the_event(two_replicas: list[Replica]) -> None:
    """The sending socket gets an ack; the same user's second tab (on another replica) gets the edit."""
    a, b = two_replicas
    code, alice, _ = _room_with_two(two_replicas)
    tab1 = Client(a.ws, code, alice)
    tab1.recv_type("room_state")
    tab2 = Client(b.ws, code, alice)
    tab2.recv_type("room_state")
    tab1.send({"type": "editor_update", "content": "x = 1"})
    assert tab1.recv_type("ack")["seq"] == 1
    assert tab2.recv_type("editor_update")["content"] == "x = 1"
    assert all(f.get("type") != "editor_update" for f in tab1.drain())
    tab1.close()
    tab2.close()


def test_late_joiner_gets_current_document_and_cursors(two_replicas: list[Replica]) -> None:
    """A member who connects after edits gets the latest document, seq and cursors in room_state."""
    a, b = two_replicas
    code, alice, bob = _room_with_two(two_replicas)
    writer = Client(a.ws, code, alice)
    writer.recv_type("room_state")
    for n in range(1, 6):
        writer.send({"type": "editor_update", "content": f"v{n}", "cursor_position": {"lineNumber": n}})
        assert writer.recv_type("ack")["seq"] == n
    late = Client(b.ws, code, bob)
    state = late.recv_type("room_state")
    assert state["content"] == "v5" and state["seq"] == 5 and state["resumed"] is False
    assert state["cursors"] == {"alice": {"lineNumber": 5}}
    assert {m["user_id"]: m["connected"] for m in state["members"]} == {"alice": True, "bob": True}
    assert state["you"]["role"] == "candidate"
    writer.close()
    late.close()


def test_presence_crosses_replicas_and_two_tabs_are_one_member(two_replicas: list[Replica]) -> None:
    """member_joined / member_left cross replicas; a user's second tab neither joins nor leaves."""
    a, b = two_replicas
    code, alice, bob = _room_with_two(two_replicas)
    watcher = Client(a.ws, code, alice)
    watcher.recv_type("room_state")
    tab1 = Client(b.ws, code, bob)
    joined = watcher.recv_type("member_joined")
    assert joined["user_id"] == "bob" and joined["user_name"] == "Bob" and joined["role"] == "candidate"
    tab2 = Client(a.ws, code, bob)
    tab2.recv_type("room_state")
    tab1.close()
    assert all(f.get("type") not in ("member_joined", "member_left") for f in watcher.drain(0.5))
    tab2.close()
    left = watcher.recv_type("member_left")
    assert left["user_id"] == "bob"
    info = httpx.get(f"{b.http}/api/room/{code}", headers=auth(alice), timeout=5).json()
    assert {m["user_id"]: m["connected"] for m in info["members"]} == {"alice": True, "bob": False}
    watcher.close()


def test_closing_the_room_ends_every_socket_on_both_replicas(two_replicas: list[Replica]) -> None:
    """DELETE /api/room closes every socket of the room on every replica with room_closed + 4410."""
    a, b = two_replicas
    code, alice, bob = _room_with_two(two_replicas)
    sockets = [Client(a.ws, code, alice), Client(b.ws, code, bob), Client(b.ws, code, alice)]
    for client in sockets:
        client.recv_type("room_state")
    response = httpx.delete(f"{b.http}/api/room/{code}", headers=auth(alice), timeout=5)
    assert response.status_code == 200, response.text
    for client in sockets:
        closed = client.recv_type("room_closed")
        assert closed["room_code"] == code and closed["seq"] >= 1
        close_code, _ = client.wait_closed()
        assert close_code == 4410
    assert (
        httpx.post(
            f"{a.http}/api/join-room", headers=auth(token("carol")), json={"room_code": code}, timeout=5
        ).status_code
        == 410
    )
    assert open_refused(b.ws, code, f"?token={bob}")[0] == 4410


def test_non_member_socket_is_refused(two_replicas: list[Replica]) -> None:
    """A valid user who has not joined gets close 4403 with a reason naming what to do."""
    a, _ = two_replicas
    code, _, _ = _room_with_two(two_replicas)
    close_code, reason = open_refused(a.ws, code, f"?token={token('mallory')}")
    assert close_code == 4403
    assert reason is not None and "join" in reason


def test_socket_refusals_have_clear_close_codes(two_replicas: list[Replica]) -> None:
    """Unknown room 4404, bad code 4400, no token 4401, bad token 4401, unparsable last_seq 4400."""
    a, _ = two_replicas
    code, alice, _ = _room_with_two(two_replicas)
    assert open_refused(a.ws, "ZZZZZZ", f"?token={alice}")[0] == 4404
    assert open_refused(a.ws, "bad!", f"?token={alice}")[0] == 4400
    assert open_refused(a.ws, code)[0] == 4401
    assert open_refused(a.ws, code, "?token=not.a.jwt")[0] == 4401
    assert open_refused(a.ws, code, f"?token={alice}&last_seq=-1")[0] == 4400
