"""Admission control: the measuring and deciding logic in process, and load shedding on real processes.

No assertion here is about how fast anything is: overload is forced either with a threshold of 0
(refuse everything of that kind) or by stopping a replica with SIGSTOP, which makes its event loop late
by at least the time it was stopped, whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from relay.admission import LAG_WEIGHT, Admission, MovingAverage
from relay.config import ConfigError, Settings
from tests.support import (
    Client,
    RedisServer,
    Replica,
    create_room,
    join_room,
    open_refused,
    replicas,
    token,
)
from tests.test_observability import metric


def answers_to(msg_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("client_msg_id") == msg_id


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admission(clock: Clock, *, sockets: float = 0.1, frames: float = 0.2) -> Admission:
    return Admission(shed_sockets_at=sockets, shed_frames_at=frames, retry_after=2, clock=clock)


def test_moving_average_follows_samples_and_decays_without_them() -> None:
    """Samples move the average by their weight; with no samples for a while it decays towards 0."""
    average = MovingAverage(0.5)
    average.add(1.0, now=0.0)
    assert average.read(0.0) == 0.5
    average.add(1.0, now=0.05)
    assert average.read(0.05) == 0.75
    assert average.read(0.1) == 0.75  # within the grace before decay
    assert average.read(0.65) == pytest.approx(0.375)  # one half-life after the grace
    assert average.read(100.0) < 1e-6


def test_sockets_are_refused_before_frames_and_both_recover() -> None:
    """Queueing between the two thresholds refuses sockets only; above both, frames too; then it recovers."""
    clock = Clock()
    control = admission(clock)
    assert control.admits_socket() and control.admits_edit() and control.admits_frame()
    for _ in range(100):
        control.observe_round_trip(0.15)
    assert not control.admits_socket()
    assert control.admits_edit() and control.admits_frame()
    for _ in range(100):
        control.observe_round_trip(0.5)
    assert not control.admits_socket() and not control.admits_edit() and not control.admits_frame()
    clock.now += 5  # nothing measured for a while: a replica that shed everything must recover
    assert control.admits_socket() and control.admits_edit()


def test_threshold_zero_refuses_everything_and_retry_hints_are_spread() -> None:
    clock = Clock()
    control = admission(clock, sockets=0, frames=0)
    assert not control.admits_socket() and not control.admits_edit() and not control.admits_frame()
    hints = {control.socket_retry_after() for _ in range(200)}
    assert hints <= {2, 3, 4} and len(hints) > 1
    assert control.frame_retry_after() == 2


def test_a_blocked_event_loop_is_measured_as_queueing() -> None:
    """Blocking the loop for 0.3 s makes the lag timer run at least 0.25 s late (0.3 s minus one interval)."""

    async def scenario() -> float:
        control = Admission(shed_sockets_at=0.05, shed_frames_at=10, retry_after=2)
        control.start()
        try:
            time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop is the point
            highest = 0.0
            for _ in range(50):  # the next samples (one per 50 ms) pull the average down: watch closely
                await asyncio.sleep(0.002)
                highest = max(highest, control.queueing)
            return highest
        finally:
            control.stop()

    assert asyncio.run(scenario()) >= LAG_WEIGHT * 0.25


def test_thresholds_are_validated_with_the_key_in_the_message() -> None:
    with pytest.raises(ConfigError, match="RELAY_SHED_FRAMES_MS must be a number of milliseconds"):
        Settings.from_environ({"RELAY_DEV_MODE": "true", "RELAY_SHED_FRAMES_MS": "fast"})
    with pytest.raises(ConfigError, match="RELAY_SHED_SOCKETS_MS must be >= 0"):
        Settings.from_environ({"RELAY_DEV_MODE": "true", "RELAY_SHED_SOCKETS_MS": "-1"})
    settings = Settings.from_environ({"RELAY_DEV_MODE": "true", "RELAY_SHED_SOCKETS_MS": "0"})
    assert settings.shed_sockets_ms == 0 and settings.shed_frames_ms == 200


def test_overloaded_replica_refuses_new_sockets_with_1013_and_a_retry_hint(redis_server: RedisServer) -> None:
    """A refused socket gets an `unavailable` error frame with retry_after, then close 1013 whose reason
    says when to retry; the refusal is counted in relay_shed_total; HTTP keeps working."""
    replica = Replica(
        {"REDIS_URL": redis_server.url, "RELAY_SHED_SOCKETS_MS": "0"}, name="shed-sockets"
    ).start()
    try:
        alice = token("alice")
        code = create_room(replica.http, alice)
        client = Client(replica.ws, code, alice)
        error = client.recv_type("error")
        assert error["code"] == "unavailable"
        assert error["retry_after"] in (2, 3, 4)
        close_code, reason = client.wait_closed()
        assert close_code == 1013
        assert reason is not None and f"retry in {error['retry_after']} s" in reason
        assert open_refused(replica.ws, code, f"?token={alice}")[0] == 1013
        text = httpx.get(f"{replica.http}/metrics", timeout=5).text
        assert metric(text, "relay_shed_total", '{kind="socket"}') >= 2
    finally:
        replica.stop()


def test_overloaded_replica_answers_every_edit_with_unavailable_and_stores_nothing(
    redis_server: RedisServer,
) -> None:
    """Frames shed: each edit is answered with `unavailable` + its client_msg_id + retry_after (never a
    silent drop), nothing reaches the other member or the document; cursors get one notice; pings work."""
    replica = Replica(
        {"REDIS_URL": redis_server.url, "RELAY_SHED_FRAMES_MS": "0", "RELAY_SHED_SOCKETS_MS": "100000"},
        name="shed-frames",
    ).start()
    try:
        alice, bob = token("alice"), token("bob")
        code = create_room(replica.http, alice)
        join_room(replica.http, bob, code)
        a, b = Client(replica.ws, code, alice), Client(replica.ws, code, bob)
        a.recv_type("room_state")
        b.recv_type("room_state")
        for i in range(5):
            a.send({"type": "editor_update", "content": f"edit {i}", "client_msg_id": f"m{i}"})
        answers = [a.recv_until(lambda f: f.get("client_msg_id") is not None) for _ in range(5)]
        assert [f["client_msg_id"] for f in answers] == [f"m{i}" for i in range(5)]
        assert all(f["type"] == "error" and f["code"] == "unavailable" for f in answers)
        assert all(f["retry_after"] == 2 and "resend" in f["message"] for f in answers)
        for _ in range(3):
            a.send({"type": "cursor_update", "cursor_position": {"lineNumber": 1, "column": 1}})
        a.send({"type": "ping"})
        rest = a.drain()
        assert {"type": "pong"} in rest
        assert [f["code"] for f in rest if f["type"] == "error"] == ["unavailable"]  # one notice
        assert not [f for f in b.drain() if f["type"] in ("editor_update", "cursor_update")]
        room = httpx.get(f"{replica.http}/api/room/{code}", headers={"Authorization": f"Bearer {alice}"})
        assert "edit" not in str(room.json().get("content", ""))
        text = httpx.get(f"{replica.http}/metrics", timeout=5).text
        assert metric(text, "relay_shed_total", '{kind="editor_update"}') == 5
        a.close()
        b.close()
    finally:
        replica.stop()


def test_under_real_overload_every_edit_is_answered_and_every_acked_edit_is_delivered(
    redis_server: RedisServer,
) -> None:
    """The sender's replica is stopped (SIGSTOP) for 0.5 s while edits keep coming, so its measured
    queueing jumps past RELAY_SHED_FRAMES_MS: some edits are refused. Every edit gets exactly one
    answer (ack or unavailable); the member on the other replica gets exactly the acked ones, in order;
    the refused ones, resent, are accepted once the replica has caught up."""
    env = {
        "REDIS_URL": redis_server.url,
        "RELAY_SHED_FRAMES_MS": "20",
        # 200 edits a second from one socket: the abuse limit is not what this test is about.
        "RELAY_RATE_PER_SECOND": "1000",
        "RELAY_RATE_BURST": "1000",
    }
    with replicas(2, env) as (sender_replica, receiver_replica):
        alice, bob = token("alice"), token("bob")
        code = create_room(sender_replica.http, alice)
        join_room(sender_replica.http, bob, code)
        a = Client(sender_replica.ws, code, alice)
        b = Client(receiver_replica.ws, code, bob)
        a.recv_type("room_state")
        b.recv_type("room_state")
        assert sender_replica.pid is not None
        pid = sender_replica.pid

        def stall() -> None:
            time.sleep(0.2)
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.5)
            os.kill(pid, signal.SIGCONT)

        staller = threading.Thread(target=stall)
        staller.start()
        count = 300
        for i in range(count):  # about 1.5 s of edits: before, during and after the stall
            a.send({"type": "editor_update", "content": f"edit {i}", "client_msg_id": f"m{i}"})
            time.sleep(0.005)
        staller.join()

        answers: dict[str, dict[str, object]] = {}
        while len(answers) < count:
            frame = a.recv_until(lambda f: f.get("client_msg_id") is not None, timeout=30)
            msg_id = str(frame["client_msg_id"])
            assert msg_id not in answers, f"{msg_id} answered twice"
            answers[msg_id] = frame
        acked = [i for i in range(count) if answers[f"m{i}"]["type"] == "ack"]
        refused = [i for i in range(count) if answers[f"m{i}"]["type"] == "error"]
        assert all(answers[f"m{i}"]["code"] == "unavailable" for i in refused)
        assert refused, "a 0.5 s stall must push the measured queueing past 20 ms"
        assert len(acked) + len(refused) == count

        delivered: list[str] = []
        while len(delivered) < len(acked):
            frame = b.recv_type("editor_update", timeout=30)
            delivered.append(str(frame["content"]))
        assert delivered == [f"edit {i}" for i in acked]

        for i in refused:  # the client's part: resend what was refused, until it is accepted
            msg_id = f"m{i}"
            for _attempt in range(100):
                a.send({"type": "editor_update", "content": f"edit {i}", "client_msg_id": msg_id})
                answer = a.recv_until(answers_to(msg_id), timeout=30)
                if answer["type"] == "ack":
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"m{i} still refused after 100 resends")
            assert b.recv_type("editor_update", timeout=30)["content"] == f"edit {i}"
        a.close()
        b.close()
