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
