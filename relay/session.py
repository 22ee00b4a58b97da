"""One socket's delivery state: its bounded send queue, what can be queued, and the ordering rule.

The hub puts items into a connection's queue; the socket's writer (ws.py) takes them out and asks
`decide` what to do with each. Durable events are delivered in sequence order exactly once: what was
already sent is skipped, and a gap is filled from the room's history before the event that revealed it.
`decide` is pure (no I/O), so the rule is tested in-process (tests/test_session.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Final

from relay import metrics
from relay.auth import Identity
from relay.errors import MemberRemoved, RelayError, RoomClosed, SlowConsumer
from relay.protocol import Envelope, ack_frame
from relay.yjs_doc import TextBases

logger = logging.getLogger("relay.session")


# --- what a send queue holds ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DurableEvent:
    """A numbered event of the room (live from the bus or replayed from history)."""

    seq: int
    text: str
    origin: str  # the connection that sent it: that socket gets an ack instead of its own edit
    msg_id: str | None
    closes_room: bool = False

    @classmethod
    def of(cls, envelope: Envelope) -> DurableEvent:
        return cls(
            envelope.seq, envelope.frame.decode(), envelope.origin, envelope.msg_id, envelope.closes_room
        )


@dataclass(frozen=True, slots=True)
class EarlyAck:
    """The reader's ack of its own edit, known before the event came back through Redis."""

    seq: int
    msg_id: str | None


@dataclass(frozen=True, slots=True)
class VolatileFrame:
    """A frame outside the sequence (cursors, presence, notices, errors): sent when its turn comes."""

    text: str
    origin: str = ""  # the connection that caused it does not get it back
    removes_user: str | None = None  # deliver, then close this user's sockets
    sent: asyncio.Future[None] | None = None  # resolved once the frame is on the socket


@dataclass(frozen=True, slots=True)
class YjsFrame:
    """A binary item for a Yjs socket (yjs_ws.py): `kind` is the envelope kind (protocol.YJS_KINDS:
    a numbered update, awareness, a query, a connection gone) or a reply of the socket's own reader."""

    kind: str
    seq: int
    origin: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Resync:
    """Check the history for anything missed (Redis came back, or the hub restarted)."""


RESYNC: Final = Resync()

QueueItem = DurableEvent | EarlyAck | VolatileFrame | Resync | YjsFrame


def item_of(envelope: Envelope) -> DurableEvent | VolatileFrame | YjsFrame:
    """What every socket of the room gets for one envelope from the bus."""
    if envelope.is_yjs:
        return YjsFrame(envelope.kind, envelope.seq, envelope.origin, envelope.frame)
    if envelope.seq:
        return DurableEvent.of(envelope)
    return VolatileFrame(envelope.frame.decode(), envelope.origin, envelope.removes_member)


# --- the rule ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    text: str


