"""The REST API's success and refusal paths, against a replica process and a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import RedisServer, Replica, auth, create_room, token


@pytest.fixture(scope="module")
def replica(redis_server: RedisServer) -> Iterator[Replica]:
    started = Replica(
        {
            "REDIS_URL": redis_server.url,
            "RELAY_INTERVIEWER_CLAIM": "app_metadata.role=interviewer",
        },
        name="api",
    ).start()
    yield started
    started.stop()


def post(replica: Replica, path: str, user_token: str | None, **kwargs: object) -> httpx.Response:
    headers = auth(user_token) if user_token else {}
    return httpx.post(replica.http + path, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_create_room_returns_the_old_shape(replica: Replica) -> None:
    """create-room answers room_code / status / message like the product it replaces; creator is interviewer."""
    response = post(replica, "/api/create-room", token("ann"), json={})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success" and body["message"] == "Room created successfully"
    assert len(body["room_code"]) == 6 and body["role"] == "interviewer"
    assert set(body["room_code"]) <= set("ABCDEFGHJKMNPQRSTUVWXYZ23456789")


def test_create_room_accepts_no_body_and_optional_settings(replica: Replica) -> None:
    assert post(replica, "/api/create-room", token("ann")).status_code == 200
    body = post(
        replica, "/api/create-room", token("ann"), json={"title": "Backend", "language": "python"}
    ).json()
    info = httpx.get(
        f"{replica.http}/api/room/{body['room_code']}", headers=auth(token("ann")), timeout=10
    ).json()
    assert info["title"] == "Backend" and info["language"] == "python"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"titel": "typo"}', "unknown field"),
        (b'{"title": 5}', "title must be a string"),
        (b'{"language": "' + b"x" * 41 + b'"}', "at most 40"),
    ],
)
def test_create_room_bad_bodies_get_422(replica: Replica, body: bytes, needle: str) -> None:
    response = post(replica, "/api/create-room", token("ann"), content=body)
    assert response.status_code == 422
    assert response.json()["code"] == "bad_request" and needle in response.json()["message"]


def test_oversized_body_gets_413(replica: Replica) -> None:
    response = post(replica, "/api/create-room", token("ann"), content=b'{"title": "' + b"x" * 20000 + b'"}')
    assert response.status_code == 413


def test_join_room_paths(replica: Replica) -> None:
    """Join: candidate by default, twice is harmless, lowercase codes work, bad shapes are 422."""
    code = create_room(replica.http, token("ann"))
    first = post(replica, "/api/join-room", token("cid"), json={"room_code": code})
    assert first.status_code == 200 and first.json()["role"] == "candidate"
    again = post(replica, "/api/join-room", token("cid"), json={"room_code": code.lower()})
    assert again.status_code == 200 and again.json()["role"] == "candidate"
    assert again.json()["message"] == "Already a member of this room"
    # The creator joining their own room stays interviewer.
    assert (
        post(replica, "/api/join-room", token("ann"), json={"room_code": code}).json()["role"]
        == "interviewer"
    )
    for bad in (
        {},
        {"room_code": 123},
        {"room_code": "ABC"},
        {"room_code": "ABCDE0"},
        {"room_code": "relay:{X}"},
        {"room_code": "ABC12\u0000"},
    ):
        response = post(replica, "/api/join-room", token("cid"), json=bad)
        assert response.status_code == 422, bad
    unknown = post(replica, "/api/join-room", token("cid"), json={"room_code": "ZZZZZZ"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "room_not_found"


def test_interviewer_claim_makes_joiner_an_interviewer(replica: Replica) -> None:
    code = create_room(replica.http, token("ann"))
    colleague = token("ivy", app_metadata={"role": "interviewer"})
    assert (
        post(replica, "/api/join-room", colleague, json={"room_code": code}).json()["role"] == "interviewer"
    )


def test_get_room_is_for_members_only(replica: Replica) -> None:
    code = create_room(replica.http, token("ann"))
    post(replica, "/api/join-room", token("cid"), json={"room_code": code})
    info = httpx.get(f"{replica.http}/api/room/{code}", headers=auth(token("cid")), timeout=10)
    assert info.status_code == 200
    body = info.json()
    assert body["room_status"] == "open" and body["created_by"] == "ann" and body["created_at"] > 0
    assert [(m["user_id"], m["role"], m["connected"]) for m in body["members"]] == [
        ("ann", "interviewer", False),
        ("cid", "candidate", False),
    ]
    outsider = httpx.get(f"{replica.http}/api/room/{code}", headers=auth(token("eve")), timeout=10)
    assert outsider.status_code == 403
    assert (
        httpx.get(f"{replica.http}/api/room/ZZZZZZ", headers=auth(token("eve")), timeout=10).status_code
        == 404
    )
    assert (
        httpx.get(f"{replica.http}/api/room/nope", headers=auth(token("eve")), timeout=10).status_code == 422
    )


def test_get_room_carries_the_old_backends_fields_for_members(replica: Replica) -> None:
    """interviewer / candidate / status / editor_content, as additions; emails come from the tokens."""
    code = create_room(replica.http, token("ann", name="Ann"))
    url = f"{replica.http}/api/room/{code}"
    waiting = httpx.get(url, headers=auth(token("ann", name="Ann")), timeout=10).json()
    assert waiting["status"] == "waiting_for_candidate" and waiting["room_status"] == "open"
    assert waiting["interviewer"] == {"id": "ann", "name": "Ann", "email": "ann@example.test"}
    assert waiting["candidate"] is None and waiting["editor_content"] == ""
    post(replica, "/api/join-room", token("cid", name="Cid"), json={"room_code": code})
    active = httpx.get(url, headers=auth(token("cid", name="Cid")), timeout=10).json()
    assert active["status"] == "active"
    assert active["candidate"] == {"id": "cid", "name": "Cid", "email": "cid@example.test"}
    # relay's own fields stay
    assert active["room_code"] == code and [m["user_id"] for m in active["members"]] == ["ann", "cid"]
    # emails are for the room's members only
    outsider = httpx.get(url, headers=auth(token("eve")), timeout=10)
    assert outsider.status_code == 403 and "example.test" not in outsider.text
    httpx.delete(url, headers=auth(token("ann")), timeout=10)
    assert httpx.get(url, headers=auth(token("ann")), timeout=10).json()["status"] == "closed"


def test_join_answers_room_info(replica: Replica) -> None:
    code = create_room(replica.http, token("ann", name="Ann"))
    body = post(replica, "/api/join-room", token("cid", name="Cid"), json={"room_code": code}).json()
    assert body["role"] == "candidate" and body["room_code"] == code
    assert body["room_info"] == {
        "interviewer": {"id": "ann", "name": "Ann", "email": "ann@example.test"},
        "candidate": {"id": "cid", "name": "Cid", "email": "cid@example.test"},
        "editor_content": "",
    }


def test_one_candidate_per_room_interviewers_may_still_join(replica: Replica) -> None:
    """A second candidate gets 409 candidate_taken with a `detail`; a panel of interviewers stays possible."""
    code = create_room(replica.http, token("ann"))
    assert post(replica, "/api/join-room", token("cid"), json={"room_code": code}).status_code == 200
    second = post(replica, "/api/join-room", token("dan"), json={"room_code": code})
    assert second.status_code == 409
    body = second.json()
    assert body["code"] == "candidate_taken" and body["detail"] == body["message"]
    assert body["detail"].startswith("Room already has a candidate")
    # the candidate joining again is still harmless, and a colleague with the claim joins as interviewer
    assert post(replica, "/api/join-room", token("cid"), json={"room_code": code}).status_code == 200
    colleague = token("ivy", app_metadata={"role": "interviewer"})
    assert (
        post(replica, "/api/join-room", colleague, json={"room_code": code}).json()["role"] == "interviewer"
    )
    # removing the candidate frees the seat
    removed = httpx.delete(
        f"{replica.http}/api/room/{code}/members/cid", headers=auth(token("ann")), timeout=10
    )
    assert removed.status_code == 200
    assert (
        post(replica, "/api/join-room", token("dan"), json={"room_code": code}).json()["role"] == "candidate"
    )


def test_every_error_body_carries_detail(replica: Replica) -> None:
    """The old frontend shows an error body's `detail`: every refusal has it, equal to `message`."""
    code = create_room(replica.http, token("ann"))
    answers = [
        post(replica, "/api/create-room", None, json={}),
        post(replica, "/api/join-room", token("cid"), json={"room_code": "ZZZZZZ"}),
        post(replica, "/api/join-room", token("cid"), content=b"{nope"),
        httpx.get(f"{replica.http}/api/room/{code}", headers=auth(token("eve")), timeout=10),
        httpx.get(f"{replica.http}/api/nope", timeout=10),
        httpx.put(f"{replica.http}/api/create-room", timeout=10),
    ]
    for response in answers:
        body = response.json()
        assert response.status_code >= 400 and body["status"] == "error", body
        assert isinstance(body["detail"], str) and body["detail"] and body["detail"] == body["message"]


