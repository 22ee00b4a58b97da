"""Candidate monitoring across two replicas and a real redis-server: who may send it, who gets the
alerts, what is kept (and what is only counted), and who may read it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.support import Client, RedisServer, Replica, auth, create_room, join_room, replicas, token

MAX_RECORDS = 3
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(scope="module")
def pair(redis_server: RedisServer) -> Iterator[list[Replica]]:
    env = {
        "REDIS_URL": redis_server.url,
        "RELAY_INTERVIEWER_CLAIM": "app_metadata.role=interviewer",
        "RELAY_MONITORING_MAX_RECORDS": str(MAX_RECORDS),
    }
    with replicas(2, env) as started:
        yield started


class Room:
    """ivy (creator) and ian (a colleague with the interviewer claim) interview cam."""

    def __init__(self, pair: list[Replica], tag: str) -> None:
        self.a, self.b = pair
        self.ivy = token(f"ivy-{tag}", name="Ivy")
        self.ian = token(f"ian-{tag}", name="Ian", app_metadata={"role": "interviewer"})
        self.cam_id = f"cam-{tag}"
        self.cam = token(self.cam_id, name="Cam")
        self.code = create_room(self.a.http, self.ivy)
        assert join_room(self.b.http, self.ian, self.code)["role"] == "interviewer"
        assert join_room(self.b.http, self.cam, self.code)["role"] == "candidate"

    def socket(self, replica: Replica, user_token: str) -> Client:
        client = Client(replica.ws, self.code, user_token)
        client.recv_type("room_state")
        return client

    def report(self, user_token: str) -> httpx.Response:
        return httpx.get(
            f"{self.a.http}/api/room/{self.code}/monitoring", headers=auth(user_token), timeout=10
        )


def frames_before_pong(client: Client) -> list[dict[str, Any]]:
    """Everything the socket gets before the answer to a ping sent now (its queue is in order)."""
    client.send({"type": "ping"})
    got = []
    while (frame := client.recv()) != {"type": "pong"}:
        got.append(frame)
    return got


def test_alerts_reach_interviewers_on_every_replica_and_never_a_candidate(pair: list[Replica]) -> None:
    """A candidate's focus loss and suspicious key press reach both interviewers (one per replica) with
    the token's identity and a UTC timestamp; an ordinary key press alerts nobody; no candidate socket
    (on either replica) ever gets an alert."""
    room = Room(pair, "fanout")
    ivy, ian = room.socket(room.a, room.ivy), room.socket(room.b, room.ian)
    cam_b, cam_a = room.socket(room.b, room.cam), room.socket(room.a, room.cam)
    forged = {"user_id": "ivy-fanout", "user_name": "Someone Else"}
    cam_b.send({"type": "window_focus_lost", "duration": 4.5, **forged})
    cam_a.send({"type": "keystroke_monitoring", "key": "q", "key_combination": "q", "is_suspicious": False})
    cam_b.send(
        {"type": "keystroke_monitoring", "key": "v", "key_combination": "Ctrl+V", "is_suspicious": True}
    )
    for interviewer in (ivy, ian):
        focus = interviewer.recv_type("candidate_monitoring_alert")
        assert focus["alert_type"] == "window_focus_lost" and focus["duration"] == 4.5
        assert (focus["user_id"], focus["user_name"]) == (room.cam_id, "Cam")
        assert focus["message"] == "Candidate Cam lost window focus for 4.5 seconds"
        assert ISO_UTC.fullmatch(focus["timestamp"]), focus["timestamp"]
        key = interviewer.recv_type("candidate_monitoring_alert")
        assert key["alert_type"] == "suspicious_keystroke" and key["key_combination"] == "Ctrl+V"
        assert key["message"] == "Candidate Cam used suspicious key combination: Ctrl+V"
        assert (key["user_id"], key["user_name"]) == (room.cam_id, "Cam")
        assert ISO_UTC.fullmatch(key["timestamp"])
    # Both interviewers got both alerts, so every replica has already decided who gets them.
    for candidate in (cam_a, cam_b):
        assert all(f["type"] != "candidate_monitoring_alert" for f in frames_before_pong(candidate))
    for interviewer in (ivy, ian):
        assert all(f["type"] != "candidate_monitoring_alert" for f in frames_before_pong(interviewer))
    for client in (ivy, ian, cam_a, cam_b):
        client.close()


def test_interviewer_and_malformed_monitoring_frames_get_an_error_and_the_socket_stays(
    pair: list[Replica],
) -> None:
    room = Room(pair, "refusals")
    ivy, cam = room.socket(room.a, room.ivy), room.socket(room.b, room.cam)
    ivy.send({"type": "window_focus_lost", "duration": 3})
    refused = ivy.recv_type("error")
    assert refused["code"] == "forbidden" and "candidate" in refused["message"]
    ivy.send({"type": "keystroke_monitoring", "key": "c", "key_combination": "Ctrl+C", "is_suspicious": True})
    assert ivy.recv_type("error")["code"] == "forbidden"
    bad_frames: list[tuple[dict[str, Any], str]] = [
        ({"type": "window_focus_lost"}, "bad_frame"),
        ({"type": "window_focus_lost", "duration": "long"}, "bad_frame"),
        ({"type": "window_focus_lost", "duration": -1}, "bad_frame"),
        ({"type": "window_focus_lost", "duration": True}, "bad_frame"),
        ({"type": "window_focus_lost", "duration": 1e300}, "bad_frame"),
        ({"type": "keystroke_monitoring", "key": "v", "key_combination": "Ctrl+V"}, "bad_frame"),
        (
            {"type": "keystroke_monitoring", "key": "", "key_combination": "", "is_suspicious": False},
            "bad_frame",
        ),
        (
            {"type": "keystroke_monitoring", "key": "v" * 33, "key_combination": "", "is_suspicious": True},
            "bad_frame",
        ),
        (
            {"type": "keystroke_monitoring", "key": "\n", "key_combination": "", "is_suspicious": True},
            "bad_frame",
        ),
        (
            {"type": "keystroke_monitoring", "key": 5, "key_combination": "x", "is_suspicious": True},
            "bad_frame",
        ),
        ({"type": "window_focus_lost", "duration": 1, "padding": "x" * 5000}, "too_large"),
    ]
    for frame, code in bad_frames:
        cam.send(frame)
        assert cam.recv_type("error")["code"] == code, frame
    # Past the monitoring rate (10/s, bursts of 20) frames are dropped with one notice; the socket stays.
    for _ in range(60):
        cam.send({"type": "keystroke_monitoring", "key": "a", "key_combination": "a", "is_suspicious": False})
    assert cam.recv_type("error")["code"] == "rate_limited"
    for client in (ivy, cam):
        frames_before_pong(client)  # still open and answering
    # Nothing the refused frames said was counted.
    report = room.report(room.ivy).json()
    assert report["total_incidents"] == 0 and report["monitoring_incidents"] == []
    assert report["keystroke_logs"] == [] and 20 <= report["total_keystrokes"] < 60
    ivy.close()
    cam.close()


def test_what_is_kept_capped_and_only_counted(pair: list[Replica], redis_server: RedisServer) -> None:
    """Incidents and suspicious key presses are kept (the newest RELAY_MONITORING_MAX_RECORDS, oldest
    first) and counted; ordinary key presses are counted and never stored; the data lives as the room."""
    room = Room(pair, "storage")
    cam = room.socket(room.b, room.cam)
    for n in range(5):
        cam.send({"type": "window_focus_lost", "duration": n + 1})
    marker = "Alt+Shift+KeyZ9"  # an ordinary key press that must not be stored anywhere
    cam.send({"type": "keystroke_monitoring", "key": "Z", "key_combination": marker, "is_suspicious": False})
    for combo in ("Ctrl+C", "Ctrl+V", "Ctrl+Shift+I", "Alt+Tab"):
        cam.send(
            {
                "type": "keystroke_monitoring",
                "key": combo[-1],
                "key_combination": combo,
                "is_suspicious": True,
            }
        )
    frames_before_pong(cam)  # every frame above has been through the store

    response = room.report(room.ivy)
    assert response.status_code == 200
    report = response.json()
    assert report["room_code"] == room.code and report["max_records"] == MAX_RECORDS
    assert (report["total_incidents"], report["total_keystrokes"], report["total_suspicious_keystrokes"]) == (
        5,
        5,
        4,
    )
    assert [i["duration"] for i in report["monitoring_incidents"]] == [3.0, 4.0, 5.0]
    for incident in report["monitoring_incidents"]:
        assert incident["type"] == "window_focus_lost" and incident["user_id"] == room.cam_id
        assert ISO_UTC.fullmatch(incident["timestamp"])
    assert [k["key_combination"] for k in report["keystroke_logs"]] == ["Ctrl+V", "Ctrl+Shift+I", "Alt+Tab"]
    assert all(k["is_suspicious"] is True and k["user_name"] == "Cam" for k in report["keystroke_logs"])

    store = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        room_keys = list(store.scan_iter(match=f"relay:{{{room.code}}}:*"))
        dumped = "".join(str(store.dump(key)) for key in room_keys)
        assert marker not in dumped, "an ordinary key press was stored"
        room_ttl = store.ttl(f"relay:{{{room.code}}}:room")
        for name in ("monitoring", "incidents", "suspicious"):
            assert abs(store.ttl(f"relay:{{{room.code}}}:{name}") - room_ttl) <= 2, name
    finally:
        store.close()
    cam.close()


def test_monitoring_endpoint_is_for_the_rooms_interviewers(pair: list[Replica]) -> None:
    """403 for the candidate and for non-members, 404 for an unknown room, 401 without a token; the
    room's interviewers (creator or not) read it, also after the room was closed."""
    room = Room(pair, "endpoint")
    assert room.report(room.ivy).status_code == 200
    assert room.report(room.ian).status_code == 200
    for outsider in (room.cam, token("eve-endpoint")):
        refused = room.report(outsider)
        assert refused.status_code == 403
        assert refused.json()["detail"] == "Only the room's interviewer can access monitoring data"
    assert httpx.get(f"{room.a.http}/api/room/{room.code}/monitoring", timeout=10).status_code == 401
    unknown = "ZZZZZZ" if room.code != "ZZZZZZ" else "YYYYYY"
    missing = httpx.get(f"{room.a.http}/api/room/{unknown}/monitoring", headers=auth(room.ivy), timeout=10)
    assert missing.status_code == 404 and missing.json()["code"] == "room_not_found"
    assert (
        httpx.delete(f"{room.a.http}/api/room/{room.code}", headers=auth(room.ivy), timeout=10).status_code
        == 200
    )
    assert room.report(room.ivy).status_code == 200
    assert room.report(room.cam).status_code == 403
