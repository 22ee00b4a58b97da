"""ws.serve: the reader runs in the endpoint's own task, the writer in a task of its own. A kick or the
writer's end must stop a reader blocked in a read, leave no task behind and no cancel request pending on
the endpoint's task, and a cancellation from outside must still get through (in process, no sockets:
tests/test_limits.py, tests/test_chaos.py and tests/test_handshake.py cover the same paths with real ones).
"""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from relay import ws
from relay.auth import Identity
from relay.config import Settings
from relay.errors import InternalError, RateLimited, RoomClosed
from relay.expiry import TokenClock, TokenWatch
from relay.services import Services
from relay.session import Connection

pytestmark = [pytest.mark.fast, pytest.mark.timeout(30)]

ALICE = Identity("alice", "Alice", None, is_interviewer=False, expires_at=2e9)


class _Services:
    settings = Settings()
    tokens = TokenClock(settings.token_expiry_warning, settings.token_grace)


SERVICES = cast(Services, _Services())


def _connection() -> Connection:
    return Connection("ABC234", ALICE, "candidate", 8)


async def _blocked_writer(connection: Connection) -> None:
    await connection.queue.get()
    raise AssertionError("nothing is queued in these tests")


def test_a_kick_stops_a_reader_blocked_in_a_read_and_the_writer() -> None:
    async def scenario() -> None:
        connection = _connection()
        reading = asyncio.Event()
        reader_cancelled = False

        async def read(_watch: TokenWatch) -> None:
            nonlocal reader_cancelled
            reading.set()
            try:
                await asyncio.Event().wait()  # a socket with nothing to read
            except asyncio.CancelledError:
                reader_cancelled = True
                raise

        endpoint = asyncio.create_task(ws.serve(SERVICES, connection, read, _blocked_writer(connection)))
        await reading.wait()
        connection.kick(RoomClosed("closed"))
        await asyncio.wait_for(endpoint, 5)
        assert reader_cancelled and endpoint.cancelling() == 0 and connection.on_kick is None
        assert isinstance(connection.closing, RoomClosed)
        assert {task.get_name() for task in asyncio.all_tasks()} == {asyncio.current_task().get_name()}  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_after_a_kick_the_endpoint_task_can_still_await_and_time_out() -> None:
    """The absorbed cancellation leaves nothing behind: asyncio.timeout still works after serve."""

    async def scenario() -> None:
        connection = _connection()

        async def read(_watch: TokenWatch) -> None:
            asyncio.get_running_loop().call_later(0.01, connection.kick, RoomClosed("closed"))
            await asyncio.Event().wait()

        async def endpoint() -> str:
            await ws.serve(SERVICES, connection, read, _blocked_writer(connection))
            await asyncio.sleep(0.01)  # the close handshake that follows a kick
            try:
                async with asyncio.timeout(0.01):
                    await asyncio.Event().wait()
            except TimeoutError:
                return "timed out"
            return "not reached"

        assert await asyncio.wait_for(endpoint(), 5) == "timed out"

    asyncio.run(scenario())


def test_a_reader_that_kicks_itself_returns_without_a_pending_cancel() -> None:
    async def scenario() -> None:
        connection = _connection()

        async def read(_watch: TokenWatch) -> None:
            connection.kick(RateLimited("flood"))

        endpoint = asyncio.create_task(ws.serve(SERVICES, connection, read, _blocked_writer(connection)))
        await asyncio.wait_for(endpoint, 5)
        await asyncio.sleep(0)  # the kick's scheduled stop runs after the reader returned: a no-op
        assert endpoint.cancelling() == 0 and isinstance(connection.closing, RateLimited)

    asyncio.run(scenario())


def test_the_writer_ending_stops_the_reader_and_its_failure_is_reported() -> None:
    async def scenario() -> None:
        connection = _connection()

        async def read(_watch: TokenWatch) -> None:
            await asyncio.Event().wait()

        async def failing_writer() -> None:
            await asyncio.sleep(0.01)
            raise ValueError("a bug in the writer")

        await asyncio.wait_for(ws.serve(SERVICES, connection, read, failing_writer()), 5)
        assert isinstance(connection.closing, InternalError)

    asyncio.run(scenario())


def test_a_cancellation_from_outside_gets_through_even_with_a_kick_at_the_same_time() -> None:
    async def scenario() -> None:
        connection = _connection()
        reading = asyncio.Event()
        writer_cancelled = asyncio.Event()

        async def read(_watch: TokenWatch) -> None:
            reading.set()
            await asyncio.Event().wait()

        async def writer() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                writer_cancelled.set()
                raise

        endpoint = asyncio.create_task(ws.serve(SERVICES, connection, read, writer()))
        await reading.wait()
        connection.kick(RoomClosed("closed"))
        endpoint.cancel()  # e.g. uvicorn's forced shutdown
        with pytest.raises(asyncio.CancelledError):
            await endpoint
        assert writer_cancelled.is_set()

    asyncio.run(scenario())


def test_a_connection_kicked_before_serving_does_not_read() -> None:
    async def scenario() -> None:
        connection = _connection()
        connection.kick(RoomClosed("closed"))
        started = False

        async def read(_watch: TokenWatch) -> None:
            nonlocal started
            started = True

        await asyncio.wait_for(ws.serve(SERVICES, connection, read, _blocked_writer(connection)), 5)
        assert not started

    asyncio.run(scenario())
