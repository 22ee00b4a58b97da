"""The benchmark baseline: the smallest Starlette relay that does the same job as relay.

No auth, no storage, no sequencing, no limits. One redis-py asyncio pub/sub connection per process,
subscribed to a room's channel while the process has sockets in that room; each client frame is
PUBLISHed once and every process forwards it verbatim to its local sockets of the room except the
sender's. relay's numbers are read as ratios to this one, measured in the same run (see bench.cli).

Run it as ``REDIS_URL=redis://127.0.0.1:6390 uvicorn bench.baseline:app`` from a checkout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import string
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

ROOM_CODE_ALPHABET = string.ascii_uppercase + string.digits
# Every published message starts with the sender's tag (fixed width) so that each process can skip the
# sender's own socket without parsing the frame.
TAG_WIDTH = 16
# Room subscriptions come and go; this channel keeps the pub/sub connection subscribed (and its reader
# blocked in a read) while the process has no room at all.
KEEPALIVE_CHANNEL = "baseline:process"


def channel_for(room_code: str) -> str:
    return f"baseline:{{{room_code}}}:events"


class Relay:
    """Room → local sockets, one pub/sub reader, ref-counted room subscriptions."""

    def __init__(self, redis_url: str) -> None:
        # A blocking pool: a burst of publishes waits for a connection instead of raising
        # "Too many connections" (redis-py 8's default pool raises past its maximum).
        # RESP2 as relay uses it: with hiredis (a dependency) the cheapest parser, and hiredis's RESP3
        # mode leaks on pub/sub messages.
        self._pool = aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=32, timeout=None, protocol=2
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._pubsub = aioredis.Redis.from_url(redis_url, socket_timeout=None, protocol=2).pubsub()
        self._rooms: dict[str, dict[str, WebSocket]] = {}
        self._process_tag = secrets.token_hex(4)
        self._tags = itertools.count()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._pubsub.subscribe(KEEPALIVE_CHANNEL)
        self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()
        await self._pool.aclose()

    def new_tag(self) -> str:
        return f"{self._process_tag}{next(self._tags):08x}"

    @contextlib.asynccontextmanager
    async def joined(self, room_code: str, tag: str, websocket: WebSocket) -> AsyncIterator[None]:
        sockets = self._rooms.get(room_code)
        if sockets is None:
            sockets = self._rooms[room_code] = {}
            await self._pubsub.subscribe(channel_for(room_code))
        sockets[tag] = websocket
        try:
            yield
        finally:
            del sockets[tag]
            if not sockets and self._rooms.get(room_code) is sockets:
                del self._rooms[room_code]
                await self._pubsub.unsubscribe(channel_for(room_code))

    async def publish(self, room_code: str, tag: str, frame: str) -> None:
        await self._redis.publish(channel_for(room_code), tag + frame)

    async def _read(self) -> None:
        async for message in self._pubsub.listen():
            if message["type"] != "message":
                continue
            channel: bytes = message["channel"]
            # channel is b"baseline:{CODE}:events"
            room_code = channel[10:-8].decode()
            sockets = self._rooms.get(room_code)
            if not sockets:
                continue
            data: bytes = message["data"]
            sender = data[:TAG_WIDTH].decode()
            frame = data[TAG_WIDTH:].decode()
            for tag, websocket in list(sockets.items()):
                if tag != sender:
                    with contextlib.suppress(Exception):
                        await websocket.send_text(frame)


async def create_room(request: Request) -> JSONResponse:
    room_code = "".join(secrets.choice(ROOM_CODE_ALPHABET) for _ in range(6))
    return JSONResponse({"status": "success", "room_code": room_code})


async def join_room(request: Request) -> JSONResponse:
    body: Any = await request.json()
    room_code = body.get("room_code", "") if isinstance(body, dict) else ""
    return JSONResponse({"status": "success", "role": "candidate", "room_code": room_code})


async def room_socket(websocket: WebSocket) -> None:
    relay: Relay = websocket.app.state.relay
    room_code: str = websocket.path_params["room_code"]
    tag = relay.new_tag()
    await websocket.accept()
    async with relay.joined(room_code, tag, websocket):
        try:
            while True:
                frame = await websocket.receive_text()
                await relay.publish(room_code, tag, frame)
        except WebSocketDisconnect:
            pass


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    relay = Relay(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    await relay.start()
    app.state.relay = relay
    try:
        yield
    finally:
        await relay.stop()


app = Starlette(
    routes=[
        Route("/api/create-room", create_room, methods=["POST"]),
        Route("/api/join-room", join_room, methods=["POST"]),
        WebSocketRoute("/ws/{room_code}", room_socket),
    ],
    lifespan=lifespan,
)
