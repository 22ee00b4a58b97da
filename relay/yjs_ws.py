"""The Yjs endpoint `/yjs/{room_code}`: the y-websocket protocol over relay's rooms, for stock Yjs providers.

The handshake is /ws's (ws.open_connection: Origin, token in the `token` query parameter or a Bearer
header, membership and role from relay's records, connection limits, close codes). Then, one binary
message per frame:

- relay sends its own sync step 1 at once, so that a client with edits made offline sends them;
- each client sync step 1 is answered with a sync step 2: the room's document (snapshot and stream
  tail, folded) minus what the client's state vector says it has;
- each client frame carrying an update (sync step 2 or update) is validated (decodes as a Yjs update,
  under RELAY_MAX_FRAME_BYTES, within the rate limit), stored and published (yjs_store), and then
  answered with an empty sync step 2: **an update is acknowledged once relay has answered it, which it
  does only after Redis stored it**. Stock clients apply the empty step 2 as a no-op;
- updates from others arrive as sync updates, in the room's Yjs order; a gap (pub/sub lost some) is
  filled from the stream, or with the whole document when the stream no longer has them;
- awareness is published only (volatile); a client's awareness is cleared (state null) for everyone
  when its socket goes, and, when its replica dies, by the replica that sweeps its expired presence.

A refused frame closes the socket with relay's close code and a reason (no text frame: y-websocket
cannot read one); the client reconnects and its sync resends whatever relay had not stored.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import ClassVar

from starlette.websockets import WebSocket, WebSocketDisconnect

from relay import metrics, ws
from relay.errors import (
    BadFrame,
    MemberRemoved,
    Overloaded,
    RateLimited,
    RelayError,
    RoomClosed,
    TooLarge,
    Unavailable,
)
from relay.limits import TokenBucket
from relay.protocol import KIND_AWARENESS, KIND_AWARENESS_QUERY, KIND_CONNECTION_GONE, KIND_YJS_UPDATE
from relay.services import Services
from relay.session import Connection, DurableEvent, QueueItem, Resync, VolatileFrame, YjsFrame
from relay.yjs_doc import RoomDoc, is_empty_update, validate_update
from relay.yjs_protocol import (
    AwarenessMessage,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    YjsProtocolError,
    awareness_message,
    awareness_removal,
    parse_awareness,
    parse_message,
    query_awareness,
    sync_step1,
    sync_step2,
    sync_update,
)
from relay.yjs_store import LoadedDoc

logger = logging.getLogger("relay.yjs")

_RECEIVED = {
    kind: metrics.FRAMES_RECEIVED.labels(name)
    for kind, name in (
        (SyncStep1, "yjs_sync_step1"),
        (SyncStep2, "yjs_sync_step2"),
        (SyncUpdate, "yjs_update"),
        (AwarenessMessage, "yjs_awareness"),
        (QueryAwareness, "yjs_query_awareness"),
    )
}

EMPTY_STEP2 = sync_step2(b"\x00\x00")
# Yjs connection ids start with it, whole-document ones are hex: a room's presence entries tell
# yjs_append whether any whole-document client needs the room's text kept up to date.
YJS_ID_PREFIX = "y"
REPLY = "reply"  # a YjsFrame the reader queues for its own socket: sent as is


@dataclass(eq=False, slots=True)
class YjsConnection(Connection):
    """A Yjs socket: its place in the room's Yjs order and the awareness it has seen."""

    speaks_yjs: ClassVar[bool] = True
    last_yseq: int = 0
    # The document loaded during the handshake answers the client's first sync step 1, then goes.
    initial: RoomDoc | None = None
    # Awareness client ids this socket's client published, with their last clock.
    own_clients: dict[int, int] = field(default_factory=dict)
    # Other clients' awareness: client id -> (connection that published it, last clock).
    peers: dict[int, tuple[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Connection.__post_init__(self)  # not super(): slots dataclasses break its zero-argument form
        self.id = YJS_ID_PREFIX + self.id[len(YJS_ID_PREFIX) :]


async def yjs_endpoint(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    if await ws.refuse_origin(websocket, services):
        return
    await websocket.accept()
    try:
        connection, loaded = await ws.open_connection(
            websocket, services, YjsConnection, lambda connection: _load(services, connection)
        )
    except RelayError as error:
        await ws.close_socket(websocket, error, announced=True)
        return
    try:
        connection.last_yseq = loaded.seq
        connection.initial = loaded.doc
        await websocket.send_bytes(sync_step1(loaded.doc.state_vector()))
        del loaded
        # Ask the room's clients for their awareness, so this one learns who is there.
        await services.yjs.publish_volatile(
            connection.room_code, KIND_AWARENESS_QUERY, connection.id, query_awareness()
        )
        await ws.serve(
            services,
            connection,
            lambda _watch: _read(websocket, services, connection),
            _write(websocket, services, connection),
        )
    except WebSocketDisconnect:
        pass
    except RelayError as error:
        connection.kick(error)
    finally:
        await ws.close_connection(services, connection)
        if connection.own_clients:
            with contextlib.suppress(RelayError):
                await services.yjs.publish_volatile(
                    connection.room_code,
                    KIND_AWARENESS,
                    connection.id,
                    awareness_removal(connection.own_clients),
                )
    if connection.closing is not None:
        await ws.close_socket(websocket, connection.closing, announced=True)


async def _load(services: Services, connection: YjsConnection) -> LoadedDoc:
    loaded = await services.yjs.load(connection.room_code)
    if loaded.status != "open":
        raise RoomClosed(f"room {connection.room_code} has been closed by its interviewer")
    return loaded


async def _read(websocket: WebSocket, services: Services, connection: YjsConnection) -> None:
    settings = services.settings
    # Made when first needed (memory per idle socket counts); full when made, as at connect.
    updates: TokenBucket | None = None
    awareness: TokenBucket | None = None
    code = connection.room_code
    while True:
        message = data = None  # an idle socket must not pin its last frame
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            connection.kick(BadFrame("the Yjs endpoint takes binary y-websocket messages, not text"))
            return
        if len(data) > settings.max_frame_bytes:
            connection.kick(TooLarge(f"frame exceeds {settings.max_frame_bytes} bytes"))
            return
        try:
            parsed = parse_message(data)
            if isinstance(parsed, SyncStep2 | SyncUpdate):
                validate_update(parsed.update)
            elif isinstance(parsed, AwarenessMessage):
                entries = parse_awareness(parsed.update)
        except YjsProtocolError as error:
            connection.kick(BadFrame(str(error)))
            return
        _RECEIVED[type(parsed)].inc()
        if isinstance(parsed, SyncStep1):
            doc, connection.initial = connection.initial, None
            if doc is None:
                doc = (await services.yjs.load(code)).doc
            connection.offer(
                YjsFrame(REPLY, 0, connection.id, sync_step2(doc.update_since(parsed.state_vector)))
            )
            del doc
        elif isinstance(parsed, SyncStep2 | SyncUpdate):
            if not is_empty_update(parsed.update):
                if updates is None:
                    updates = TokenBucket(settings.rate_per_second, settings.rate_burst)
                if not updates.take():
                    connection.kick(
                        RateLimited("too many updates per second; reconnect (your edits are kept)")
                    )
                    return
                if not services.admission.admits_edit():
                    # y-websocket cannot be told "resend this": the client reconnects after the close and
                    # its sync resends what relay did not store.
                    retry_after = services.admission.frame_retry_after()
                    connection.kick(
                        Overloaded(f"this replica is overloaded; retry in {retry_after} s", retry_after)
                    )
                    return
                await services.yjs.append(code, connection.identity, parsed.update, connection.id)
            connection.offer(YjsFrame(REPLY, 0, connection.id, EMPTY_STEP2))
        elif isinstance(parsed, AwarenessMessage):
            if awareness is None:
                awareness = TokenBucket(settings.rate_per_second, settings.rate_burst)
            if not awareness.take() or not services.admission.admits_frame():
                continue  # volatile: a dropped cursor position is replaced by the next one
            for entry in entries:
                if entry.state == "null":
                    connection.own_clients.pop(entry.client_id, None)
                else:
                    connection.own_clients[entry.client_id] = entry.clock
            await services.yjs.publish_volatile(
                code, KIND_AWARENESS, connection.id, awareness_message(parsed.update)
            )
        elif isinstance(parsed, QueryAwareness):
            await services.yjs.publish_volatile(code, KIND_AWARENESS_QUERY, connection.id, query_awareness())


async def _write(websocket: WebSocket, services: Services, connection: YjsConnection) -> None:
    item: QueueItem | None
    while True:
        item = None  # an idle socket must not pin the last item it sent
        item = await connection.queue.get()
        if isinstance(item, YjsFrame):
            await _send_yjs(websocket, services, connection, item)
        elif isinstance(item, Resync):
            await _catch_up(websocket, services, connection, upto=None)
        elif isinstance(item, DurableEvent):
            if item.closes_room:
                connection.kick(RoomClosed(f"room {connection.room_code} has been closed by its interviewer"))
                return
        elif isinstance(item, VolatileFrame):
            if item.sent is not None and not item.sent.done():
                item.sent.set_result(None)
            if item.removes_user is not None and item.removes_user == connection.identity.user_id:
                connection.kick(MemberRemoved(f"an interviewer removed you from room {connection.room_code}"))
                return


async def _send_yjs(
    websocket: WebSocket, services: Services, connection: YjsConnection, item: YjsFrame
) -> None:
    if item.kind == REPLY:
        await websocket.send_bytes(item.data)
    elif item.kind == KIND_YJS_UPDATE:
        if item.seq <= connection.last_yseq:
            return
        if item.seq > connection.last_yseq + 1:
            await _catch_up(websocket, services, connection, upto=item.seq - 1)
            if item.seq <= connection.last_yseq:
                return
        if item.origin != connection.id:  # the sender has it already
            await websocket.send_bytes(sync_update(item.data))
        connection.last_yseq = item.seq
    elif item.origin == connection.id:
        return
    elif item.kind == KIND_AWARENESS:
        with contextlib.suppress(YjsProtocolError):  # published by relay after validation
            message = parse_message(item.data)
            if isinstance(message, AwarenessMessage):
                for entry in parse_awareness(message.update):
                    if entry.state == "null":
                        connection.peers.pop(entry.client_id, None)
                    else:
                        connection.peers[entry.client_id] = (item.origin, entry.clock)
        await websocket.send_bytes(item.data)
    elif item.kind == KIND_AWARENESS_QUERY:
        await websocket.send_bytes(item.data)
    elif item.kind == KIND_CONNECTION_GONE:
        # A connection's replica died: clear the awareness that connection had published.
        gone = {cid: clock for cid, (origin, clock) in connection.peers.items() if origin == item.origin}
        if gone:
            for cid in gone:
                del connection.peers[cid]
            await websocket.send_bytes(awareness_removal(gone))


async def _catch_up(
    websocket: WebSocket, services: Services, connection: YjsConnection, *, upto: int | None
) -> None:
    """Send the updates this socket missed, or the whole document when the stream no longer has them."""
    code = connection.room_code
    try:
        if upto is None:
            upto = await services.yjs.current_seq(code)
        missed = await services.yjs.updates_after(code, connection.last_yseq, upto)
        if missed is None:
            loaded = await services.yjs.load(code)
            await websocket.send_bytes(sync_update(loaded.doc.update_since(None)))
            connection.last_yseq = loaded.seq
            return
    except Unavailable:
        connection.kick(Unavailable("missed updates could not be fetched; reconnect to resync"))
        return
    for seq, update in missed:
        await websocket.send_bytes(sync_update(update))
        connection.last_yseq = seq
