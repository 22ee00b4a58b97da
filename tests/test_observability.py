"""Metrics, structured logs and several workers per process, against real processes."""

from __future__ import annotations

import json
import re

import httpx
import redis

from tests.support import Client, RedisServer, Replica, auth, create_room, join_room, token, wait_for


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one series in Prometheus exposition text (0 when absent)."""
    pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", re.MULTILINE)
    found = pattern.search(text)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_a_session_and_hold_no_secrets(redis_server: RedisServer) -> None:
    """/metrics reflects connections, frames by type, deliveries, latency, refusals; no token or code in it."""
    replica = Replica({"REDIS_URL": redis_server.url}, name="metrics").start()
    try:
        alice, bob = token("alice"), token("bob")
        code = create_room(replica.http, alice)
        join_room(replica.http, bob, code)
        a, b = Client(replica.ws, code, alice), Client(replica.ws, code, bob)
        a.recv_type("room_state")
        b.recv_type("room_state")
        for n in range(3):
            a.send({"type": "editor_update", "content": f"v{n}"})
            b.recv_type("editor_update")
        a.send({"type": "cursor_update", "cursor_position": {"line": 1}})
        b.recv_type("cursor_update")
        a.send({"type": "nonsense"})
        a.recv_type("error")
        httpx.post(f"{replica.http}/api/create-room", json={}, timeout=5)  # no token: 401
        text = httpx.get(f"{replica.http}/metrics", timeout=5).text
        assert metric(text, "relay_connections") == 2
        assert metric(text, "relay_rooms") == 1
        assert metric(text, "relay_frames_received_total", '{type="editor_update"}') == 3
        assert metric(text, "relay_frames_received_total", '{type="cursor_update"}') == 1
        # each edit reaches both sockets: as the event for b, as the ack for its sender a
        assert metric(text, "relay_frames_sent_total", '{kind="durable"}') >= 6
        assert metric(text, "relay_publish_to_deliver_seconds_count") >= 4
        assert metric(text, "relay_refusals_total", '{reason="bad_frame"}') == 1
        assert metric(text, "relay_refusals_total", '{reason="unauthorized"}') == 1
        assert metric(text, "relay_redis_up") == 1
        for secret in (alice, bob, alice.split(".")[2], code):
            assert secret not in text
    finally:
        replica.stop()


def test_logs_are_json_lines_with_ids_and_no_tokens(redis_server: RedisServer) -> None:
    """Every log line is one JSON object with the replica; requests carry request ids, sockets connection ids."""
    replica = Replica({"REDIS_URL": redis_server.url, "RELAY_LOG_LEVEL": "debug"}, name="logs").start()
    try:
        alice = token("alice")
        code = create_room(replica.http, alice)
        response = httpx.post(
            f"{replica.http}/api/join-room",
            headers={**auth(alice), "X-Request-ID": "req-42"},
            json={"room_code": code},
            timeout=5,
        )
        assert response.headers["X-Request-ID"] == "req-42"
        client = Client(replica.ws, code, alice)
        connection_id = client.recv_type("room_state")["you"]["connection_id"]
        client.close()
    finally:
        replica.stop()
    lines = [json.loads(line) for line in replica.log().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line.get("replica") for line in lines)
    assert any(line.get("connection_id") == connection_id and line.get("room_code") == code for line in lines)
    assert alice not in replica.log() and alice.split(".")[2] not in replica.log()


def test_several_workers_each_subscribe_and_share_rooms(redis_server: RedisServer) -> None:
    """relay serve --workers 2: each worker has its own pub/sub link; sockets on both see each other's edits."""
    replica = Replica(
        {"REDIS_URL": redis_server.url, "RELAY_WORKERS": "2", "RELAY_MAX_CONNECTIONS_PER_USER": "100"},
        name="workers",
    ).start()
    client = redis.Redis.from_url(redis_server.url)
    sockets: list[Client] = []
    try:
        alice = token("alice")
        code = create_room(replica.http, alice)
        channel = f"relay:{{{code}}}:pubsub"

        def subscribers() -> int:
            return int(dict(client.pubsub_numsub(channel))[channel.encode()])

        for _ in range(5):  # the kernel hands each connection to one of the two workers
            tab = Client(replica.ws, code, alice)
            tab.recv_type("room_state")
            sockets.append(tab)
        # keep opening and closing until both workers hold one
        for _ in range(60):
            if subscribers() == 2:
                break
            sockets.pop(0).close()
            tab = Client(replica.ws, code, alice)
            tab.recv_type("room_state")
            sockets.append(tab)
        assert subscribers() == 2, "two workers should each subscribe the room on their own pub/sub link"
        sockets[0].send({"type": "editor_update", "content": "from one worker"})
        for other in sockets[1:]:
            assert other.recv_type("editor_update")["content"] == "from one worker"
        wait_for(
            lambda: metric(httpx.get(f"{replica.http}/metrics", timeout=5).text, "relay_connections") == 5,
            10,
            "metrics of both workers added up",
        )
    finally:
        for tab in sockets:
            tab.close()
        replica.stop()
