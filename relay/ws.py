"""The WebSocket endpoint `/ws/{room_code}`: handshake checks, then a reader and a writer per socket.

Handshake: the Origin is checked first (a refused origin gets HTTP 403 before any upgrade); then the
socket is accepted and every other refusal is a close with relay's code and a reason, which browsers
can read (they cannot read the HTTP status of a failed upgrade). The token comes from
`Authorization: Bearer` (non-browser clients) or the `token` query parameter (browsers, which cannot
set headers on a WebSocket); relay's log configuration strips it from every log line.

After the handshake the reader (in the endpoint's own task) parses client frames and writes through the
store; only the writer (a task of its own) sends, draining the connection's bounded queue in order.
What to send, skip or fetch from history is session.py's rule (`decide`); this module does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, TypeVar

from starlette.datastructures import QueryParams
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from relay import logs, metrics
from relay.auth import bearer_token
from relay.errors import (
    BadRequest,
    Forbidden,
    InternalError,
    MemberRemoved,
    OriginNotAllowed,
    Overloaded,
    RateLimited,
    RelayError,
    RoomClosed,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from relay.expiry import TokenWatch
from relay.keys import normalize_code
from relay.limits import TokenBucket
from relay.origins import origin_allowed
from relay.protocol import (
    PONG_FRAME,
    REASON_HISTORY_EXPIRED,
    REASON_RESUME_INVALID,
    ClientFrame,
    CursorUpdate,
    EditorUpdate,
    KeystrokeMonitoring,
    Ping,
    RefreshToken,
    WindowFocusLost,
    ack_frame,
    error_frame,
    parse_client_frame,
    room_state_frame,
    token_refreshed_frame,
)
from relay.redis_errors import unavailable_for
from relay.rooms import CANDIDATE, Resume, Snapshot
from relay.services import Services
from relay.session import (
    CatchUp,
    Connection,
    Decision,
    DurableEvent,
    EarlyAck,
    QueueItem,
    Resync,
    Send,
    VolatileFrame,
    YjsFrame,
    decide,
    durable_text,
)

logger = logging.getLogger("relay.ws")

C = TypeVar("C", bound=Connection)
T = TypeVar("T")

_RECEIVED = {
    kind: metrics.FRAMES_RECEIVED.labels(name)
    for kind, name in (
        (EditorUpdate, "editor_update"),
        (CursorUpdate, "cursor_update"),
        (Ping, "ping"),
        (RefreshToken, "refresh_token"),
        (WindowFocusLost, "window_focus_lost"),
        (KeystrokeMonitoring, "keystroke_monitoring"),
    )
}

# Monitoring frames per socket, on top of the general rate limit: the old frontend sends one
# keystroke_monitoring per key press, debounced to about 10 a second, and a focus loss on refocus.
MONITORING_RATE_PER_SECOND = 10.0
MONITORING_BURST = 20

CLOSE_TIMEOUT_SECONDS = 5.0
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes, 2 for the code


async def websocket_endpoint(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    if await refuse_origin(websocket, services):
        return
    await websocket.accept()
    try:
        last_seq = _last_seq(_query(websocket).get("last_seq"))
        connection, snapshot = await open_connection(
            websocket, services, Connection, lambda connection: _snapshot(services, connection, last_seq)
        )
    except RelayError as error:
        # Nothing was sent yet: a closed room or a removed member gets its error frame like any refusal.
        await close_socket(websocket, error, announced=False)
        return
    try:
        await _send_initial_state(websocket, connection, snapshot)
        # The snapshot holds the whole document; this frame lives as long as the socket does.
        del snapshot
        await serve(
            services,
            connection,
            lambda watch: _read(websocket, services, connection, watch),
            _write(websocket, services, connection),
        )
    except WebSocketDisconnect:
        pass
    finally:
        await close_connection(services, connection)
    if connection.closing is not None:
        # room_closed and member_removed frames already told the client why.
        announced = isinstance(connection.closing, RoomClosed | MemberRemoved)
        await close_socket(websocket, connection.closing, announced=announced)


# --- the handshake and the socket's life, shared with the Yjs endpoint (yjs_ws.py) -----------------


async def refuse_origin(websocket: WebSocket, services: Services) -> bool:
    """Answer HTTP 403 before the upgrade when the Origin is not allowed; True when refused."""
    if origin_allowed(services.settings, websocket.headers.get("origin"), websocket.headers.get("host")):
        return False
    logger.warning("websocket refused: origin %r not allowed", websocket.headers.get("origin"))
    await websocket.send_denial_response(
        JSONResponse(
            OriginNotAllowed(
                "this Origin may not open relay WebSockets (see RELAY_ALLOWED_ORIGINS)"
            ).as_dict(),
            status_code=OriginNotAllowed.http_status,
        )
    )
    return True


async def open_connection(
    websocket: WebSocket,
    services: Services,
    kind: type[C],
    prepare: Callable[[C], Awaitable[T]],
) -> tuple[C, T]:
    """Every check of the handshake, registration, then `prepare` (the endpoint's first read of the
    room, e.g. the snapshot); raises the refusal to close with, leaving nothing registered."""
    if services.is_draining:
        raise Unavailable("this replica is shutting down; reconnect to another")
    if not services.admission.admits_socket():
        retry_after = services.admission.socket_retry_after()
        raise Overloaded(f"this replica is overloaded; retry in {retry_after} s", retry_after)
    code = normalize_code(websocket.path_params.get("room_code", ""))
    identity = await services.auth.authenticate(_token(websocket))
    member = await services.rooms.member(code, identity.user_id)
    connection = kind(code, identity, member.role, services.settings.send_queue_frames)
    logs.connection_id.set(connection.id)
    logs.room_code.set(code)
    # Subscribe before reading the room so no event falls between the two; the writer drops what the
    # read already covers.
    await services.hub.add(connection)
    is_present = False
    try:
        await services.rooms.presence_add(code, identity, member.role, connection.id)
        is_present = True
        prepared = await prepare(connection)
    except BaseException:
        await services.hub.remove(connection)
        if is_present:
            # Otherwise the room would show this socket as connected until its entry expires.
            with contextlib.suppress(RelayError):
                await services.rooms.presence_remove(code, identity.user_id, connection.id)
        raise
    logger.info("connected: connection %s user %s room %s", connection.id, identity.user_id, code)
    return connection, prepared


async def close_connection(services: Services, connection: Connection) -> None:
    """Unregister a connection that open_connection registered: hub and presence.

    Never raises: the socket is going away whatever Redis answers (a shard mid-failover, a script
    error), its close frame must still be sent, and a presence entry left behind expires by itself.
    """
    try:
        await services.hub.remove(connection)
    except Exception:
        logger.warning("connection %s: unsubscribing its room failed", connection.id, exc_info=True)
    try:
        await services.rooms.presence_remove(connection.room_code, connection.identity.user_id, connection.id)
    except RelayError:
        pass  # Redis unavailable: the entry expires (RELAY_PRESENCE_TTL)
    except Exception:
        logger.warning("connection %s: removing its presence failed", connection.id, exc_info=True)


async def _snapshot(services: Services, connection: Connection, last_seq: int | None) -> Snapshot:
    snapshot = await services.yjs.snapshot(connection.room_code, last_seq)
    if snapshot.info.status != "open":
        raise RoomClosed(f"room {connection.room_code} has been closed by its interviewer")
    connection.bases.saw_text(snapshot.content)
    return snapshot


def _token(websocket: WebSocket) -> str | None:
    authorization = websocket.headers.get("authorization")
    if authorization:
        return bearer_token(authorization)
    query = _query(websocket)
    return query.get("token") or query.get("access_token")


def _query(websocket: WebSocket) -> QueryParams:
    """The query string parsed afresh: `websocket.query_params` would keep the parsed copy (token
    included) on the WebSocket for the socket's whole life (0.74 KB per idle socket, tracemalloc)."""
    return QueryParams(websocket.scope["query_string"])


