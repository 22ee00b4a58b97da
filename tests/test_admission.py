"""Admission control: the measuring and deciding logic in process, and load shedding on real processes.

No assertion here is about how fast anything is: overload is forced either with a threshold of 0
(refuse everything of that kind) or by stopping a replica with SIGSTOP, which makes its event loop late
by at least the time it was stopped, whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio

from relay.admission import Admission
from relay.config import ConfigError, Settings
from relay.pipeline import ScriptPipeline
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


class StoreQueue:
    """Stands in for the pipeline's take_longest_wait: the head sojourn a test says the queue had."""

    def __init__(self) -> None:
        self.wait = 0.0
        self._read = asyncio.Event()  # set each time admission control closes an interval

    def __call__(self) -> float:
        self._read.set()
        return self.wait

    async def next_interval(self) -> None:
        """Wait until admission control closes its next interval."""
        self._read.clear()
        async with asyncio.timeout(10):
            await self._read.wait()


def admission(
    queue: StoreQueue | None = None, *, sockets: float = 0.1, frames: float = 0.05, chance: float = 0.5
) -> Admission:
    return Admission(
        shed_sockets_at=sockets,
        shed_frames_at=frames,
        retry_after=2,
        store_wait=queue or StoreQueue(),
        clock=Clock(),
        chance=lambda: chance,
    )


def intervals(control: Admission, count: int, *, lag: float = 0.0) -> None:
    for _ in range(count):
        control.end_interval(lag=lag)


def test_a_burst_shorter_than_the_allowance_sheds_nothing() -> None:
    """A pause (GC, a moment without the CPU) that the replica clears at once is let through: two
    intervals 0.2 s late, then calm; nothing is refused, and the next burst gets its allowance again."""
    control = admission(chance=0.0)  # any proportion above 0 would refuse every frame
    for _ in range(2):
        intervals(control, 2, lag=0.2)
        assert control.in_burst_allowance
        assert control.admits_edit() and control.admits_frame() and control.admits_socket()
        intervals(control, 40)
        assert control.shed_proportion == 0 and control.in_burst_allowance


def test_standing_queueing_sheds_a_growing_proportion_and_recovers_when_it_ends() -> None:
    """Queueing above the target for longer than the allowance raises the proportion interval by
    interval; frames are refused at random in that proportion; once the queue is gone, it falls to 0."""
    queue = StoreQueue()
    control = admission(queue)
    queue.wait = 0.1  # twice the 50 ms target, standing
    intervals(control, 3)
    assert not control.in_burst_allowance
    rising = []
    for _ in range(5):
        intervals(control, 1)
        rising.append(control.shed_proportion)
    assert all(0 < a < b for a, b in itertools.pairwise(rising))
    intervals(control, 20)
    assert control.shed_proportion > 0.5
    assert not control.admits_edit() and not control.admits_frame()  # chance 0.5 < the proportion
    queue.wait = 0.0
    intervals(control, 60)
    assert control.shed_proportion == 0
    assert control.admits_edit() and control.admits_frame() and control.admits_socket()


def test_the_proportion_settles_where_the_queueing_meets_the_target() -> None:
    """A replica offered twice what it can carry: its queue grows while it admits more than half of
    the offered work and drains while it admits less. The law holds the queueing near the target
    instead of switching between all and nothing."""
    queue = StoreQueue()
    control = admission(queue)
    history = []
    for _ in range(400):
        admitted = 2.0 * (1 - control.shed_proportion)  # in multiples of what the replica can carry
        queue.wait = max(0.0, queue.wait + (admitted - 1.0) * 0.05)  # one interval's growth or drain
        intervals(control, 1)
        history.append((control.shed_proportion, control.queueing))
    late = history[200:]
    assert all(0.3 < shed < 0.7 for shed, _ in late)
    assert all(wait < 0.15 for _, wait in late)


def test_sockets_are_refused_from_their_threshold_or_when_most_frames_are_shed() -> None:
    queue = StoreQueue()
    control = admission(queue, sockets=0.1, frames=0.05)
    queue.wait = 0.07  # above the frames' target, below the sockets' threshold
    intervals(control, 4)
    assert not control.in_burst_allowance and 0 < control.shed_proportion < 0.5
    assert control.admits_socket()
    intervals(control, 40)
    assert control.shed_proportion > 0.5
    assert not control.admits_socket()
    control = admission(queue, sockets=0.1, frames=10)  # frames never shed: the threshold alone
    queue.wait = 0.2
    intervals(control, 4)
    assert control.shed_proportion == 0 and not control.admits_socket()
    assert control.admits_edit()


