"""This replica's rooms: which local connections are in which room, and fan-out to them.

Fan-out is filtered by role where an envelope is for one role only (`Envelope.for_role`: candidate
monitoring alerts go to interviewer sockets only).

The hub drives the bus: it subscribes a room's channel when the room's first local connection arrives
and unsubscribes when the last one leaves, and it consumes `Bus.events()` in one task, putting each
message into every local connection's bounded queue. Each message's frame is decoded once and the same
string goes to every socket. A connection whose queue is full is a slow consumer: it is dropped, the
room goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

from relay import metrics
from relay.bus import Disconnected, Message, PubSubBus, Reconnected
from relay.keys import RoomKeys, code_of_channel
from relay.protocol import Envelope, now_ms, redis_status_frame
from relay.session import RESYNC, Connection, DurableEvent, VolatileFrame, YjsFrame, item_of

logger = logging.getLogger("relay.hub")

_SENT_DURABLE = metrics.FRAMES_SENT.labels("durable")
_SENT_VOLATILE = metrics.FRAMES_SENT.labels("volatile")


class RoomLocks:
    """One asyncio.Lock per room code, kept exactly as long as a coroutine holds it or waits for it.

    A lock reads unlocked between its release and its next waiter's wake-up, so `not locked()` does
    not mean "unused": dropping it then would let a newcomer create a second lock for the same room and
    enter the critical section beside the woken waiter. Counting holders and waiters does mean it.
    """

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, code: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(code) or (asyncio.Lock(), 0)
        self._locks[code] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            _, users = self._locks[code]
            if users == 1:
                del self._locks[code]
            else:
                self._locks[code] = (lock, users - 1)


class Hub:
    def __init__(self, bus: PubSubBus) -> None:
        self._bus = bus
        self._rooms: defaultdict[str, set[Connection]] = defaultdict(set)
        self._subscription_locks = RoomLocks()

    @property
    def connection_count(self) -> int:
        return sum(len(connections) for connections in self._rooms.values())

    @property
    def room_codes(self) -> list[str]:
        return list(self._rooms)

    def connections(self, code: str | None = None) -> list[Connection]:
        if code is not None:
            return list(self._rooms.get(code, ()))
        return [c for connections in self._rooms.values() for c in connections]

    async def add(self, connection: Connection) -> None:
        """Register a connection; returns once its room's channel is subscribed on this replica."""
        code = connection.room_code
        async with self._subscription_locks.hold(code):
            first = not self._rooms.get(code)
            self._rooms[code].add(connection)
            metrics.CONNECTIONS.inc()
            if first:
                try:
                    await self._bus.subscribe(RoomKeys.of(code).channel)
                except BaseException:
                    self._rooms[code].discard(connection)
                    metrics.CONNECTIONS.dec()
                    if not self._rooms[code]:
                        del self._rooms[code]
                    raise
                metrics.ROOMS.inc()

    async def remove(self, connection: Connection) -> None:
        code = connection.room_code
        async with self._subscription_locks.hold(code):
            connections = self._rooms.get(code)
            if connections is None or connection not in connections:
                return
            connections.discard(connection)
            metrics.CONNECTIONS.dec()
            if not connections:
                del self._rooms[code]
                metrics.ROOMS.dec()
                await self._bus.unsubscribe(RoomKeys.of(code).channel)

    async def run(self) -> None:
        """Consume the bus until cancelled: deliver messages, tell clients about Redis outages."""
        # Restarted after a failure (app.py supervises this loop): anything may have been missed.
        for connection in self.connections():
            connection.offer(RESYNC)
        async for event in self._bus.events():
            if isinstance(event, Message):
                self._deliver(event)
            elif isinstance(event, Disconnected):
                # In a cluster, one shard's link: only the rooms it serves are told and resynced.
                self.broadcast(redis_status_frame(available=False), rooms=event.rooms)
            elif isinstance(event, Reconnected):
                self.broadcast(redis_status_frame(available=True), rooms=event.rooms)
                for connection in self._connections_of(event.rooms):
                    connection.offer(RESYNC)

    def _deliver(self, message: Message) -> None:
        code = code_of_channel(message.channel)
        connections = self._rooms.get(code)
        if not connections:
            return
        try:
            envelope = Envelope.unpack(message.data)
        except ValueError as exc:
            logger.error("dropping a malformed message on %r: %s", message.channel, exc)
            return
        item = item_of(envelope)
        age = max(0, now_ms() - envelope.ts) / 1000 if envelope.ts else None
        if age is not None:
            metrics.DELIVERY_LATENCY.observe(age)
        # Frames for one role only (monitoring alerts: interviewers) never reach another role's socket.
        for_role = envelope.for_role
        # Yjs sockets take binary items, and of the JSON events only those that close them.
        closes = (isinstance(item, DurableEvent) and item.closes_room) or (
            isinstance(item, VolatileFrame) and item.removes_user is not None
        )
        for_yjs = isinstance(item, YjsFrame)
        sent = 0
        for connection in tuple(connections):
            if connection.speaks_yjs != for_yjs and not (closes and connection.speaks_yjs):
                continue
            # The sender's own socket gets an ack for a durable event (its writer's choice), nothing for
            # a volatile one.
            if isinstance(item, VolatileFrame) and connection.id == item.origin:
                continue
            if for_role is not None and connection.role != for_role:
                continue
            connection.offer(item)
            sent += 1
        (_SENT_DURABLE if isinstance(item, DurableEvent) else _SENT_VOLATILE).inc(sent)

    def broadcast_and_confirm(self, frame: bytes) -> list[asyncio.Future[None]]:
        """Like broadcast, with one future per connection that resolves once its writer sent the frame."""
        loop = asyncio.get_running_loop()
        text = frame.decode()
        confirmations = []
        for connection in self.connections():
            sent: asyncio.Future[None] = loop.create_future()
            connection.offer(VolatileFrame(text, sent=sent))
            confirmations.append(sent)
        return confirmations

    def broadcast(self, frame: bytes, *, rooms: frozenset[str] | None = None) -> None:
        """One volatile frame to every local connection (replica-wide notices), or those of `rooms`."""
        item = VolatileFrame(frame.decode())
        for connection in self._connections_of(rooms):
            connection.offer(item)

    def _connections_of(self, rooms: frozenset[str] | None) -> list[Connection]:
        if rooms is None:
            return self.connections()
        return [c for code in rooms for c in self._rooms.get(code, ())]
