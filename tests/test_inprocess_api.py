"""The REST API in process (fast tier): every endpoint's success shape and its refusals, each with the
HTTP status, the machine code and a message that says what to do (README, "HTTP API").

Run the tier alone with `python -m pytest -m fast`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.inprocess import create_room, join_room, relay_client, room_of_two
from tests.support import auth, token

pytestmark = [pytest.mark.fast, pytest.mark.timeout(60)]

CODE = re.compile(r"[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{6}")


def interviewer_token(user: str) -> str:
    """A token with development mode's default interviewer claim (app_metadata.role=interviewer)."""
    return token(user, app_metadata={"role": "interviewer"})


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # A room or more per test, mostly alice's: past the hourly limit of 20 she would be refused.
    with relay_client(RELAY_CREATE_LIMIT="1000") as test_client:
        yield test_client


def refusal(response: httpx.Response, status: int, code: str, *message_parts: str) -> dict[str, Any]:
    """The response is relay's JSON error with this status and code, and a message naming the parts."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "error" and body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    assert body["detail"] == body["message"], body  # the old frontend shows `detail`
    for part in message_parts:
        assert part in body["message"], body
    assert "Traceback" not in response.text
    return body


# ---------------------------------------------------------------------------------------- create-room


def test_create_room_answers_the_products_shape(client: TestClient) -> None:
    before = int(time.time() * 1000)
    response = client.post(
        "/api/create-room", headers=auth(token("cara")), json={"title": "Two sum", "language": "python"}
    )
    assert response.status_code == 200
    body = response.json()
    assert CODE.fullmatch(body["room_code"]), body
    assert body == {
        "status": "success",
        "message": "Room created successfully",
        "room_code": body["room_code"],
        "role": "interviewer",
        "created_at": body["created_at"],
        "title": "Two sum",
        "language": "python",
        "ws_path": f"/ws/{body['room_code']}",
    }
    assert before <= body["created_at"] <= int(time.time() * 1000)
    # An empty body is {}.
    assert client.post("/api/create-room", headers=auth(token("cara"))).status_code == 200


@pytest.mark.parametrize(
    ("headers", "code", "part"),
    [
        ({}, "unauthorized", ""),
        ({"Authorization": "Basic YWxpY2U6cHc="}, "unauthorized", "Bearer"),
        ({"Authorization": "Bearer not-a-jwt"}, "unauthorized", "JWT"),
        (auth(token("cara", secret="another-secret-of-at-least-32-bytes!")), "unauthorized", ""),
        (auth(token("cara", exp=int(time.time()) - 60)), "token_expired", ""),
    ],
    ids=["no token", "not bearer", "malformed", "bad signature", "expired"],
)
def test_every_endpoint_refuses_a_missing_or_bad_token_with_401(
    client: TestClient, headers: dict[str, str], code: str, part: str
) -> None:
    room = create_room(client, token("owner"))
    for method, path, body in (
        ("POST", "/api/create-room", {}),
        ("POST", "/api/join-room", {"room_code": room}),
        ("GET", f"/api/room/{room}", None),
        ("DELETE", f"/api/room/{room}", None),
        ("DELETE", f"/api/room/{room}/members/someone", None),
        ("GET", f"/api/room/{room}/monitoring", None),
    ):
        response = client.request(method, path, headers=headers, json=body)
        refusal(response, 401, code, part)


@pytest.mark.parametrize(
    ("body", "part"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"owner": "me"}', "unknown field(s) owner"),
        (b'{"title": 7}', "title must be a string"),
        (b'{"title": "' + b"x" * 201 + b'"}', "at most 200"),
        (b'{"language": "' + b"x" * 41 + b'"}', "at most 40"),
    ],
    ids=["not json", "array", "unknown field", "title not a string", "title too long", "language too long"],
)
def test_create_room_refuses_a_bad_body_with_422(client: TestClient, body: bytes, part: str) -> None:
    response = client.post(
        "/api/create-room",
        headers={**auth(token("cara")), "Content-Type": "application/json"},
        content=body,
    )
    refusal(response, 422, "bad_request", part)


def test_a_body_over_16_kib_is_refused_with_413(client: TestClient) -> None:
    response = client.post("/api/create-room", headers=auth(token("cara")), json={"title": "x" * (17 * 1024)})
    refusal(response, 413, "too_large", "16384 bytes")


def test_create_room_can_require_the_interviewer_claim() -> None:
    with relay_client(RELAY_CREATE_REQUIRES_INTERVIEWER="true") as client:
        refusal(
            client.post("/api/create-room", headers=auth(token("cara")), json={}),
            403,
            "forbidden",
            "interviewer claim",
        )
        allowed = client.post("/api/create-room", headers=auth(interviewer_token("ines")), json={})
        assert allowed.status_code == 200, allowed.text


def test_create_room_past_the_hourly_limit_is_429_with_retry_after() -> None:
    with relay_client(RELAY_CREATE_LIMIT="2") as client:
        for _ in range(2):
            create_room(client, token("cara"))
        response = client.post("/api/create-room", headers=auth(token("cara")), json={})
        refusal(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) > 0
        # The limit is per user.
        create_room(client, token("dora"))


# ------------------------------------------------------------------------------------------ join-room


def test_join_room_makes_a_candidate_and_a_second_join_keeps_the_first_role(client: TestClient) -> None:
    code = create_room(client, token("alice"))
    first = join_room(client, token("bob", name="Bob"), code.lower())  # codes are case-insensitive
    assert first == {
        "status": "success",
        "message": "Joined room successfully",
        "room_code": code,
        "role": "candidate",
        "ws_path": f"/ws/{code}",
        "room_info": {
            "interviewer": {"id": "alice", "name": "alice", "email": "alice@example.test"},
            "candidate": {"id": "bob", "name": "Bob", "email": "bob@example.test"},
            "editor_content": "",
        },
    }
    again = join_room(client, interviewer_token("bob"), code)
    assert again["message"] == "Already a member of this room" and again["role"] == "candidate"
    # The creator joining their own room is already its interviewer.
    assert join_room(client, token("alice"), code)["role"] == "interviewer"
    # A joiner with the interviewer claim is an interviewer.
    assert join_room(client, interviewer_token("ivy"), code)["role"] == "interviewer"


@pytest.mark.parametrize(
    ("body", "part"),
    [
        ({}, "room_code"),
        ({"room_code": "ABC"}, "6"),
        ({"room_code": "ABCDE0"}, ""),  # 0 is not in the code alphabet
        ({"room_code": 123456}, ""),
    ],
    ids=["missing", "short", "outside the alphabet", "not a string"],
)
def test_join_room_refuses_a_bad_code_with_422(client: TestClient, body: dict[str, Any], part: str) -> None:
    response = client.post("/api/join-room", headers=auth(token("bob")), json=body)
    refusal(response, 422, "bad_request", part)


def test_join_room_refusals_unknown_closed_full_removed(client: TestClient) -> None:
    refusal(
        client.post("/api/join-room", headers=auth(token("bob")), json={"room_code": "ZZZZZZ"}),
        404,
        "room_not_found",
    )
    closed = room_of_two(client)
    assert client.delete(f"/api/room/{closed}", headers=auth(token("alice"))).status_code == 200
    refusal(
        client.post("/api/join-room", headers=auth(token("carl")), json={"room_code": closed}),
        410,
        "room_closed",
    )
    removed = room_of_two(client)
    assert client.delete(f"/api/room/{removed}/members/bob", headers=auth(token("alice"))).status_code == 200
    refusal(
        client.post("/api/join-room", headers=auth(token("bob")), json={"room_code": removed}),
        403,
        "member_removed",
    )


def test_a_second_candidate_is_refused_with_409_and_interviewers_may_still_join(client: TestClient) -> None:
    code = room_of_two(client)
    refusal(
        client.post("/api/join-room", headers=auth(token("carl")), json={"room_code": code}),
        409,
        "candidate_taken",
        "Room already has a candidate",
    )
    assert join_room(client, interviewer_token("ivy"), code)["role"] == "interviewer"
    # Removing the candidate frees the seat.
    assert client.delete(f"/api/room/{code}/members/bob", headers=auth(token("alice"))).status_code == 200
    assert join_room(client, token("carl"), code)["role"] == "candidate"


def test_a_full_room_refuses_a_new_member_with_409() -> None:
    with relay_client(RELAY_MAX_MEMBERS="2") as client:
        code = room_of_two(client)
        refusal(
            client.post("/api/join-room", headers=auth(interviewer_token("ivy")), json={"room_code": code}),
            409,
            "room_full",
        )
        # Members already in it can still join again.
        assert join_room(client, token("bob"), code)["message"] == "Already a member of this room"


def test_guessing_codes_is_rate_limited_with_429() -> None:
    with relay_client(RELAY_JOIN_FAILURE_LIMIT="2") as client:
        for _ in range(2):
            response = client.post("/api/join-room", headers=auth(token("eve")), json={"room_code": "ZZZZZZ"})
            refusal(response, 404, "room_not_found")
        code = create_room(client, token("alice"))
        response = client.post("/api/join-room", headers=auth(token("eve")), json={"room_code": code})
        refusal(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) > 0


# ------------------------------------------------------------------------------------- GET /api/room


def test_get_room_shows_members_to_members(client: TestClient) -> None:
    code = create_room(client, token("alice"))
    waiting = client.get(f"/api/room/{code}", headers=auth(token("alice"))).json()
    assert (waiting["status"], waiting["candidate"]) == ("waiting_for_candidate", None)
    join_room(client, token("bob"), code)
    response = client.get(f"/api/room/{code}", headers=auth(token("bob")))
    assert response.status_code == 200, response.text
    body = response.json()
    # `status` in the old backend's words; relay's own view is room_status.
    assert body["status"] == "active" and body["room_code"] == code and body["room_status"] == "open"
    assert body["created_by"] == "alice" and body["seq"] == 0 and body["editor_content"] == ""
    assert body["interviewer"]["id"] == "alice" and body["candidate"]["id"] == "bob"
    members = {m["user_id"]: m for m in body["members"]}
    assert {uid: (m["role"], m["connected"]) for uid, m in members.items()} == {
        "alice": ("interviewer", False),
        "bob": ("candidate", False),
    }
    assert set(members["alice"]) == {"user_id", "user_name", "role", "joined_at", "connected"}


def test_get_room_refusals(client: TestClient) -> None:
    code = room_of_two(client)
    refusal(client.get(f"/api/room/{code}", headers=auth(token("mallory"))), 403, "forbidden", "join")
    refusal(client.get("/api/room/ZZZZZZ", headers=auth(token("bob"))), 404, "room_not_found")
    refusal(client.get("/api/room/nope", headers=auth(token("bob"))), 422, "bad_request")


# ---------------------------------------------------------------------------------- DELETE /api/room


def test_the_interviewer_closes_a_room_once(client: TestClient) -> None:
    code = room_of_two(client)
    refusal(client.delete(f"/api/room/{code}", headers=auth(token("bob"))), 403, "forbidden", "interviewer")
    refusal(client.delete(f"/api/room/{code}", headers=auth(token("mallory"))), 403, "not_member")
    response = client.delete(f"/api/room/{code}", headers=auth(token("alice")))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success", "message": "Room closed", "room_code": code, "seq": 1}
    refusal(client.delete(f"/api/room/{code}", headers=auth(token("alice"))), 410, "room_closed")
    state = client.get(f"/api/room/{code}", headers=auth(token("alice"))).json()
    assert (state["room_status"], state["status"]) == ("closed", "closed")
    refusal(client.delete("/api/room/ZZZZZZ", headers=auth(token("alice"))), 404, "room_not_found")


# ------------------------------------------------------------------------ DELETE /api/room/…/members


def test_the_interviewer_removes_a_member(client: TestClient) -> None:
    code = room_of_two(client)
    path = f"/api/room/{code}/members"
    refusal(client.delete(f"{path}/alice", headers=auth(token("bob"))), 403, "forbidden", "interviewer")
    refusal(client.delete(f"{path}/alice", headers=auth(token("alice"))), 403, "forbidden", "close the room")
    refusal(client.delete(f"{path}/nobody", headers=auth(token("alice"))), 404, "member_not_found")
    response = client.delete(f"{path}/bob", headers=auth(token("alice")))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "success",
        "message": "Member removed",
        "room_code": code,
        "user_id": "bob",
    }
    members = client.get(f"/api/room/{code}", headers=auth(token("alice"))).json()["members"]
    assert [m["user_id"] for m in members] == ["alice"]
    assert client.delete(f"/api/room/{code}", headers=auth(token("alice"))).status_code == 200
    refusal(client.delete(f"{path}/bob", headers=auth(token("alice"))), 410, "room_closed")


# ------------------------------------------------------------------------ GET /api/room/…/monitoring


def test_monitoring_is_for_the_rooms_interviewers(client: TestClient) -> None:
    code = room_of_two(client)
    response = client.get(f"/api/room/{code}/monitoring", headers=auth(token("alice")))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["room_code"] == code
    assert (body["monitoring_incidents"], body["keystroke_logs"]) == ([], [])
    assert (body["total_incidents"], body["total_keystrokes"], body["total_suspicious_keystrokes"]) == (
        0,
        0,
        0,
    )
    refusal(client.get(f"/api/room/{code}/monitoring", headers=auth(token("bob"))), 403, "forbidden")
    refusal(client.get(f"/api/room/{code}/monitoring", headers=auth(token("mallory"))), 403, "forbidden")
    refusal(client.get("/api/room/ZZZZZZ/monitoring", headers=auth(token("alice"))), 404, "room_not_found")
    refusal(client.get("/api/room/nope/monitoring", headers=auth(token("alice"))), 422, "bad_request")
    # Still readable once the room is closed.
    assert client.delete(f"/api/room/{code}", headers=auth(token("alice"))).status_code == 200
    assert client.get(f"/api/room/{code}/monitoring", headers=auth(token("alice"))).status_code == 200


# --------------------------------------------------------------------------- probes and unknown paths


def test_probes_answer_on_the_embedded_store(client: TestClient) -> None:
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = client.get("/api/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text


def test_unknown_paths_and_methods_get_json_errors(client: TestClient) -> None:
    refusal(client.get("/api/nothing-here"), 404, "not_found")
    refusal(client.put("/api/create-room"), 405, "method_not_allowed")
