"""The hub's per-room subscription lock, in-process against a bus whose calls the test holds open."""

from __future__ import annotations

import asyncio
import contextlib

from relay.auth import Identity
from relay.errors import Unavailable
from relay.hub import Hub
from relay.keys import RoomKeys
from relay.session import Connection

CODE = "ABCDEF"


class GatedBus:
    """Stands in for relay.bus.Bus: subscribe / unsubscribe wait at gates, and one subscribe can fail."""

    def __init__(self) -> None:
        self.subscribed: set[str] = set()
        self.subscribe_gate = asyncio.Event()
        self.unsubscribe_gate = asyncio.Event()
        self.subscribe_gate.set()
        self.unsubscribe_gate.set()
        self.fail_next_subscribe = False

    async def subscribe(self, channel: str) -> None:
        await self.subscribe_gate.wait()
        if self.fail_next_subscribe:
            self.fail_next_subscribe = False
            raise Unavailable("could not subscribe")
        self.subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self.unsubscribe_gate.wait()
        self.subscribed.discard(channel)


def _connection(user: str) -> Connection:
    return Connection(CODE, Identity(user, user, None, False, 2e9), "candidate", 8)


def test_a_room_with_local_sockets_is_always_subscribed_when_the_lock_changes_hands() -> None:
    """Last socket leaving while two others arrive: the first arrival's subscribe fails, the second
    must then subscribe itself. If the lock were dropped when it merely read unlocked (between its
    release and the waiter's wake-up), the second arrival would enter beside the first, see the room
    already populated, skip subscribing, and the room would be left unsubscribed with a socket in it."""

    async def scenario() -> tuple[list[Connection], set[str], int]:
        bus = GatedBus()
        hub = Hub(bus)  # type: ignore[arg-type]
        leaving, first, second = _connection("a"), _connection("b"), _connection("c")
        await hub.add(leaving)

        bus.unsubscribe_gate.clear()
        removal = asyncio.create_task(hub.remove(leaving))
        await asyncio.sleep(0)  # holds the room's lock, waiting in unsubscribe
        first_add = asyncio.create_task(hub.add(first))
        await asyncio.sleep(0)  # waits for the lock
        bus.subscribe_gate.clear()
        bus.fail_next_subscribe = True
        bus.unsubscribe_gate.set()
        await removal
        second_add = asyncio.create_task(hub.add(second))
        for _ in range(5):
            await asyncio.sleep(0)
        bus.subscribe_gate.set()
        with contextlib.suppress(Unavailable):
            await first_add
        await second_add
        connections = hub.connections(CODE)
        subscribed = set(bus.subscribed)
        for connection in connections:
            await hub.remove(connection)
        return connections, subscribed, len(hub._subscription_locks)

    connections, subscribed, locks_left = asyncio.run(scenario())
    assert [c.identity.user_id for c in connections] == ["c"]
    assert RoomKeys.of(CODE).channel in subscribed, "a room with a local socket has no subscription"
    assert locks_left == 0, "a lock outlived every holder and waiter"