def test_threshold_zero_refuses_everything_and_retry_hints_are_spread() -> None:
    control = admission(sockets=0, frames=0)
    assert not control.admits_socket() and not control.admits_edit() and not control.admits_frame()
    assert control.shed_proportion == 1
    hints = {control.socket_retry_after() for _ in range(200)}
    assert hints <= {2, 3, 4} and len(hints) > 1
    assert control.frame_retry_after() == 2


def test_a_blocked_event_loop_and_a_waiting_store_queue_are_measured_as_queueing() -> None:
    """Blocking the loop for 0.3 s makes the interval's timer run at least 0.25 s late (0.3 s minus one
    interval); a store queue whose head waits is measured as long as it waits."""
    queue = StoreQueue()

    async def scenario() -> tuple[float, float]:
        control = Admission(shed_sockets_at=0.05, shed_frames_at=10, retry_after=2, store_wait=queue)
        control.start()
        try:
            time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop is the point
            await queue.next_interval()  # the late timer has run
            after_block = control.queueing
            queue.wait = 0.7
            await queue.next_interval()
            return after_block, control.queueing
        finally:
            control.stop()

    after_block, with_queue = asyncio.run(scenario())
    assert after_block >= 0.25
    assert with_queue >= 0.7  # the larger of the lag and the queue's wait


def test_the_pipeline_reports_the_longest_wait_of_its_queue_head(redis_server: RedisServer) -> None:
    """take_longest_wait: about 0 when nothing waited; each take starts a new measure; a call held behind
    a batch that its server does not answer counts with its wait so far."""

    contacted = asyncio.Event()

    async def silent_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        contacted.set()  # only a writer with a batch to send connects
        await reader.read(-1)  # takes everything, answers nothing

    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        pipeline = ScriptPipeline(client)
        script = client.register_script("return 1")
        server = await asyncio.start_server(silent_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        first: asyncio.Future[object] | None = None
        second: asyncio.Future[object] | None = None
        silent = redis.asyncio.Redis(host="127.0.0.1", port=port)
        stuck = ScriptPipeline(silent)
        try:
            assert await pipeline.call(script, ["relay-test:admission:k"], []) == 1
            assert pipeline.take_longest_wait() < 0.1
            assert pipeline.take_longest_wait() == 0.0
            first = asyncio.ensure_future(stuck.call(script, ["k"], ["a"]))
            async with asyncio.timeout(10):
                await contacted.wait()  # the first call's batch has left the queue
            second = asyncio.ensure_future(stuck.call(script, ["k"], ["b"]))
            await asyncio.sleep(0.15)  # the wait to be measured
            assert stuck.take_longest_wait() >= 0.14  # the second, queued behind it
            assert not first.done() and not second.done()
        finally:
            await stuck.aclose()  # answers both with PipelineFailed
            await asyncio.gather(*(f for f in (first, second) if f is not None), return_exceptions=True)
            await pipeline.aclose()
            await client.aclose()
            await silent.aclose()
            server.close()

    asyncio.run(scenario())


def test_thresholds_are_validated_with_the_key_in_the_message() -> None:
    with pytest.raises(ConfigError, match="RELAY_SHED_FRAMES_MS must be a number of milliseconds"):
        Settings.from_environ({"RELAY_DEV_MODE": "true", "RELAY_SHED_FRAMES_MS": "fast"})
    with pytest.raises(ConfigError, match="RELAY_SHED_SOCKETS_MS must be >= 0"):
        Settings.from_environ({"RELAY_DEV_MODE": "true", "RELAY_SHED_SOCKETS_MS": "-1"})
    settings = Settings.from_environ({"RELAY_DEV_MODE": "true", "RELAY_SHED_SOCKETS_MS": "0"})
    assert settings.shed_sockets_ms == 0 and settings.shed_frames_ms == 100


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
    """The sender's replica runs 50 ms in every 200 (SIGSTOP / SIGCONT) for a second while edits keep
    coming, so its measured queueing stands above RELAY_SHED_FRAMES_MS for longer than the burst
    allowance: some edits are refused. Every edit gets exactly one answer (ack or unavailable); the
    member on the other replica gets exactly the acked ones, in order; the refused ones, resent, are
    accepted once the replica has caught up."""
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
            for _ in range(6):  # a replica short of CPU for 1.2 s, not one pause
                os.kill(pid, signal.SIGSTOP)
                time.sleep(0.15)
                os.kill(pid, signal.SIGCONT)
                time.sleep(0.05)

        staller = threading.Thread(target=stall)
        staller.start()
        count = 400
        for i in range(count):  # about 2 s of edits: before, during and after the stalls
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
        assert refused, (
            "1.2 s of stalls must keep the measured queueing past 20 ms beyond the burst allowance"
        )
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
