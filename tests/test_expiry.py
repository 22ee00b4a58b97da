"""The replica-wide token clock: each socket is warned before its token expires and kicked at expiry, a
refresh moves both, and closed sockets leave nothing behind that holds their connection (in process;
tests/test_limits.py proves the same with real sockets and tokens)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest

from relay.auth import Identity
from relay.errors import TokenExpired
from relay.expiry import TokenClock, TokenWatch
from relay.session import Connection, VolatileFrame

pytestmark = [pytest.mark.fast, pytest.mark.timeout(30)]


def _connection(expires_in: float) -> Connection:
    identity = Identity("alice", "Alice", None, is_interviewer=False, expires_at=time.time() + expires_in)
    return Connection("ABC234", identity, "candidate", 8)


async def _frames(connection: Connection) -> list[str]:
    frames = []
    while len(connection.queue):
        item = await connection.queue.get()
        assert isinstance(item, VolatileFrame)
        frames.append(json.loads(item.text)["type"])
    return frames


def test_a_socket_is_warned_then_kicked_and_a_refresh_moves_both() -> None:
    async def scenario() -> None:
        clock = TokenClock(warning_seconds=1, grace_seconds=0)
        short, refreshed = _connection(1.2), _connection(1.2)
        watches = [TokenWatch(clock, short), TokenWatch(clock, refreshed)]
        await asyncio.sleep(0.5)
        assert await _frames(short) == ["token_expiring"] and short.closing is None
        assert await _frames(refreshed) == ["token_expiring"]
        refreshed.identity = dataclasses.replace(refreshed.identity, expires_at=time.time() + 3)
        watches[1].schedule()
        await asyncio.sleep(1.0)
        assert isinstance(short.closing, TokenExpired)
        assert refreshed.closing is None and await _frames(refreshed) == []
        await asyncio.sleep(1.3)  # the refreshed token's warning is due 2 s after the refresh
        assert await _frames(refreshed) == ["token_expiring"] and refreshed.closing is None
        watches[1].cancel()

    asyncio.run(scenario())


def test_cancelled_watches_release_their_connection_and_do_not_pile_up() -> None:
    async def scenario() -> None:
        clock = TokenClock(warning_seconds=60, grace_seconds=0)
        kept = [TokenWatch(clock, _connection(3600)) for _ in range(10)]
        for _ in range(1000):
            watch = TokenWatch(clock, _connection(3600))
            watch.cancel()
            assert watch.connection is None
        for watch in kept:
            for _ in range(50):
                watch.schedule()  # refreshes leave stale entries behind, compacted too
        assert len(clock) < 200
        assert all(watch.connection is not None and watch.due is not None for watch in kept)

    asyncio.run(scenario())