@dataclass(frozen=True, slots=True)
class Skip:
    why: str


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Send the events after last_seq from history first: up to `upto`, or all of them (None)."""

    upto: int | None


Decision = Send | Skip | CatchUp


def durable_text(event: DurableEvent | EarlyAck, connection_id: str) -> str:
    """What a socket is sent for a durable event: its sender gets an ack instead of its own edit."""
    if isinstance(event, EarlyAck) or event.origin == connection_id:
        return ack_frame(event.seq, event.msg_id).decode()
    return event.text


def decide(item: QueueItem, *, last_seq: int, connection_id: str, caught_up: bool = False) -> Decision:
    """What the writer does with `item` when the socket has been sent everything up to `last_seq`.

    `caught_up`: the writer just ran the CatchUp this item asked for; whatever history could not
    provide is not asked for again, so the item goes out if it is still new.
    """
    if isinstance(item, Resync):
        return Skip("resynced") if caught_up else CatchUp(upto=None)
    if isinstance(item, VolatileFrame):
        return Send(item.text)
    if isinstance(item, YjsFrame):
        return Skip("a Yjs item reached a JSON socket")  # the hub never routes one here
    if item.seq <= last_seq:
        return Skip("already sent: a duplicate from history or a late copy of an ack")
    if item.seq > last_seq + 1 and not caught_up:
        if isinstance(item, EarlyAck):
            # The early ack overtook events still on their way through pub/sub. The event's own copy
            # comes after them on the channel and is acked then, in order.
            return Skip("an early ack ahead of events in flight")
        return CatchUp(upto=item.seq - 1)
    return Send(durable_text(item, connection_id))


# --- one connection --------------------------------------------------------------------------------


class SendQueue:
    """A bounded FIFO with one consumer: a deque, while it holds anything, and one future.

    asyncio.Queue costs about 3.2 KB per instance (three deques and an Event); with one queue per
    socket that was a tenth of relay's memory per idle connection. The deque itself (0.76 KB: it
    allocates a block of 64 slots) exists only while items wait, so an idle socket holds none.
    """

    __slots__ = ("_items", "_limit", "_waiter")

    def __init__(self, limit: int) -> None:
        self._items: deque[QueueItem] | None = None
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return 0 if self._items is None else len(self._items)

    def put_nowait(self, item: QueueItem) -> bool:
        """False when full (the item is not queued)."""
        if self._items is None:
            self._items = deque()
        elif len(self._items) >= self._limit:
            return False
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        return True

    async def get(self) -> QueueItem:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = self._items
        item = items.popleft()
        if not items:
            self._items = None
        return item


@dataclass(eq=False, slots=True)
class Connection:
    """One WebSocket of one user in one room, on this replica."""

    # A Yjs socket (yjs_ws.YjsConnection) takes YjsFrames, and of the JSON events only those that close
    # it; a /ws socket never gets a YjsFrame.
    speaks_yjs: ClassVar[bool] = False

    room_code: str
    identity: Identity
    role: str
    queue_size: int
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    # The highest sequence number this socket has been sent (or acked).
    last_seq: int = 0
    closing: RelayError | None = None
    queue: SendQueue = field(init=False)
    # What this socket's client may have based its next whole-document edit on (yjs_doc.TextBases).
    bases: TextBases = field(init=False)
    # Set by ws.serve while its reader runs: kick() schedules it, and it stops the reader.
    on_kick: Callable[[], None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.queue = SendQueue(self.queue_size)
        self.bases = TextBases()

    def offer(self, item: QueueItem) -> None:
        """Queue without waiting; a full queue means the client stopped reading, so it is dropped."""
        if self.closing is not None:
            return
        if not self.queue.put_nowait(item):
            logger.warning("slow consumer dropped: connection %s in room %s", self.id, self.room_code)
            metrics.SLOW_CONSUMERS.inc()
            self.kick(SlowConsumer(f"you fell {self.queue_size} frames behind; reconnect to resume"))

    def kick(self, reason: RelayError) -> None:
        """End the socket with `reason` (the first kick's reason is the one the client gets)."""
        if self.closing is not None:
            return
        self.closing = reason
        if self.on_kick is not None:
            # Later, not now: the caller may be the reader itself, which returns after kicking.
            asyncio.get_running_loop().call_soon(self.on_kick)

    def has_sent(self, item: DurableEvent | EarlyAck | VolatileFrame) -> bool:
        """Record that `item` is on the socket; False when the socket must send nothing more."""
        if isinstance(item, VolatileFrame):
            if item.sent is not None and not item.sent.done():
                item.sent.set_result(None)
            if item.removes_user is not None and item.removes_user == self.identity.user_id:
                self.kick(MemberRemoved(f"an interviewer removed you from room {self.room_code}"))
                return False
            return True
        self.last_seq = item.seq
        if isinstance(item, DurableEvent) and item.origin != self.id:
            self.bases.saw_frame(item.text)
        if isinstance(item, DurableEvent) and item.closes_room:
            self.kick(RoomClosed(f"room {self.room_code} has been closed by its interviewer"))
        return True
