"""Nothing lost: resume, Redis outages, silent links, dead and draining replicas, with real processes."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.proxy import PausableProxy
from tests.support import (
    FAST_REPLICA_ENV,
    Client,
    RedisServer,
    Replica,
    auth,
    create_room,
    join_room,
    token,
    wait_for,
)
from tests.typist import Typist

FAST = FAST_REPLICA_ENV


def report(name: str, **figures: object) -> None:
    """Figures for the closing note and README (visible with pytest -s)."""
    print(f"\nFIGURES {name}: {json.dumps(figures)}")


@pytest.fixture
def aof_redis() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True).start()
    yield server
    server.cleanup()


def test_resume_replays_exactly_the_missed_events(redis_server: RedisServer) -> None:
    """last_seq within history: resumed room_state, then exactly the missed events in order."""
    with _replica(redis_server.url) as replica:
        alice, bob = token("alice"), token("bob")
        code = create_room(replica.http, alice)
        join_room(replica.http, bob, code)
        writer = Client(replica.ws, code, alice)
        writer.recv_type("room_state")
        for n in range(1, 11):
            writer.send({"type": "editor_update", "content": f"v{n}", "client_msg_id": f"m{n}"})
            writer.recv_type("ack")
        resumed = Client(replica.ws, code, bob, last_seq=4)
        state = resumed.recv_type("room_state")
        assert state["resumed"] is True and state["replayed"] == 6 and "content" not in state
        replay = [resumed.recv_type("editor_update") for _ in range(6)]
        assert [f["seq"] for f in replay] == [5, 6, 7, 8, 9, 10]
        assert [f["client_msg_id"] for f in replay] == [f"m{n}" for n in range(5, 11)]
        writer.send({"type": "editor_update", "content": "live"})
        assert resumed.recv_type("editor_update")["seq"] == 11
        assert all(f.get("type") != "editor_update" for f in resumed.drain())
        up_to_date = Client(replica.ws, code, bob, last_seq=11)
        state = up_to_date.recv_type("room_state")
        assert state["resumed"] is True and state["replayed"] == 0


def test_resume_older_than_history_gets_full_state_and_future_gets_error(redis_server: RedisServer) -> None:
    """A gap older than the history: full state with reason; a last_seq from the future: error + full state."""
    with _replica(redis_server.url, RELAY_HISTORY_MAX_EVENTS="5") as replica:
        alice = token("alice")
        code = create_room(replica.http, alice)
        writer = Client(replica.ws, code, alice)
        writer.recv_type("room_state")
        for n in range(1, 301):
            writer.send({"type": "editor_update", "content": f"v{n}"})
        wait_for(lambda: writer.recv_type("ack")["seq"] == 300, 30, "300 acks")
        old = Client(replica.ws, code, alice, last_seq=1)
        state = old.recv_type("room_state")
        assert state["resumed"] is False and state["reason"] == "history_expired"
        assert state["content"] == "v300" and state["seq"] == 300
        future = Client(replica.ws, code, alice, last_seq=999)
        error = future.recv()
        assert error["type"] == "error" and error["code"] == "resume_invalid" and "ahead" in error["message"]
        state = future.recv_type("room_state")
        assert (
            state["resumed"] is False and state["reason"] == "resume_invalid" and state["content"] == "v300"
        )
        future.send({"type": "ping"})
        assert future.recv_type("pong") == {"type": "pong"}


def test_resent_edit_with_same_client_msg_id_is_acked_not_applied_twice(redis_server: RedisServer) -> None:
    with _replica(redis_server.url) as replica:
        alice = token("alice")
        code = create_room(replica.http, alice)
        first = Client(replica.ws, code, alice)
        first.recv_type("room_state")
        first.send({"type": "editor_update", "content": "once", "client_msg_id": "m-1"})
        assert first.recv_type("ack")["seq"] == 1
        first.close()
        again = Client(replica.ws, code, alice, last_seq=1)
        again.recv_type("room_state")
        again.send({"type": "editor_update", "content": "once", "client_msg_id": "m-1"})
        ack = again.recv_type("ack")
        assert ack == {"type": "ack", "seq": 1, "client_msg_id": "m-1", "duplicate": True}
        info = httpx.get(f"{replica.http}/api/room/{code}", headers=auth(alice), timeout=5).json()
        assert info["seq"] == 1


def test_dead_replica_members_stop_being_present(redis_server: RedisServer) -> None:
    """kill -9 a replica: its members are shown as gone within the presence TTL (+ one refresh)."""
    with _replica(redis_server.url, name="survivor") as survivor:
        doomed = Replica({"REDIS_URL": redis_server.url, **FAST}, name="doomed").start()
        try:
            alice, bob = token("alice"), token("bob")
            code = create_room(survivor.http, alice)
            join_room(survivor.http, bob, code)
            watcher = Client(survivor.ws, code, alice)
            watcher.recv_type("room_state")
            Client(doomed.ws, code, bob).recv_type("room_state")
            watcher.recv_type("member_joined")
            killed_at = time.monotonic()
            doomed.stop(signal.SIGKILL)
            left = watcher.recv_type("member_left", timeout=15)
            took = time.monotonic() - killed_at
            assert left["user_id"] == "bob"
            report("dead_replica_presence", presence_ttl_s=3, member_left_after_s=round(took, 2))
        finally:
            doomed.stop(signal.SIGKILL)


def test_silent_redis_link_is_detected_and_delivery_recovers(redis_server: RedisServer) -> None:
    """A link that stops forwarding (no RST, no FIN) is detected, readiness drops, and missed edits arrive."""
    proxy = PausableProxy(redis_server.port).start()
    proxied = Replica({"REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0", **FAST}, name="proxied").start()
    direct = Replica({"REDIS_URL": redis_server.url, **FAST}, name="direct").start()
    try:
        alice, bob = token("alice"), token("bob")
        code = create_room(direct.http, alice)
        join_room(direct.http, bob, code)
        writer = Client(direct.ws, code, alice)
        writer.recv_type("room_state")
        reader = Client(proxied.ws, code, bob)
        reader.recv_type("room_state")
        writer.send({"type": "editor_update", "content": "before"})
        assert writer.recv_type("ack")["seq"] == 1
        assert reader.recv_type("editor_update")["seq"] == 1

        proxy.pause()
        paused_at = time.monotonic()
        wait_for(
            lambda: httpx.get(f"{proxied.http}/api/ready", timeout=5).status_code == 503,
            20,
            "readiness to fail on a silent link",
        )
        ready_failed_after = time.monotonic() - paused_at
        status = reader.recv_type("redis_status", timeout=20)
        detected_after = time.monotonic() - paused_at
        assert status["available"] is False
        assert httpx.get(f"{proxied.http}/api/health", timeout=5).status_code == 200
        for n in range(2, 7):
            writer.send({"type": "editor_update", "content": f"during {n}"})
            assert writer.recv_type("ack")["seq"] == n

        proxy.resume()
        resumed_at = time.monotonic()
        assert reader.recv_type("redis_status", timeout=30)["available"] is True
        missed = [reader.recv_type("editor_update", timeout=15) for _ in range(5)]
        recovered_after = time.monotonic() - resumed_at
        assert [f["seq"] for f in missed] == [2, 3, 4, 5, 6]
        wait_for(lambda: httpx.get(f"{proxied.http}/api/ready", timeout=5).status_code == 200, 20, "ready")
        writer.send({"type": "editor_update", "content": "after"})
        assert reader.recv_type("editor_update")["seq"] == 7
        report(
            "silent_link",
            link_timeout_s=2,
            readiness_failed_after_s=round(ready_failed_after, 2),
            clients_told_after_s=round(detected_after, 2),
            missed_edits_delivered_after_resume_s=round(recovered_after, 2),
        )
    finally:
        proxied.stop()
        direct.stop()
        proxy.stop()


def test_scripted_session_survives_kill_redis_restart_and_sigterm(aof_redis: RedisServer) -> None:
    """Two typists across two replicas; SIGKILL a replica, restart Redis (AOF), SIGTERM a replica.

    After each disruption every typist holds every acknowledged edit exactly once and in order, and at
    the end both hold the same document as Redis.
    """
    env = {"REDIS_URL": aof_redis.url, **FAST}
    replicas = [Replica(env, name="a").start(), Replica(env, name="b").start()]
    ports = [r.port for r in replicas]

    def urls() -> list[str]:
        return [f"ws://127.0.0.1:{port}" for port in ports]

    alice, bob = token("alice"), token("bob")
    code = create_room(replicas[0].http, alice)
    join_room(replicas[1].http, bob, code)
    typists = [
        Typist("alice", alice, code, lambda: urls()[:1] + urls()[1:], 400),
        Typist("bob", bob, code, lambda: urls()[1:] + urls()[:1], 400),
    ]
    try:
        for typist in typists:
            typist.start()

        def progress(after: int) -> None:
            floor = [t.sent for t in typists]
            wait_for(
                lambda: all(
                    t.sent >= f + after or t.done.is_set() for t, f in zip(typists, floor, strict=True)
                ),
                60,
                f"{after} more acknowledged edits from each typist",
            )
            for t in typists:
                assert t.error is None, t.error
                assert t.violations == [], t.violations

        progress(30)
        # (a) a replica dies without warning; its typist resumes on the other one
        replicas[0].stop(signal.SIGKILL)
        progress(30)
        replicas[0] = Replica(env, port=ports[0], name="a2").start()
        progress(20)
        # (b) Redis restarts; its append-only file brings every acknowledged edit back
        aof_redis.stop()
        time.sleep(1)  # an outage the replicas notice, not a blink
        aof_redis.start()
        progress(30)
        # (c) a replica is told to stop; its typist is told to reconnect and resumes elsewhere
        term_at = time.monotonic()
        exit_code = replicas[1].stop(signal.SIGTERM)
        drain_seconds = time.monotonic() - term_at
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly
        assert exit_code in (0, -signal.SIGTERM), replicas[1].log()[-2000:]
        assert "Application shutdown complete" in replicas[1].log()
        progress(30)
        replicas[1] = Replica(env, port=ports[1], name="b2").start()

        for typist in typists:
            assert typist.done.wait(120), f"{typist.user} did not finish"
        # the other typist's last edits are still on their way: wait until both have seen all 800
        wait_for(lambda: all(t.last_seq >= 800 for t in typists), 30, "both typists at seq 800")
        for typist in typists:
            typist.stop.set()
            typist.join(10)
            assert typist.error is None, typist.error
            assert typist.violations == [], typist.violations

        total = sum(len(t.acked) for t in typists)
        assert total == 800
        stored = redis.Redis.from_url(aof_redis.url).hgetall(f"relay:{{{code}}}:room")
        assert int(stored[b"seq"]) == 800
        for typist in typists:
            expected = list(range(typist.joined_at_seq + 1, 801))
            assert typist.seqs == expected, f"{typist.user} misses or repeats events"
            content = stored[b"content"]
            assert typist.document == (content.decode() if isinstance(content, bytes) else content)
        report(
            "scripted_session",
            edits=total,
            reconnects={t.user: t.figures.reconnects for t in typists},
            resume_seconds={t.user: [round(s, 3) for s in t.figures.resume_seconds] for t in typists},
            replayed_on_resume={t.user: t.figures.replayed for t in typists},
            unavailable_errors={t.user: t.figures.unavailable_errors for t in typists},
            resends={t.user: t.figures.resends for t in typists},
            sigterm_exit_s=round(drain_seconds, 2),
        )
    finally:
        for typist in typists:
            typist.stop.set()
        for replica in replicas:
            replica.stop(signal.SIGKILL)


class _replica:
    """A single replica for one test, as a context manager."""

    def __init__(self, redis_url: str, name: str = "one", **env: str) -> None:
        self.replica = Replica({"REDIS_URL": redis_url, **FAST, **env}, name=name)

    def __enter__(self) -> Replica:
        return self.replica.start()

    def __exit__(self, *exc: object) -> None:
        self.replica.stop()
