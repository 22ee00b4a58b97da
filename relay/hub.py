"""This replica's rooms: which local connections are in which room, and fan-out to them.

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
import secrets
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from relay import metrics
from relay.auth import Identity
from relay.bus import Disconnected, Message, PubSubBus, Reconnected
from relay.errors import RelayError, SlowConsumer
from relay.keys import RoomKeys, code_of_channel
from relay.protocol import Envelope, now_ms, redis_status_frame

logger = logging.getLogger("relay.hub")

_SENT_DURABLE = metrics.FRAMES_SENT.labels("durable")
_SENT_VOLATILE = metrics.FRAMES_SENT.labels("volatile")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One item of a connection's send queue.

    seq > 0 marks a durable event: the writer delivers those in sequence order exactly once, fetching
    any it missed from history. origin / msg_id let the writer turn the sender's own event into an ack.
    `text` None with seq > 0 is an ack known before the event came back through Redis.
    """

    seq: int
    text: str | None
    origin: str = ""
    msg_id: str | None = None
    closes_room: bool = False
    removes_user: str | None = None  # deliver, then close this user's sockets
    resync: bool = False  # "check history for anything missed" after Redis came back
    sent: asyncio.Future[None] | None = None  # resolved by the writer once the frame is on the socket

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Delivery:
        """What every socket of the room gets for one envelope (live from the bus or from history)."""
        return cls(
            seq=envelope.seq,
            text=envelope.frame.decode(),
            origin=envelope.origin,
            msg_id=envelope.msg_id,
            closes_room=envelope.closes_room,
            removes_user=envelope.removes_member,
        )


RESYNC = Delivery(seq=0, text=None, resync=True)


class SendQueue:
    """A bounded FIFO with one consumer: a deque and one future.

    asyncio.Queue costs about 3.2 KB per instance (three deques and an Event); with one queue per
    socket that was a tenth of relay's memory per idle connection.
    """

    __slots__ = ("_items", "_limit", "_waiter")

    def __init__(self, limit: int) -> None:
        self._items: deque[Delivery] = deque()
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Delivery) -> bool:
        """False when full (the item is not queued)."""
        if len(self._items) >= self._limit:
            return False
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        return True

    async def get(self) -> Delivery:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


@dataclass(eq=False, slots=True)
class Connection:
    """One WebSocket of one user in one room, on this replica."""

    room_code: str
    identity: Identity
    role: str
    queue_size: int
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    # The highest sequence number this socket has been sent (or acked).
    last_seq: int = 0
    closing: RelayError | None = None
    queue: SendQueue = field(init=False)
    # Resolved by kick(): a bare future, not a task waiting on an event (memory per idle socket counts).
    kicked: asyncio.Future[None] = field(init=False)

    def __post_init__(self) -> None:
        self.queue = SendQueue(self.queue_size)
        self.kicked = asyncio.get_running_loop().create_future()

    def offer(self, delivery: Delivery) -> None:
        """Queue without waiting; a full queue means the client stopped reading, so it is dropped."""
        if self.closing is not None:
            return
        if not self.queue.put_nowait(delivery):
            logger.warning("slow consumer dropped: connection %s in room %s", self.id, self.room_code)
            metrics.SLOW_CONSUMERS.inc()
            self.kick(SlowConsumer(f"you fell {self.queue_size} frames behind; reconnect to resume"))

    def kick(self, reason: RelayError) -> None:
        if self.closing is None:
            self.closing = reason
        if not self.kicked.done():
            self.kicked.set_result(None)


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
        delivery = Delivery.from_envelope(envelope)
        if envelope.ts:
            metrics.DELIVERY_LATENCY.observe(max(0, now_ms() - envelope.ts) / 1000)
        sent = 0
        for connection in tuple(connections):
            # The sender's own socket gets an ack for a durable event, nothing for a volatile one.
            if delivery.seq == 0 and connection.id == delivery.origin:
                continue
            connection.offer(delivery)
            sent += 1
        (_SENT_DURABLE if delivery.seq else _SENT_VOLATILE).inc(sent)

    def broadcast_and_confirm(self, frame: bytes) -> list[asyncio.Future[None]]:
        """Like broadcast, with one future per connection that resolves once its writer sent the frame."""
        loop = asyncio.get_running_loop()
        text = frame.decode()
        confirmations = []
        for connection in self.connections():
            sent: asyncio.Future[None] = loop.create_future()
            connection.offer(Delivery(seq=0, text=text, sent=sent))
            confirmations.append(sent)
        return confirmations

    def broadcast(self, frame: bytes, *, rooms: frozenset[str] | None = None) -> None:
        """One volatile frame to every local connection (replica-wide notices), or those of `rooms`."""
        delivery = Delivery(seq=0, text=frame.decode())
        for connection in self._connections_of(rooms):
            connection.offer(delivery)

    def _connections_of(self, rooms: frozenset[str] | None) -> list[Connection]:
        if rooms is None:
            return self.connections()
        return [c for code in rooms for c in self._rooms.get(code, ())]