def _last_seq(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 15:
        raise BadRequest("last_seq must be the non-negative integer 'seq' of the last event you received")
    return int(raw)


def _room_state(
    connection: Connection,
    snapshot: Snapshot,
    *,
    replayed: int | None = None,
    reason: str | None = None,
) -> str:
    """The socket's room_state: `replayed` events follow it, or it carries the whole document."""
    info = snapshot.info
    return room_state_frame(
        room_code=info.code,
        seq=info.seq,
        members=[m.as_dict(connected=m.user_id in info.connected) for m in info.members],
        cursors=snapshot.cursors,
        you={
            "user_id": connection.identity.user_id,
            "user_name": connection.identity.user_name,
            "role": connection.role,
            "connection_id": connection.id,
        },
        replayed=replayed,
        content=None if replayed is not None else snapshot.content,
        reason=reason,
        room_info=None if replayed is not None else snapshot.room_info(),
    ).decode()


async def _send_initial_state(websocket: WebSocket, connection: Connection, snapshot: Snapshot) -> None:
    info = snapshot.info
    missed = snapshot.missed
    if missed.is_replayable:
        await websocket.send_text(_room_state(connection, snapshot, replayed=len(missed.events)))
        connection.last_seq = info.seq - len(missed.events)
        for envelope in missed.events:
            await _send_durable(websocket, connection, DurableEvent.of(envelope))
        return
    reason = None
    if missed.resume is Resume.AHEAD:
        reason = REASON_RESUME_INVALID
        await websocket.send_text(
            error_frame(
                REASON_RESUME_INVALID,
                f"last_seq is ahead of room {info.code} (its seq is {info.seq}): your copy is not from "
                "this room's history; replace it with the content below",
            ).decode()
        )
    elif missed.resume is Resume.HISTORY_GONE:
        reason = REASON_HISTORY_EXPIRED
    await websocket.send_text(_room_state(connection, snapshot, reason=reason))
    connection.last_seq = info.seq


async def serve(
    services: Services,
    connection: Connection,
    read: Callable[[TokenWatch], Coroutine[Any, Any, None]],
    write: Coroutine[Any, Any, None],
) -> None:
    """Read in this task (the endpoint's) and write in a task of its own, until either ends or the
    connection is kicked.

    One task fewer per socket than a reader task beside the writer, and no `asyncio.wait` over them (a
    task, its coroutine and the wait's futures and callbacks are about 1 KB per idle socket). A kick,
    or the writer's end, cancels this task while it reads (it may be blocked in `websocket.receive()`);
    that cancellation is told apart from one from outside (uvicorn's shutdown) the way `asyncio.timeout`
    does it: by the task's count of cancel requests, so only the one `_Stop` made is absorbed.
    """
    stop = _Stop()
    cancelling = stop.reader.cancelling()
    watch = TokenWatch(services.tokens, connection)
    reading = read(watch)
    del read  # the closure that made the coroutine is not needed for the socket's life
    writer = asyncio.create_task(write, name=f"ws-write-{connection.id}")
    writer.add_done_callback(stop)
    connection.on_kick = stop
    failure: BaseException | None = None
    try:
        if connection.closing is None:
            await reading
        else:  # kicked before serving began (e.g. removed while its initial state was sent)
            reading.close()
    except asyncio.CancelledError:
        if not stop.has_cancelled:
            raise
        stop.has_cancelled = False
        if stop.reader.uncancel() > cancelling:
            raise  # cancelled from outside as well
    except Exception as error:
        if not stop.has_cancelled:  # an error raised on its way out of a kick is not the socket's failure
            failure = error
    finally:
        stop.is_reading = False
        connection.on_kick = None
        if stop.has_cancelled:
            # The reader swallowed the CancelledError and ended anyway: drop the request it left behind.
            stop.reader.uncancel()
        watch.cancel()
        writer.remove_done_callback(stop)
        if writer.done():
            if not writer.cancelled() and failure is None:
                failure = writer.exception()
        else:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
    if failure is not None and not isinstance(failure, WebSocketDisconnect | OSError | RuntimeError):
        logger.error("connection %s failed", connection.id, exc_info=failure)
        connection.kick(InternalError("internal error; reconnect to resume"))


class _Stop:
    """Stops the reading task of `serve`: the connection's kick and the writer's end both call it.

    Called from a loop callback (Connection.kick schedules it, a task's done-callbacks are scheduled),
    never from inside the reader itself: so the reader is suspended at an await when it is cancelled,
    and a reader that kicked its own connection has already returned (`is_reading` is False) by then.
    """

    __slots__ = ("has_cancelled", "is_reading", "reader")

    def __init__(self) -> None:
        reader = asyncio.current_task()
        assert reader is not None  # serve runs in the endpoint's task
        self.reader = reader
        self.is_reading = True
        self.has_cancelled = False

    def __call__(self, _: object = None) -> None:
        if self.is_reading and not self.has_cancelled:
            self.has_cancelled = True
            self.reader.cancel()


async def _read(websocket: WebSocket, services: Services, connection: Connection, watch: TokenWatch) -> None:
    settings = services.settings
    rooms = services.rooms
    admission = services.admission
    # The limits are made when first needed, not at connect: most sockets spend most of their life idle,
    # and memory per idle socket counts. A bucket made at the first frame is full, as one made at
    # connect would be by then.
    bucket: TokenBucket | None = None
    flood: _FloodWatch | None = None
    monitoring_bucket: TokenBucket | None = None
    cursors: _CursorsInFlight | None = None
    last_rate_notice = last_monitoring_notice = last_shed_notice = 0.0
    frame: ClientFrame | RelayError | None
    while True:
        # Drop the previous frame before waiting: an idle socket must not pin its last document.
        message = text = frame = None
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if bucket is None:
            bucket = TokenBucket(settings.rate_per_second, settings.rate_burst)
        text = message.get("text")
        if text is None:
            if not bucket.take() and (flood := flood or _FloodWatch(settings.rate_burst)).dropped():
                connection.kick(RateLimited("too many frames; slow down"))
                return
            connection.offer(_error("bad_frame", "binary frames are not supported: send JSON text frames"))
            continue
        if len(text) > settings.max_frame_bytes:
            connection.kick(TooLarge(f"frame exceeds {settings.max_frame_bytes} bytes"))
            return
        # A frame that fails validation still counts against the rate limit, so it is kept as its refusal.
        try:
            frame = parse_client_frame(text, max_document_bytes=settings.max_document_bytes)
        except RelayError as refusal:
            frame = refusal
        if not bucket.take():
            if (flood := flood or _FloodWatch(settings.rate_burst)).dropped():
                connection.kick(RateLimited("kept sending faster than the rate limit"))
                return
            # Every refused edit is answered (its sender must resend it); other refusals at most once a
            # second, so a flood cannot fill its own send queue with notices.
            msg_id = frame.client_msg_id if isinstance(frame, EditorUpdate) else None
            if isinstance(frame, EditorUpdate) or time.monotonic() - last_rate_notice > 1.0:
                last_rate_notice = time.monotonic()
                connection.offer(
                    _error(
                        "rate_limited",
                        f"more than {settings.rate_per_second:g} frames per second: dropped",
                        msg_id,
                    )
                )
            continue
        if isinstance(frame, RelayError):
            connection.offer(_error(frame.code, frame.message))
            continue
        assert frame is not None  # parsed, or refused just above
        _RECEIVED[type(frame)].inc()
        if isinstance(frame, EditorUpdate):
            if not admission.admits_edit():
                # Nothing was stored: the client resends it (with the same client_msg_id) later.
                connection.offer(_shed_notice(admission.frame_retry_after(), frame.client_msg_id))
                continue
            try:
                edited = await services.yjs.edit_text(
                    connection.room_code,
                    connection.identity,
                    frame,
                    connection.id,
                    connection.bases.frozen(),
                )
            except Unavailable as error:
                connection.offer(_error(error.code, error.message, frame.client_msg_id))
                continue
            except RelayError as error:
                connection.kick(error)
                return
            accepted = edited.accepted
            connection.bases.saw_text(frame.content)
            if accepted.was_duplicate and accepted.seq <= connection.last_seq:
                # Accepted earlier (its ack was lost with an old socket): confirm it again, out of band.
                ack = ack_frame(accepted.seq, frame.client_msg_id, duplicate=True).decode()
                connection.offer(VolatileFrame(ack))
            elif edited.kept:
                connection.offer(EarlyAck(accepted.seq, frame.client_msg_id))
            # else: merged with edits this client had not seen; the event itself (with the merged text
            # and this edit's client_msg_id) comes back through the channel, in order, instead of an ack.
        elif isinstance(frame, CursorUpdate | WindowFocusLost | KeystrokeMonitoring) and not (
            admission.admits_frame()
        ):
            # Volatile, and superseded by the next one: dropped, with a notice at most once a second.
            if time.monotonic() - last_shed_notice > 1.0:
                last_shed_notice = time.monotonic()
                connection.offer(_shed_notice(admission.frame_retry_after()))
        elif isinstance(frame, CursorUpdate):
            if cursors is None:
                cursors = _CursorsInFlight(connection)
            await cursors.make_room()
            cursors.add(rooms.queue_cursor(connection.room_code, connection.identity, frame, connection.id))
        elif isinstance(frame, Ping):
            connection.offer(VolatileFrame(PONG_FRAME.decode()))
        elif isinstance(frame, RefreshToken):
            try:
                identity = await services.auth.authenticate(frame.token)
            except Unavailable as error:
                connection.offer(_error(error.code, error.message))
                continue
            except RelayError as error:
                connection.kick(error)
                return
            if identity.user_id != connection.identity.user_id:
                connection.kick(Unauthorized("refresh_token must be a token of the same user"))
                return
            connection.identity = identity
            watch.schedule()
            refreshed = token_refreshed_frame(int(identity.expires_at))
            connection.offer(VolatileFrame(refreshed.decode()))
        elif isinstance(frame, WindowFocusLost | KeystrokeMonitoring):
            if connection.role != CANDIDATE:
                # The store checks the membership record again; this answers the common case locally.
                connection.offer(_error("forbidden", "only the room's candidate sends monitoring frames"))
                continue
            if monitoring_bucket is None:
                monitoring_bucket = TokenBucket(MONITORING_RATE_PER_SECOND, MONITORING_BURST)
            if not monitoring_bucket.take():
                if time.monotonic() - last_monitoring_notice > 1.0:
                    last_monitoring_notice = time.monotonic()
                    connection.offer(
                        _error(
                            "rate_limited",
                            f"more than {MONITORING_RATE_PER_SECOND:g} monitoring frames per second: dropped",
                        )
                    )
                continue
            try:
                await rooms.record_monitoring(connection.room_code, connection.identity, frame, connection.id)
            except RelayError as error:
                # Redis away, or no longer a candidate: say so, keep the socket. Removed / closed: end it.
                if isinstance(error, Unavailable) or error.code == Forbidden.code:
                    connection.offer(_error(error.code, error.message))
                    continue
                connection.kick(error)
                return


class _CursorsInFlight:
    """A socket's cursor_update calls queued on the store and not answered yet.

    The reader does not wait for a cursor's script: it queues it (after the socket's earlier calls,
    so order holds) and takes the next frame. Had it waited, every frame behind a cursor would wait
    in the kernel's socket buffer for the round trip, unseen by admission control (which measures the
    store queue they now wait in instead). At most MAX_IN_FLIGHT per socket: past that the reader waits
    for the oldest, so a socket sending faster than Redis answers is slowed down, not queued for.
    """

    __slots__ = ("_connection", "_futures")

    MAX_IN_FLIGHT: ClassVar[int] = 4

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._futures: deque[asyncio.Future[Any]] = deque()

    async def make_room(self) -> None:
        futures = self._futures
        while futures and futures[0].done():
            futures.popleft()
        if len(futures) >= self.MAX_IN_FLIGHT:
            oldest = futures.popleft()
            with contextlib.suppress(Exception):  # its failure is answered by _answered
                await oldest

    def add(self, future: asyncio.Future[Any]) -> None:
        future.add_done_callback(self._answered)
        self._futures.append(future)

    def _answered(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or (error := future.exception()) is None:
            return
        # Redis down or refusing (or, in a cluster, a slot that kept moving): the client's "unavailable".
        unavailable = error if isinstance(error, Unavailable) else unavailable_for(error, "queue_cursor")
        if unavailable is not None:
            self._connection.offer(_error(unavailable.code, unavailable.message))
            return
        logger.error("connection %s: a cursor_update failed", self._connection.id, exc_info=error)
        self._connection.kick(InternalError("internal error; reconnect to resume"))


class _FloodWatch:
    """Counts frames dropped by the rate limit; too many within a window means a flood, not typing.

    Made at a socket's first dropped frame, which starts its first window.
    """

    __slots__ = ("_count", "_limit", "_window_start")

    WINDOW_SECONDS: ClassVar[float] = 10.0

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._count = 0
        self._window_start = time.monotonic()

    def dropped(self) -> bool:
        """Count one dropped frame; True when the connection should be closed."""
        now = time.monotonic()
        if now - self._window_start > self.WINDOW_SECONDS:
            self._window_start, self._count = now, 0
        self._count += 1
        return self._count > self._limit


async def _write(websocket: WebSocket, services: Services, connection: Connection) -> None:
    item: QueueItem | None
    decision: Decision | None
    while True:
        # Drop the last frame sent before waiting: an idle socket must not pin it (a presence notice,
        # a document) for the rest of its life.
        item = decision = None
        item = await connection.queue.get()
        decision = decide(item, last_seq=connection.last_seq, connection_id=connection.id)
        if isinstance(decision, CatchUp):
            await _catch_up(websocket, services, connection, upto=decision.upto)
            decision = decide(item, last_seq=connection.last_seq, connection_id=connection.id, caught_up=True)
        if isinstance(decision, Send):
            assert not isinstance(item, Resync | YjsFrame)  # never sent
            await websocket.send_text(decision.text)
            if not connection.has_sent(item):
                return


async def _send_durable(websocket: WebSocket, connection: Connection, event: DurableEvent) -> None:
    await websocket.send_text(durable_text(event, connection.id))
    connection.has_sent(event)


async def _catch_up(
    websocket: WebSocket, services: Services, connection: Connection, *, upto: int | None = None
) -> None:
    """Send the durable events this socket missed (pub/sub lost them), from the room's history.

    With `upto`, only the missing events before the one that revealed the gap: later ones come from
    the queue in their own order, behind the volatile frames published before them.
    """
    snapshot: Snapshot | None = None
    try:
        missed = await services.rooms.events_after(connection.room_code, connection.last_seq)
        if not missed.is_replayable:
            snapshot = await services.rooms.snapshot(connection.room_code, None)
    except Unavailable:
        # Cannot repair the gap now; the client resumes from its last seq on another connection.
        connection.kick(Unavailable("lost events could not be fetched; reconnect with last_seq to resume"))
        return
    except RelayError as error:  # the room is gone or closed meanwhile
        connection.kick(error)
        return
    if snapshot is not None:
        await websocket.send_text(_room_state(connection, snapshot, reason=REASON_HISTORY_EXPIRED))
        connection.last_seq = snapshot.info.seq
        connection.bases.saw_text(snapshot.content)
        return
    for envelope in missed.events:
        if upto is not None and envelope.seq > upto:
            break
        await _send_durable(websocket, connection, DurableEvent.of(envelope))
        if connection.closing is not None:
            return


def _error(code: str, message: str, client_msg_id: str | None = None) -> VolatileFrame:
    metrics.REFUSALS.labels(code).inc()
    return VolatileFrame(error_frame(code, message, client_msg_id).decode())


def _shed_notice(retry_after: int, client_msg_id: str | None = None) -> VolatileFrame:
    """The answer to a frame refused by admission control (an edit: resend it after retry_after)."""
    metrics.REFUSALS.labels(Unavailable.code).inc()
    what = "editor_update not applied: resend it" if client_msg_id is not None else "frames dropped"
    message = f"this replica is overloaded; {what} in {retry_after} s"
    frame = error_frame(Unavailable.code, message, client_msg_id, retry_after=retry_after)
    return VolatileFrame(frame.decode())


async def close_socket(websocket: WebSocket, error: RelayError, *, announced: bool) -> None:
    """An error frame (unless a frame of its own already `announced` the reason, or the client cannot
    read JSON: the Yjs endpoint), then the close with the error's code and reason."""
    metrics.REFUSALS.labels(error.code).inc()
    reason = error.message.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")
    if websocket.application_state == WebSocketState.DISCONNECTED:
        return
    # A client that stopped reading may never take the close frame: do not wait for it forever.
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect, TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
            if not announced:
                retry_after = error.retry_after if isinstance(error, Overloaded | RateLimited) else None
                frame = error_frame(error.code, error.message, retry_after=retry_after)
                await websocket.send_text(frame.decode())
            await websocket.close(code=error.close_code, reason=reason)