def test_new_rooms_start_with_the_welcome_text(redis_server: RedisServer) -> None:
    """RELAY_WELCOME_TEXT (with \\n for line breaks) is the document of every new room."""
    welcome = Replica(
        {"REDIS_URL": redis_server.url, "RELAY_WELCOME_TEXT": "# Welcome!\\n# Write your code below."},
        name="welcome",
    ).start()
    try:
        code = create_room(welcome.http, token("ann"))
        body = httpx.get(f"{welcome.http}/api/room/{code}", headers=auth(token("ann")), timeout=10).json()
        assert body["editor_content"] == "# Welcome!\n# Write your code below."
    finally:
        welcome.stop()


def test_delete_room_is_for_interviewers(replica: Replica) -> None:
    code = create_room(replica.http, token("ann"))
    post(replica, "/api/join-room", token("cid"), json={"room_code": code})
    url = f"{replica.http}/api/room/{code}"
    assert httpx.delete(url, headers=auth(token("cid")), timeout=10).status_code == 403
    assert httpx.delete(url, headers=auth(token("eve")), timeout=10).status_code == 403
    assert httpx.delete(url, headers=auth(token("ann")), timeout=10).status_code == 200
    again = httpx.delete(url, headers=auth(token("ann")), timeout=10)
    assert again.status_code == 410 and again.json()["code"] == "room_closed"
    assert post(replica, "/api/join-room", token("new"), json={"room_code": code}).status_code == 410
    assert (
        httpx.delete(f"{replica.http}/api/room/ZZZZZZ", headers=auth(token("ann")), timeout=10).status_code
        == 404
    )


