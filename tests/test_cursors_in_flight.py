"""A socket's reader queues cursor_update scripts without waiting for Redis (ws.py, _CursorsInFlight):
order still holds, the socket is read while its cursors wait, and a cursor Redis cannot take is answered.

Real replicas and redis-servers: the behaviour is about frames crossing processes. The servers that are
paused or stopped here are this module's own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
import redis

from relay.auth import Identity
from relay.errors import InternalError, RelayError, Unavailable
from relay.pipeline import PipelineFailed
from relay.session import Connection, VolatileFrame
from relay.ws import _CursorsInFlight
from tests.support import (
    FAST_REPLICA_ENV,
    RedisServer,
    Replica,
    connected_pair,
    replicas,
)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


def cursor(line: int) -> dict[str, object]:
    return {"type": "cursor_update", "cursor_position": {"lineNumber": line, "column": 1}}


def test_cursors_and_edits_of_one_socket_arrive_in_the_order_sent(redis_server: RedisServer) -> None:
    """Cursors are queued without waiting and edits are awaited: interleaved, they still reach the
    member on the other replica in the order the sender sent them."""
    with replicas(2, {"REDIS_URL": redis_server.url, **FAST_REPLICA_ENV}) as (first, second):
        _, a, b = connected_pair(first, second)
        sent = []
        for i in range(40):
            a.send(cursor(i + 1))
            sent.append(("cursor_update", i + 1))
            if i % 3 == 0:
                a.send({"type": "editor_update", "content": f"edit {i}", "client_msg_id": f"m{i}"})
                sent.append(("editor_update", i))
        received: list[tuple[str, int]] = []
        while len(received) < len(sent):
            frame = b.recv_until(lambda f: f["type"] in ("cursor_update", "editor_update"))
            if frame["type"] == "cursor_update":
                received.append(("cursor_update", frame["cursor_position"]["lineNumber"]))
            else:
                received.append(("editor_update", int(str(frame["content"]).split()[1])))
        assert received == sent
        a.close()
        b.close()


def test_a_socket_is_read_while_its_cursors_wait_for_redis(own_redis: RedisServer) -> None:
    """Redis holds writes (CLIENT PAUSE on this test's own server, long enough for a slow machine): the
    sender's ping behind three cursors is answered, before any of them is stored (an awaiting reader
    would answer it only after the pause); once Redis takes writes again the cursors follow, in order."""
    replica = Replica({"REDIS_URL": own_redis.url, **FAST_REPLICA_ENV}, name="cursors-paused").start()
    admin = redis.Redis.from_url(own_redis.url)
    try:
        _, a, b = connected_pair(replica)
        admin.execute_command("CLIENT", "PAUSE", "30000", "WRITE")  # type: ignore[no-untyped-call]
        for line in (1, 2, 3):
            a.send(cursor(line))
        a.send({"type": "ping"})
        a.recv_type("pong")
        assert not [f for f in b.drain(quiet=0.2) if f["type"] == "cursor_update"], (
            "a cursor was stored while Redis held writes"
        )
        admin.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
        lines = [b.recv_type("cursor_update", timeout=10)["cursor_position"]["lineNumber"] for _ in range(3)]
        assert lines == [1, 2, 3]
        a.close()
        b.close()
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
        admin.close()
        replica.stop()


def test_a_cursor_redis_cannot_take_is_answered_unavailable_and_the_socket_stays(
    own_redis: RedisServer,
) -> None:
    replica = Replica({"REDIS_URL": own_redis.url, **FAST_REPLICA_ENV}, name="cursors-down").start()
    try:
        _, a, b = connected_pair(replica)
        own_redis.stop()
        a.send(cursor(7))
        error = a.recv_until(lambda f: f["type"] == "error", timeout=15)
        assert error["code"] == "unavailable" and "retry" in error["message"]
        a.send({"type": "ping"})
        a.recv_type("pong")
        a.close()
        b.close()
    finally:
        replica.stop()


def test_a_failed_cursor_is_answered_by_what_failed() -> None:
    """The answer to a cursor whose script failed, in process (no Redis needed: the futures are failed
    by hand): Redis down or refusing, or a cluster slot that kept moving, is the client's `unavailable`
    and the socket stays; anything else is a bug, logged, and the socket is closed with 1011."""

    async def scenario() -> tuple[list[str], RelayError | None, RelayError | None]:
        identity = Identity("alice", "alice", None, is_interviewer=True, expires_at=time.time() + 60)
        connection = Connection("ABC123", identity, "interviewer", 16)
        cursors = _CursorsInFlight(connection)
        loop = asyncio.get_running_loop()
        for error in (
            Unavailable("the room's slot keeps moving; retry shortly"),
            PipelineFailed("the Redis pipeline writer failed"),
            redis.exceptions.ResponseError("READONLY You can't write against a read only replica."),
        ):
            failed: asyncio.Future[object] = loop.create_future()
            cursors.add(failed)
            failed.set_exception(error)
        await asyncio.sleep(0)
        answers = []
        while len(connection.queue):
            item = await connection.queue.get()
            assert isinstance(item, VolatileFrame)
            answers.append(json.loads(item.text)["code"])
        still_open = connection.closing
        bug: asyncio.Future[object] = loop.create_future()
        cursors.add(bug)
        bug.set_exception(KeyError("a bug"))
        await asyncio.sleep(0)
        return answers, still_open, connection.closing

    answers, still_open, closing = asyncio.run(scenario())
    assert answers == ["unavailable"] * 3
    assert still_open is None
    assert isinstance(closing, InternalError) and closing.close_code == 1011