def test_health_and_readiness(replica: Replica) -> None:
    assert httpx.get(f"{replica.http}/api/health", timeout=5).json()["status"] == "ok"
    ready = httpx.get(f"{replica.http}/api/ready", timeout=5)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_unknown_paths_and_methods_are_json_errors(replica: Replica) -> None:
    missing = httpx.get(f"{replica.http}/api/nope", timeout=5)
    assert missing.status_code == 404 and missing.json()["status"] == "error"
    wrong = httpx.put(f"{replica.http}/api/create-room", timeout=5)
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"


def test_readiness_fails_while_redis_is_down_and_liveness_does_not() -> None:
    """With Redis stopped: /api/ready 503, /api/health 200, create-room 503; all recover when it returns."""
    redis = RedisServer().start()
    restarted = RedisServer(port=redis.port)
    replica = Replica({"REDIS_URL": redis.url}, name="ready").start()
    try:
        redis.stop()
        ready = httpx.get(f"{replica.http}/api/ready", timeout=5)
        assert ready.status_code == 503
        assert httpx.get(f"{replica.http}/api/health", timeout=5).status_code == 200
        create = post(replica, "/api/create-room", token("ann"), json={})
        assert create.status_code == 503 and create.json()["code"] == "unavailable"
        restarted.start()  # same port, as a restarted server would be
        deadline = time.monotonic() + 20
        while httpx.get(f"{replica.http}/api/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "replica did not become ready again"
            time.sleep(0.2)
        assert post(replica, "/api/create-room", token("ann"), json={}).status_code == 200
    finally:
        replica.stop()
        redis.cleanup()
        restarted.cleanup()
